"""Model and checkpoint files: never unpickled; foreign, tampered or truncated ones refused clearly.

The library-level refusals (version, feature specification, analysis, truncated and tampered
weights) are tested in tests/flows/test_serialization.py and
tests/analysis/test_neutrino_pipeline.py; here: pickle payloads, and what ``hepflow infer``
prints for a bad model.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import hepflow
from hepflow.cli import main
from hepflow.errors import ModelError
from hepflow.flows.serialization import CONFIG_NAME, WEIGHTS_NAME
from hepflow.training import load_checkpoint


class Payload:
    """Unpickling this object creates the file ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _model(tmp_path: Path) -> Path:
    model = hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0)
    return hepflow.save_model(model, tmp_path / "model")


def _replace_weights(path: Path, data: bytes) -> None:
    """Replace the weights and update the checksum, as an attacker who controls the directory would."""
    (path / WEIGHTS_NAME).write_bytes(data)
    doc = json.loads((path / CONFIG_NAME).read_text())
    doc["sha256"] = hashlib.sha256(data).hexdigest()
    (path / CONFIG_NAME).write_text(json.dumps(doc))


def test_model_loading_never_unpickles(tmp_path):
    marker = tmp_path / "code-ran"
    path = _model(tmp_path)
    _replace_weights(path, pickle.dumps({"weights": Payload(marker)}))
    with pytest.raises(ModelError, match=r"cannot read .*model\.safetensors"):
        hepflow.load_model(path)
    # a whole pickled torch model (torch.save) in place of the weights
    buffer = tmp_path / "pickled.pt"
    torch.save({"model": Payload(marker)}, buffer)
    _replace_weights(path, buffer.read_bytes())
    with pytest.raises(ModelError, match="cannot read"):
        hepflow.load_model(path)
    assert not marker.exists()


def test_checkpoint_loading_never_unpickles(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"format": "hepflow-checkpoint", "version": 1, "epoch": Payload(marker)}, ckpt)
    with pytest.raises(
        ModelError, match=r"checkpoint .*checkpoint\.pt is truncated or not a hepflow checkpoint"
    ) as err:
        load_checkpoint(ckpt)
    assert not marker.exists()
    # one line, and no advice to load it with weights_only=False (which would run the payload)
    assert "refused, nothing was unpickled" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert "weights_only" not in str(err.value)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ModelError, match="truncated or not a hepflow checkpoint") as err:
        load_checkpoint(ckpt)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("damage", ["features", "analysis", "truncated", "tampered", "version"])
def test_infer_refuses_a_bad_model_with_one_line(damage, tiny_models, nano_v12, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    flow = models / "flow"
    if damage in ("features", "analysis"):
        model = hepflow.load_model(flow)
        meta = dict(model.metadata)
        meta["features" if damage == "features" else "analysis"] = (
            {"flat": ["met_px"], "jets": [], "targets": ["nu_px"]}
            if damage == "features"
            else "auger_sources"
        )
        hepflow.save_model(model, flow, metadata=meta, overwrite=True)
    elif damage == "truncated":
        data = (flow / WEIGHTS_NAME).read_bytes()
        (flow / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    elif damage == "tampered":
        data = bytearray((flow / WEIGHTS_NAME).read_bytes())
        data[-5] ^= 0x01
        (flow / WEIGHTS_NAME).write_bytes(bytes(data))
    else:
        doc = json.loads((flow / CONFIG_NAME).read_text())
        doc["format_version"] = 2
        (flow / CONFIG_NAME).write_text(json.dumps(doc))
    out = tmp_path / "infer"
    rc = main(["infer", "neutrino", "--model", str(models), "--input", str(nano_v12), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    expected = {
        "features": "was trained on features",
        "analysis": "is a model of analysis 'auger_sources', not 'ttbar_neutrino'",
        "truncated": "does not match its checksum in config.json: the file is truncated or modified",
        "tampered": "does not match its checksum in config.json: the file is truncated or modified",
        "version": "format_version 2",
    }[damage]
    assert expected in err
    assert str(flow) in err
    assert not out.exists()  # refused before any processing
