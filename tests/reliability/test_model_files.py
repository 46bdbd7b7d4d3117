"""Model files that reach outside themselves, damaged or oversized configs, models applied to
another selection, and outputs that are not finite.

Before: ``config.json`` ``"weights": "../../outside/w.safetensors"`` was loaded and
``"/etc/passwd"`` opened before being refused; a ``config.json`` that is a list, a width of 1e9
and a changed ``theta_dim`` ended in a traceback, a 68 GB allocation and a multi-line state-dict
dump; a model with NaN weights (checksum forged) wrote 100 % NaN posteriors; a model trained
with ``max_jets 10`` was applied to events selected with 12; MET = 3e38 wrote inf/NaN in
``ff_pz``, ``quad_pz`` and ``mw_*``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import hepflow
from hepflow.cli import main
from hepflow.errors import ModelError
from hepflow.flows import serialization
from hepflow.flows.serialization import CONFIG_NAME, WEIGHTS_NAME
from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, run_processor
from tests.conftest import write_nanoaod

from .conftest import set_value


def _model(tmp_path: Path) -> Path:
    return hepflow.save_model(hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0), tmp_path / "model")


def _edit_config(path: Path, **changes: object) -> None:
    doc = json.loads((path / CONFIG_NAME).read_text())
    for key, value in changes.items():
        target, name = (doc["config"], key[len("config.") :]) if key.startswith("config.") else (doc, key)
        target[name] = value
    (path / CONFIG_NAME).write_text(json.dumps(doc))


def _forge_weights(path: Path, tensors: dict) -> None:
    """Replace the weights and update the checksum, as someone who controls the folder would."""
    save_file(tensors, str(path / WEIGHTS_NAME))
    _edit_config(path, sha256=hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest())


@pytest.mark.parametrize(
    "name", ["../../outside/w.safetensors", "/etc/passwd", "..", ".", "", "sub/w.safetensors", CONFIG_NAME, 3]
)
def test_weights_must_be_a_file_inside_the_model_folder(tmp_path, monkeypatch, name):
    path = _model(tmp_path / "a" / "b")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(path / WEIGHTS_NAME, outside / "w.safetensors")  # a valid file, matching checksum
    _edit_config(path, weights=name)

    def never(p: Path) -> str:
        raise AssertionError(f"{p} was opened")

    monkeypatch.setattr(serialization, "_sha256", never)  # refused before any weights file is read
    with pytest.raises(ModelError, match=r"'weights' must name a file inside the model folder, got ") as err:
        hepflow.load_model(path)
    assert str(path / CONFIG_NAME) in str(err.value)


def test_weights_that_link_outside_the_folder_are_refused(tmp_path):
    path = _model(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    (path / WEIGHTS_NAME).rename(outside)
    (path / WEIGHTS_NAME).symlink_to(outside)
    with pytest.raises(
        ModelError, match=r"model\.safetensors links to .*elsewhere\.safetensors, outside the model"
    ):
        hepflow.load_model(path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("list", r"config\.json is not a hepflow model config: a JSON list, not an object"),
        (
            "width",
            r"config\.json: config\.width is 1000000000, larger than any model hepflow builds \(16384\)",
        ),
        ("width_float", r"config\.json: config\.width is 1000000000\.0, larger than any model"),
        ("summary", r"config\.json: config\.summary\.kwargs\.width is 1000000000, larger"),
        ("theta_dim", r"do not match the config: [\w.]+ has shape \(2,\) in the file, \(3,\) for the config"),
        ("extra", r"do not match the config: the file has extra\.weight, which the config does not"),
        ("nan", r"model\.safetensors: .* has 1 NaN or infinite value\(s\); the model is damaged"),
        ("inf", r"model\.safetensors: .* has 1 NaN or infinite value\(s\); the model is damaged"),
    ],
)
def test_damaged_model_files_are_one_line(tmp_path, damage, message):
    import torch

    path = hepflow.save_model(
        hepflow.ConditionalINN(2, depth=1, width=8, summary=hepflow.flows.summary.MLPSummary(4, 3), seed=0),
        tmp_path / "model",
    )
    if damage == "list":
        (path / CONFIG_NAME).write_text(json.dumps([{"format": "hepflow-model"}]))
    elif damage in ("width", "width_float"):
        _edit_config(path, **{"config.width": 10**9 if damage == "width" else 1e9})
    elif damage == "summary":
        doc = json.loads((path / CONFIG_NAME).read_text())
        doc["config"]["summary"]["kwargs"]["width"] = 10**9
        (path / CONFIG_NAME).write_text(json.dumps(doc))
    elif damage == "theta_dim":
        _edit_config(path, **{"config.theta_dim": 3})
    else:
        tensors = load_file(str(path / WEIGHTS_NAME))
        if damage == "extra":
            tensors["extra.weight"] = torch.zeros(2)
        else:
            name = next(k for k in tensors if k.endswith("weights.0"))
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[0] = float("nan") if damage == "nan" else float("inf")
        _forge_weights(path, tensors)
    with pytest.raises(ModelError, match=message) as err:
        hepflow.load_model(path)
    assert "\n" not in str(err.value)


def test_nan_weighted_model_is_refused_before_processing(tiny_models, nano_v12, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    tensors = load_file(str(models / "flow" / WEIGHTS_NAME))
    tensors = {k: v * float("nan") if v.is_floating_point() else v for k, v in tensors.items()}
    _forge_weights(models / "flow", tensors)
    out = tmp_path / "infer"
    rc = main(["infer", "neutrino", "--model", str(models), "--input", str(nano_v12), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"hepflow: error: {models / 'flow' / WEIGHTS_NAME}: ")
    assert "NaN or infinite value(s); the model is damaged" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(("key", "value"), [("max_jets", "12"), ("btag_wp", "0.0494"), ("min_jets", "3")])
def test_inference_with_another_selection_is_refused(tiny_models, nano_v12, tmp_path, capsys, key, value):
    config = tmp_path / "sel.toml"
    config.write_text(f"[selection]\n{key} = {value}\n")
    out = tmp_path / "infer"
    argv = ["infer", "neutrino", "--model", str(tiny_models), "--input", str(nano_v12), "--output", str(out)]
    rc = main([*argv, "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    trained = {"max_jets": "10", "btag_wp": "0.2783", "min_jets": "4"}[key]
    assert err == (
        f"hepflow: error: {tiny_models / 'flow'} was trained on events selected with [selection] "
        f"{key} = {trained}, this config has {value}: use the model's selection, "
        "or train a model for this one"
    )
    assert not out.exists()
    # the model's own selection is accepted
    config.write_text(f"[selection]\n{key} = {trained}\n")
    assert main([*argv, "--config", str(config), "--samples", "2", "--no-progress"]) == 0


def test_outputs_that_overflow_are_dropped_and_counted(v12_branches, nano_v12, tiny_models, tmp_path):
    """MET = 3e38 GeV (finite in float32) in 5 selected events: their quadratic solution,
    regression and W masses overflow; those events are dropped in the step "finite outputs", the
    rest written."""
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor

    clean = tmp_path / "clean"
    run_processor(NeutrinoFeatureProcessor(), build_fileset([nano_v12]), clean, RunConfig(progress=False))
    selected = set(ak.to_numpy(read_parquet_dir(clean).event).tolist())
    b = dict(v12_branches)
    rows = [i for i, e in enumerate(ak.to_numpy(b["event"]).tolist()) if e in selected][::10]
    for row in rows:
        b["MET_pt"] = set_value(b["MET_pt"], row, 3e38)
    path = write_nanoaod(tmp_path / "met.root", b)
    proc = NeutrinoInferenceProcessor(tiny_models, samples=4)
    result = run_processor(proc, build_fileset([path]), tmp_path / "infer", RunConfig(progress=False))
    flow = cutflow_to_dict(result["cutflow"])
    assert list(flow)[-2:] == ["finite inputs", "finite outputs"]
    written = read_parquet_dir(tmp_path / "infer")
    assert flow["finite inputs"] == len(selected)
    assert len(written) == flow["finite outputs"] == len(selected) - len(rows)
    for name in written.fields:
        values = ak.to_numpy(ak.flatten(written[name], axis=None))
        if values.dtype.kind == "f":
            assert np.isfinite(values).all(), name
    weighted = json.loads((tmp_path / "infer" / "cutflow.json").read_text())["weighted"]["total"]
    assert weighted["finite outputs"]["sumw"] == pytest.approx(float(ak.sum(written.weight)), rel=1e-6)
