"""`hepflow infer neutrino` compares its input with the model's training data: silent on a
held-out generated sample, the verdict with the MET features on one whose MET is scaled by 1.6."""

from __future__ import annotations

import json
import shutil

import pytest

from hepflow.cli import main
from hepflow.config import from_dict
from hepflow.flows.serialization import CONFIG_NAME
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.pipeline import process, train
from hepflow.neutrino.shift import NO_SUMMARY
from hepflow.posterior.shift import read_summary
from tests.conftest import TINY_NEUTRINO, read_nanoaod, write_nanoaod

pytest.importorskip("pythia8mc")
pytestmark = pytest.mark.generation


@pytest.fixture(scope="module")
def samples(tmp_path_factory, ttbar_700):
    """A model trained on 700 generated events, a held-out sample of 700 more (another seed) and
    that sample with MET_pt scaled by 1.6 (the CMS/fast-detector resolution ratio of issue 21)."""
    from hepflow.generate.ttbar import generate_ttbar

    d = tmp_path_factory.mktemp("shift")
    shutil.copy(ttbar_700, d / "train.root")  # the session's 700 events of seed 1
    generate_ttbar(d / "held.root", events=700, seed=6, progress=False)
    branches = read_nanoaod(d / "held.root")
    branches["MET_pt"] = branches["MET_pt"] * 1.6
    write_nanoaod(d / "met16.root", branches)
    process([d / "train.root"], d / "features")
    train(d / "features", d / "models", config=from_dict(NeutrinoConfig, TINY_NEUTRINO), progress=False)
    return d


def _infer(samples, name, out, *extra, model=None):
    model = samples / "models" if model is None else model
    options = ["--output", str(out), "--samples", "8", "--no-progress", *extra]
    return main(
        ["infer", "neutrino", "--model", str(model), "--input", str(samples / f"{name}.root"), *options]
    )


def _recorded(out):
    return json.loads((out / "run.json").read_text())["domain_shift"]


def test_training_stores_a_small_summary(samples):
    summary = read_summary(samples / "models" / "flow")
    assert summary is not None
    assert {"met_px", "met_py", "njet", "jet_px[0]", "jet_btag[3]"} <= set(summary.features)
    assert summary.features["met_px"]["n"] == summary.events
    size = len(json.dumps(summary.to_dict()))
    assert size < 12000, size  # a few KB next to the weights


def test_held_out_sample_looks_like_the_training_data(samples, tmp_path, capsys):
    assert _infer(samples, "held", tmp_path / "held") == 0
    out = capsys.readouterr().out
    assert "input looks like the training data (" in out
    assert out.count("training data") == 1  # the verdict, once
    record = _recorded(tmp_path / "held")
    assert record["shifted"] is False
    assert record["verdict"].startswith("input looks like the training data")


def test_met_scaled_by_1_6_is_flagged(samples, tmp_path, capsys):
    assert _infer(samples, "met16", tmp_path / "met16") == 0
    out = capsys.readouterr().out
    assert "input differs from the training data (" in out
    record = _recorded(tmp_path / "met16")
    flagged = [f["name"] for f in record["features"] if f["rejected"]]
    assert {"met_px", "met_py"} & set(flagged), flagged
    assert set(flagged) <= {"met_px", "met_py"}  # the rest of the event is alike
    assert "met_p" in out.splitlines()[2]  # the most different feature, with its numbers
    assert "docs/domain_shift.md" in out


def test_on_shift_error_exits_2_with_one_line(samples, tmp_path, capsys):
    assert _infer(samples, "met16", tmp_path / "err", "--on-shift", "error") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hepflow: error: input differs from the training data (")
    assert "\n" not in err
    assert "met_p" in err
    assert _recorded(tmp_path / "err")["shifted"] is True  # the outputs and the verdict are kept


def test_a_model_without_a_summary_says_so(samples, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(samples / "models", old)
    cfg = old / "flow" / CONFIG_NAME
    doc = json.loads(cfg.read_text())
    del doc["metadata"]["training_summary"]
    cfg.write_text(json.dumps(doc))
    assert _infer(samples, "met16", tmp_path / "out", model=old) == 0
    out = capsys.readouterr().out
    assert out.count(NO_SUMMARY) == 1
    assert _recorded(tmp_path / "out") == {"verdict": NO_SUMMARY}
