"""A small generated ttbar sample, processed once per session for the unfolding tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import TTBAR_TRAIN

SAMPLE_EVENTS = TTBAR_TRAIN[0]


@pytest.fixture(scope="session")
def unfolding_sample(tmp_path_factory: pytest.TempPathFactory, generated_ttbar) -> Path:
    """Directory with ``tt.root`` (the session's generated training sample: 700 events, seed 1)
    and ``columns/`` (the unfolding processor's output)."""
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from hepflow.processing import RunConfig, build_fileset, run_processor
    from hepflow.unfolding.processor import UnfoldingProcessor

    d = tmp_path_factory.mktemp("unfolding")
    shutil.copy(generated_ttbar(*TTBAR_TRAIN), d / "tt.root")
    run_processor(
        UnfoldingProcessor(),
        build_fileset([d / "tt.root"]),
        d / "columns",
        RunConfig(progress=False, chunksize=250),
    )
    return d
