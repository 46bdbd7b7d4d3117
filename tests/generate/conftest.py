"""A small generated sample shared by the generation tests (one Pythia run per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE_EVENTS = 400


@pytest.fixture(scope="session")
def ttbar_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from hepflow.generate.ttbar import generate_ttbar

    path = tmp_path_factory.mktemp("generate") / "ttbar.root"
    stats = generate_ttbar(path, events=SAMPLE_EVENTS, seed=2024, batch_size=150, progress=False)
    assert stats.events == SAMPLE_EVENTS
    return path


@pytest.fixture(scope="session")
def ttbar_arrays(ttbar_file: Path):
    import uproot

    with uproot.open(ttbar_file) as f:
        return f["Events"].arrays()
