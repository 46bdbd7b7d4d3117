"""Fixtures shared by the neutrino tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ttbar_700(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """700 generated ttbar events (seed 5, the default pileup), made once per test session for
    every module that trains a small model on them (read-only: copy it to change it)."""
    from hepflow.generate.ttbar import generate_ttbar

    path = tmp_path_factory.mktemp("ttbar_700") / "tt.root"
    generate_ttbar(path, events=700, seed=5, progress=False)
    return path
