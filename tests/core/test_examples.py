"""The user-facing examples in processors/ run as documented."""

from __future__ import annotations

import runpy
from pathlib import Path

import awkward as ak
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "samples" / "nano_tt_v12.root"


def test_neutrino_features_example_runs_the_processor_in_a_users_runner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coffea import processor

    example = runpy.run_path(str(ROOT / "processors" / "neutrino_features.py"))
    out = example["run"]([str(SAMPLE)])["ttbar"]
    chunked = example["run"]([str(SAMPLE)], executor=processor.FuturesExecutor(workers=2), chunksize=40)
    assert ak.array_equal(chunked["ttbar"]["columns"], out["columns"])
    cutflow = out["cutflow"]
    assert cutflow["all"] == 200
    assert len(out["columns"]) == cutflow["finite inputs"] == 52  # the CMS sample's selected events
    assert {"met_px", "jet_btag", "nu_pz_true"} <= set(out["columns"].fields)
    assert example["main"]([str(SAMPLE)]) == 0
    printed = capsys.readouterr().out
    assert "52 selected events" in printed
    assert example["main"]([]) == 2  # no files: the usage


def test_processors_folder_holds_examples_not_a_package() -> None:
    assert not (ROOT / "processors" / "__init__.py").exists()
    assert not list((ROOT / "processors").glob("*/__init__.py"))
