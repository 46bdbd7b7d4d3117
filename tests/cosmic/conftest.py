"""Shared fixtures of the cosmic-ray tests: the Auger observation and forward models (built once)."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import ForwardModel, Observation

#: The first minimum quoted for the Auger combined fit (EPOS-LHC), used as a realistic truth.
COMBINED_FIT = np.array([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0])


@pytest.fixture(scope="session")
def auger() -> Observation:
    return Observation.from_auger()


@pytest.fixture(scope="session")
def model(auger: Observation) -> ForwardModel:
    return ForwardModel(auger)
