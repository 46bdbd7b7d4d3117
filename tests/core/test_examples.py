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


@pytest.mark.filterwarnings(
    "ignore:Passing a dict to preprocess:DeprecationWarning",
    "ignore::UserWarning:coffea.*",
)
def test_neutrino_dask_example_equals_the_runner(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip(
        "dask_awkward", reason="coffea's dask mode needs dask-awkward (the [distributed] extra)"
    )
    example = runpy.run_path(str(ROOT / "processors" / "neutrino_dask.py"))
    eager = runpy.run_path(str(ROOT / "processors" / "neutrino_features.py"))["run"]([str(SAMPLE)])
    out = example["run"]([str(SAMPLE)], step_size=50, output=str(tmp_path / "columns"))["ttbar"]
    assert out["columns"].type == eager["ttbar"]["columns"].type
    assert ak.to_list(out["columns"]) == ak.to_list(eager["ttbar"]["columns"])
    assert out["cutflow"] == eager["ttbar"]["cutflow"]
    written = ak.from_parquet(sorted((tmp_path / "columns").glob("*.parquet")))
    assert ak.to_list(written) == ak.to_list(out["columns"])
    assert len(list((tmp_path / "columns").glob("*.parquet"))) == 4  # 200 events in steps of 50
    assert example["main"]([str(SAMPLE)]) == 0
    assert "52 selected events" in capsys.readouterr().out
    assert example["main"]([]) == 2


def test_processors_folder_holds_examples_not_a_package() -> None:
    assert not (ROOT / "processors" / "__init__.py").exists()
    assert not list((ROOT / "processors").glob("*/__init__.py"))
