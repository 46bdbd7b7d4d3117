"""Provenance of processing outputs: stale chunks are never reused, rows never duplicated.

Issue 17, items 1, 2 and 12: a rerun into a directory that holds the chunks of another run
(another selection, model, sample count, chunking, dataset or input file) skipped every chunk and
printed the old result; readers globbed every parquet file, so reruns through another path or
chunk size doubled or tripled the rows. Each test reproduces the case and checks the refusal or
the exact rows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import awkward as ak
import pytest

from hepflow.cli import main
from hepflow.config import from_dict
from hepflow.errors import InputError, OutputError
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.data import load_training_data
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, merge_chunks, run_processor
from tests.conftest import TINY_NEUTRINO

SELECTED = 52  # events of nano_tt_v12.root passing the default selection


def _process(inputs, out, *, selection=None, dataset="ttbar", **run) -> dict:
    cfg = RunConfig(progress=False, **run)
    return run_processor(
        NeutrinoFeatureProcessor(selection), build_fileset(inputs, dataset=dataset), out, cfg
    )


def _run_rows(out: Path) -> int:
    return json.loads((out / "run.json").read_text())["rows"]


def test_rerun_with_another_selection_is_refused(nano_v12, tmp_path):
    out = tmp_path / "features"
    _process([nano_v12], out)
    strict = dataclasses.replace(NeutrinoSelection(), min_jets=6)
    with pytest.raises(
        OutputError, match=r"other settings \(producer\.settings\.selection\.min_jets: 4, this run 6\)"
    ):
        _process([nano_v12], out, selection=strict)
    fresh = cutflow_to_dict(_process([nano_v12], tmp_path / "fresh", selection=strict)["cutflow"])
    replaced = cutflow_to_dict(_process([nano_v12], out, selection=strict, overwrite=True)["cutflow"])
    assert replaced == fresh
    assert fresh["finite inputs"] < SELECTED
    assert len(read_parquet_dir(out)) == _run_rows(out) == fresh["finite inputs"]


@pytest.fixture(scope="module")
def other_model(tiny_models, tmp_path_factory) -> Path:
    """A copy of the tiny models whose flow has other weights (another checksum)."""
    import torch

    import hepflow

    copy = tmp_path_factory.mktemp("model_b") / "models"
    shutil.copytree(tiny_models, copy)
    flow = hepflow.load_model(copy / "flow")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.01)
    hepflow.save_model(flow, copy / "flow", metadata=flow.metadata, overwrite=True)
    return copy


def test_inference_with_another_model_or_sample_count_is_refused(
    tiny_models, other_model, nano_v12, tmp_path
):
    from hepflow.neutrino.pipeline import infer

    cfg = from_dict(NeutrinoConfig, TINY_NEUTRINO)
    out = tmp_path / "X"
    assert infer(tiny_models, [nano_v12], out, samples=8, config=cfg).rows == SELECTED
    with pytest.raises(
        OutputError, match=r"X holds chunks made with other settings \(producer\.model\.path: .*models"
    ):
        infer(other_model, [nano_v12], out, samples=8, config=cfg)
    with pytest.raises(OutputError, match=r"producer\.samples: 8, this run 64"):
        infer(tiny_models, [nano_v12], out, samples=64, config=cfg)
    infer(tiny_models, [nano_v12], out, samples=8, config=cfg)  # identical: the chunks are reused
    run = infer(
        other_model,
        [nano_v12],
        out,
        samples=64,
        config=cfg,
        run_config=RunConfig(progress=False, overwrite=True),
    )
    producer = json.loads((out / "run.json").read_text())["provenance"]["producer"]
    assert producer["samples"] == 64
    assert producer["model"]["path"] == str(other_model.resolve())
    assert run.rows == len(read_parquet_dir(out)) == SELECTED


def test_inference_into_a_features_directory_is_refused(tiny_models, nano_v12, tmp_path, capsys):
    features = tmp_path / "features"
    _process([nano_v12], features)
    before = {p.name: p.read_bytes() for p in features.iterdir()}
    args = ["infer", "neutrino", "--model", str(tiny_models), "--input", str(nano_v12), "--samples", "8"]
    assert main([*args, "--output", str(features), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"hepflow: error: {features} holds chunks made with other settings (producer.class: "
        "hepflow.neutrino.processor.NeutrinoFeatureProcessor, this run "
        "hepflow.neutrino.inference_processor.NeutrinoInferenceProcessor); pass --overwrite"
    )
    assert "pass --overwrite to replace them or choose another --output" in err
    assert "\n" not in err
    assert {p.name: p.read_bytes() for p in features.iterdir()} == before


def test_process_into_a_directory_of_another_dataset_or_fileset_is_refused(nano_v12, tmp_path):
    out = tmp_path / "features"
    _process([nano_v12], out, dataset="ttbar")
    with pytest.raises(
        OutputError,
        match=r"holds chunks of .*nano_tt_v12\.root \(dataset ttbar\), which this run does not read",
    ):
        _process([nano_v12], out, dataset="wjets")
    other = tmp_path / "other.root"
    other.write_bytes(nano_v12.read_bytes())
    with pytest.raises(OutputError, match="which this run does not read"):
        _process([other], out)
    with pytest.raises(OutputError, match=r"another fileset \(this run reads .*other\.root"):
        _process([nano_v12, other], out)
    assert len(read_parquet_dir(out)) == _run_rows(out) == SELECTED  # untouched


@pytest.mark.parametrize("how", ["absolute", "three times", "symlink"])
def test_reruns_through_other_paths_do_not_duplicate_rows(how, nano_v12, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("nano.root").write_bytes(nano_v12.read_bytes())
    Path("link.root").symlink_to(tmp_path / "nano.root")
    out = Path("features")
    _process(["nano.root"], out, chunksize=120)
    rerun = {
        "absolute": [tmp_path / "nano.root"],
        "three times": ["nano.root", tmp_path / "nano.root", "./nano.root"],
        "symlink": ["link.root"],
    }[how]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    _process(rerun, out, chunksize=120)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == stamps  # reused
    assert _run_rows(out) == len(read_parquet_dir(out)) == SELECTED
    assert merge_chunks(out, tmp_path / "all.parquet") == SELECTED
    assert load_training_data(out).n_read == SELECTED


def test_the_same_file_in_two_datasets_is_refused(nano_v12, tmp_path, monkeypatch):
    monkeypatch.chdir(nano_v12.parent)
    fileset = {"a": {"files": {nano_v12.name: "Events"}}, "b": {"files": {str(nano_v12): "Events"}}}
    with pytest.raises(
        InputError, match=rf"^{nano_v12} is listed in datasets a and b: its events would be counted twice$"
    ):
        run_processor(NeutrinoFeatureProcessor(), fileset, tmp_path / "out", RunConfig(progress=False))
    assert not (tmp_path / "out").exists()


def test_another_chunksize_is_refused_and_overwrite_replaces_only_recorded_chunks(nano_v12, tmp_path):
    out = tmp_path / "features"
    _process([nano_v12], out, chunksize=120)
    (out / "notes.txt").write_text("mine")
    old = sorted(p.name for p in out.glob("*__*"))
    with pytest.raises(OutputError, match=r"chunking\.chunksize: 120, this run 50"):
        _process([nano_v12], out, chunksize=50)
    _process([nano_v12], out, chunksize=50, overwrite=True)
    assert not [name for name in old if (out / name).exists()]  # 0-120, 120-200: gone
    assert len(list(out.glob("*.parquet"))) == 4
    assert (out / "notes.txt").read_text() == "mine"
    assert (
        _run_rows(out) == len(read_parquet_dir(out)) == merge_chunks(out, tmp_path / "m.parquet") == SELECTED
    )


def test_readers_refuse_records_that_disagree_with_the_files(nano_v12, tmp_path):
    from hepflow.cosmic.data import load_training_data as cosmic_training_data
    from hepflow.cosmic.observation import Binning

    out = tmp_path / "features"
    _process([nano_v12], out, chunksize=120)
    chunk = sorted(out.glob("*.parquet"))[0]
    stray = out / "stray.parquet"
    shutil.copy(chunk, stray)  # e.g. the rows of another run copied in
    readers = [
        lambda: read_parquet_dir(out),
        lambda: merge_chunks(out, tmp_path / "m.parquet"),
        lambda: load_training_data(out),
        lambda: cosmic_training_data(out, binning=Binning.auger()),
    ]
    for read in readers:
        with pytest.raises(InputError, match=r"holds stray\.parquet, which its run\.json does not list"):
            read()
    stray.unlink()
    rows = ak.from_parquet(chunk)
    chunk.unlink()
    for read in readers:
        with pytest.raises(InputError, match=f"lists {chunk.name}, which is missing"):
            read()
    ak.to_parquet(rows[:3], chunk)  # a chunk file replaced by another with fewer rows
    with pytest.raises(InputError, match=r"holds 3 rows, its run records"):
        read_parquet_dir(out)


def test_a_rerun_that_asks_for_another_format_is_refused(nano_v12, tmp_path):
    # before: the rerun skipped every chunk, and the ROOT files it was asked for never appeared
    out = tmp_path / "features"
    _process([nano_v12], out, chunksize=120)
    with pytest.raises(OutputError, match=r"was written as .*\.parquet, this run also asks for .*\.root"):
        _process([nano_v12], out, chunksize=120, formats=("parquet", "root"))
    assert not list(out.glob("*.root"))
    _process([nano_v12], out, chunksize=120, formats=("parquet", "root"), overwrite=True)
    assert len(list(out.glob("*.root"))) == len(list(out.glob("*.parquet"))) == 2
    _process([nano_v12], out, chunksize=120)  # a subset of what exists: skipped
