"""Fixtures shared by the neutrino tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TTBAR_TRAIN


@pytest.fixture(scope="session")
def ttbar_700(generated_ttbar) -> Path:
    """700 generated ttbar events (seed 1, the default pileup), made once per test session for
    every module that trains a small model on them, the demo and the notebook (read-only: copy it
    to change it)."""
    return generated_ttbar(*TTBAR_TRAIN)
