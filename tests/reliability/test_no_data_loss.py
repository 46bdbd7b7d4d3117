"""Nothing deleted that the command did not write; no trained model replaced without --overwrite.

Issue 17, items 10 and 11: ``hepflow ensemble cosmic --models sandbox/m1 sandbox/m2 --output
sandbox --overwrite`` deleted ``sandbox`` with the input models in it, and ``hepflow train
neutrino --output EXISTING_MODEL`` replaced a trained model without a word.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import hepflow
from hepflow.cli import main
from hepflow.errors import OutputError
from hepflow.posterior import write_ensemble


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def sandbox(tmp_path) -> Path:
    """Two saved flows, sandbox/m1 and sandbox/m2, and a file of the user's beside them."""
    box = tmp_path / "sandbox"
    for seed in (1, 2):
        hepflow.save_model(
            hepflow.ConditionalINN(2, 3, depth=1, width=8, seed=seed), box / f"m{seed}" / "flow", metadata={}
        )
    (box / "notes.txt").write_text("mine")
    return box


@pytest.mark.parametrize(
    ("output", "why"),
    [(".", "contains"), ("m1", "is"), ("m1/flow", "lies inside"), ("m2/ens", "lies inside")],
)
def test_ensemble_output_that_holds_or_is_an_input_is_refused(sandbox, output, why, capsys):
    before = _digest(sandbox)
    target = sandbox / output
    args = [
        "ensemble",
        "cosmic",
        "--models",
        str(sandbox / "m1"),
        str(sandbox / "m2"),
        "--output",
        str(target),
    ]
    assert main([*args, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hepflow: error: ensemble output {target} {why} the input model ")
    assert err.endswith("choose another --output")
    assert _digest(sandbox) == before


def test_ensemble_overwrite_replaces_only_an_earlier_ensemble(sandbox, tmp_path):
    models = [sandbox / "m1", sandbox / "m2"]
    ens = write_ensemble(models, tmp_path / "ens")
    with pytest.raises(OutputError, match="ens exists; pass --overwrite"):
        write_ensemble(models, ens)
    write_ensemble(models[::-1], ens, overwrite=True)  # an earlier ensemble: replaced
    assert sorted(p.name for p in ens.iterdir()) == ["ensemble.json", "member_0", "member_1"]
    (ens / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds notes\.txt, which `hepflow ensemble` did not write"):
        write_ensemble(models, ens, overwrite=True)
    other = tmp_path / "other"  # holds a copy of a model (not an input): not an ensemble directory
    shutil.copytree(sandbox / "m1", other / "m1")
    with pytest.raises(OutputError, match="holds m1, which `hepflow ensemble` did not write"):
        write_ensemble(models, other, overwrite=True)
    assert (ens / "notes.txt").read_text() == "mine"
    assert (other / "m1" / "flow" / "config.json").is_file()


def test_save_model_refuses_an_existing_model(tmp_path):
    model = hepflow.ConditionalINN(2, 3, depth=1, width=8, seed=1)
    path = hepflow.save_model(model, tmp_path / "m")
    (path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"m holds a trained model already; pass --overwrite to replace it"):
        hepflow.save_model(hepflow.ConditionalINN(2, 3, depth=1, width=8, seed=2), path)
    assert hepflow.load_model(path).state_dict().keys() == model.state_dict().keys()
    hepflow.save_model(hepflow.ConditionalINN(2, 3, depth=1, width=8, seed=2), path, overwrite=True)
    assert (path / "notes.txt").read_text() == "mine"  # only its own two files are replaced


def test_train_neutrino_refuses_an_existing_model(tiny_models, tmp_path, capsys):
    from hepflow.config import from_dict
    from hepflow.neutrino.config import NeutrinoConfig
    from hepflow.neutrino.pipeline import train
    from tests.conftest import TINY_NEUTRINO

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    before = _digest(models)
    features = tiny_models.parent / "features"
    args = ["train", "neutrino", "--data", str(features), "--output", str(models), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"hepflow: error: {models / 'flow'} holds a trained model already; pass --overwrite to replace it"
    )
    assert _digest(models) == before
    cfg = from_dict(NeutrinoConfig, {**TINY_NEUTRINO, "training": {**TINY_NEUTRINO["training"], "seed": 11}})
    train(features, models, config=cfg, progress=False, overwrite=True)
    assert _digest(models)["flow/model.safetensors"] != before["flow/model.safetensors"]


def test_train_cosmic_refuses_an_existing_model_before_reading_data(tmp_path, capsys):
    out = tmp_path / "model"
    hepflow.save_model(hepflow.ConditionalINN(2, 3, depth=1, width=8), out / "flow", metadata={})
    before = _digest(out)
    assert main(["train", "cosmic", "--data", str(tmp_path / "none.root"), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hepflow: error: {out / 'flow'} holds a trained model already; pass --overwrite to replace it"
    )
    assert _digest(out) == before


def test_unfolding_refuses_models_of_other_settings_without_retrain(tmp_path):
    import awkward as ak

    from hepflow.unfolding.study import Sample, UnfoldingConfig, train_or_load

    n = 120
    sample = Sample(
        weight=np.ones(n),
        fiducial=np.ones(n, bool),
        selected=np.ones(n, bool),
        gen={},
        reco={},
        features=ak.Array([]),
    )
    cfg = UnfoldingConfig.load(None)
    for m in range(cfg.cinn.ensemble):
        hepflow.save_model(
            hepflow.ConditionalINN(2, 3, depth=1, width=8), tmp_path / f"member_{m}", metadata={"study": {}}
        )
    before = _digest(tmp_path)
    with pytest.raises(OutputError, match="holds models of other settings: pass --retrain to replace them"):
        train_or_load(sample, cfg, tmp_path, progress=False)
    assert _digest(tmp_path) == before
