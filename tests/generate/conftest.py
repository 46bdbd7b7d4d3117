"""A small generated sample shared by the generation tests (the session's generated held-out sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hepflow.generate import detector
from tests.conftest import TTBAR_HELDOUT

SAMPLE_EVENTS = TTBAR_HELDOUT[0]


@pytest.fixture(scope="session")
def ttbar_file(generated_ttbar) -> Path:
    """The session's generated held-out sample (350 events, seed 2), shared with the neutrino
    tests, the demo and the notebook."""
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    return generated_ttbar(*TTBAR_HELDOUT)


@pytest.fixture(scope="session")
def ttbar_arrays(ttbar_file: Path):
    import uproot

    with uproot.open(ttbar_file) as f:
        return f["Events"].arrays()


@pytest.fixture
def perfect_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full efficiency and no smearing."""

    def one(pt: np.ndarray, eta: np.ndarray, kind: str) -> np.ndarray:
        return np.ones_like(pt)

    def zero(value: np.ndarray, eta: np.ndarray, kind: str | None = None) -> np.ndarray:
        return np.zeros_like(value)

    def certain(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        return np.ones_like(pt)

    monkeypatch.setattr(detector, "tracking_efficiency", one)
    monkeypatch.setattr(detector, "electron_efficiency", certain)
    monkeypatch.setattr(detector, "muon_efficiency", certain)
    monkeypatch.setattr(detector, "track_resolution", zero)
    monkeypatch.setattr(detector, "ecal_resolution", zero)
    monkeypatch.setattr(detector, "hcal_resolution", zero)
    monkeypatch.setattr(detector, "jet_extra_resolution", zero)
    monkeypatch.setattr(detector, "jet_residual_scale", lambda pt, eta: np.ones_like(pt))
