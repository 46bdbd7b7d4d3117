"""A small generated ttbar sample, processed once per session for the unfolding tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLE_EVENTS = 600


@pytest.fixture(scope="session")
def unfolding_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory with ``tt.root`` (generated) and ``columns/`` (the unfolding processor's output)."""
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from hepflow.generate.ttbar import generate_ttbar
    from hepflow.processing import RunConfig, build_fileset, run_processor
    from hepflow.unfolding.processor import UnfoldingProcessor

    d = tmp_path_factory.mktemp("unfolding")
    generate_ttbar(d / "tt.root", events=SAMPLE_EVENTS, seed=31, progress=False)
    run_processor(
        UnfoldingProcessor(),
        build_fileset([d / "tt.root"]),
        d / "columns",
        RunConfig(progress=False, chunksize=250),
    )
    return d
