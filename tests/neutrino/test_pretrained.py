"""The pretrained neutrino model: card, checksums, ``--model pretrained``, and the build script."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hepflow.cli import main
from hepflow.config import from_dict
from hepflow.errors import ConfigError, ModelError
from hepflow.generate.detector import calorimeter_description
from hepflow.neutrino import pretrained
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.pretrained import card as card_module
from hepflow.neutrino.pretrained.card import CARD_JSON, CARD_MD, MODEL_FILES, install_model, verify_model
from hepflow.outputs import read_parquet_dir
from tests.conftest import TINY_NEUTRINO

CARD = {
    "model": "tiny test model",
    "date": "2026-12-06 05:00 UTC",
    "hepflow_version": "0.1.0",
    "training_data": {"generated_events": 400, "seeds": [0], "events_used": 98},
    "metrics": {"verdicts": ["pz RMS (RMS, lower is better): a tie"], "coverage": {"0.68": {"pz": 0.7}}},
}


@pytest.fixture
def shipped(tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny model installed as this installation's pretrained model."""
    target = tmp_path / "package_data" / "model"
    install_model(tiny_models, target, card=CARD)
    monkeypatch.setattr(pretrained, "LOCATION", target)
    return target


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_card_lists_every_model_file_with_its_sha256(tiny_models: Path, shipped: Path) -> None:
    card = json.loads((shipped / CARD_JSON).read_text())
    assert sorted(card["files"]) == sorted(MODEL_FILES)
    for name, entry in card["files"].items():
        data = (tiny_models / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        assert (shipped / name).read_bytes() == data
    assert card["metrics"] == CARD["metrics"]
    assert card["training_data"] == CARD["training_data"]
    assert verify_model(shipped) == card
    md = (shipped / CARD_MD).read_text()
    assert md.startswith("# Pretrained neutrino model: tiny test model")
    assert all(e["sha256"] in md for e in card["files"].values())
    assert "- pz RMS (RMS, lower is better): a tie" in md
    # the checkpoints and histories of the training output are not shipped
    assert sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()) == sorted(
        [*MODEL_FILES, CARD_JSON, CARD_MD]
    )


def test_infer_with_the_pretrained_model(shipped: Path, nano_v12: Path, tmp_path: Path, capsys) -> None:
    """Without --model and with --model pretrained: the shipped model, named in the output."""
    base = ["infer", "neutrino", "--input", str(nano_v12), "--samples", "8", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "default")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"pretrained model {shipped}: trained on 98 selected of 400 generated")
    assert main([*base, "--model", "pretrained", "--output", str(tmp_path / "named")]) == 0
    default = read_parquet_dir(tmp_path / "default")
    named = read_parquet_dir(tmp_path / "named")
    assert len(default) == len(named) == 52  # the v12 sample's selected events
    assert default.flow_pz_median.to_list() == named.flow_pz_median.to_list()
    run = json.loads((tmp_path / "named" / "run.json").read_text())
    assert str(shipped) in json.dumps(run)  # the provenance names the shipped model's folder

    from hepflow.neutrino.model import load_models

    flow, regression = load_models("pretrained")
    assert flow.metadata["analysis"] == "ttbar_neutrino"
    assert int(regression.theta_dim) == 3


def test_export_the_pretrained_sampler(shipped: Path, tmp_path: Path) -> None:
    """The shipped flow exported for PosteriorSampler, with its training summary for the input check."""

    from hepflow.inference.coffea import PosteriorSampler
    from hepflow.inference.export import export_torchscript
    from hepflow.neutrino.model import load_models

    flow, _ = load_models("pretrained")
    path = export_torchscript(flow, tmp_path / "sampler.pt")
    sampler = PosteriorSampler(
        str(path), samples=4, latent_dim=3, theta_dim=3, seed=1, training_summary=pretrained.pretrained_dir()
    )
    assert sampler.training_summary is not None
    assert sampler.training_summary.to_dict() == flow.metadata["training_summary"]
    assert sampler.training_summary.events == 98  # the events the tiny model was trained on


def test_a_damaged_pretrained_model_is_refused(shipped: Path, nano_v12: Path, tmp_path: Path, capsys) -> None:
    argv = ["infer", "neutrino", "--input", str(nano_v12), "--output", str(tmp_path / "o")]
    weights = shipped / "flow" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    err = _one_line_error(capsys, argv)
    assert f"{weights}: sha256 " in err
    assert "differs from the model card" in err
    assert not (tmp_path / "o").exists()

    weights.unlink()
    assert f"{weights} is missing: the model card lists it" in _one_line_error(capsys, argv)


def test_a_pretrained_model_without_card_or_with_extra_files_is_refused(
    shipped: Path, nano_v12: Path, tmp_path: Path, capsys
) -> None:
    argv = ["infer", "neutrino", "--input", str(nano_v12), "--output", str(tmp_path / "o")]
    extra = shipped / "flow" / "other.safetensors"
    extra.write_bytes(b"x")
    assert f"{extra} is not listed in the model card" in _one_line_error(capsys, argv)
    extra.unlink()
    (shipped / CARD_JSON).unlink()
    err = _one_line_error(capsys, argv)
    assert f"{shipped / CARD_JSON} is missing: a pretrained model without its model card is refused" in err
    from hepflow.neutrino.model import load_models

    with pytest.raises(ModelError, match=r"card\.json is missing"):
        load_models("pretrained")


def test_no_pretrained_model_says_so(tmp_path: Path, nano_v12: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(pretrained, "LOCATION", tmp_path / "absent")
    err = _one_line_error(capsys, ["infer", "neutrino", "--input", str(nano_v12), "--output", str(tmp_path)])
    assert "no pretrained neutrino model ships with this installation of hepflow" in err
    assert "pass --model DIR" in err
    assert not pretrained.available()
    # a folder named like the keyword is a path
    assert pretrained.resolve_model("./pretrained") == Path("pretrained")


def test_a_model_too_large_to_ship_is_refused(tiny_models: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(card_module, "MAX_BYTES", 1000)
    with pytest.raises(ModelError, match=r"more than the 1000 a shipped model may \(flow/model.safetensors"):
        install_model(tiny_models, tmp_path / "t", card=CARD)
    assert not (tmp_path / "t").exists()


def test_install_replaces_only_a_pretrained_model(tiny_models: Path, tmp_path: Path) -> None:
    from hepflow.errors import OutputError

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds no pretrained model"):
        install_model(tiny_models, tmp_path / "foreign", card=CARD)
    install_model(tiny_models, tmp_path / "t", card=CARD)
    again = install_model(tiny_models, tmp_path / "t", card={**CARD, "model": "second"})
    assert verify_model(tmp_path / "t")["model"] == again["model"] == "second"


# slow (30 s): the end-to-end build that `make pretrained` runs, tested with -m slow (the default
# suite stays under 15 minutes; the card, checksum and loading tests above stay in it)
@pytest.mark.slow
@pytest.mark.generation
def test_build_script_trains_tests_installs_and_resumes(tmp_path: Path, monkeypatch, caplog) -> None:
    """The build's functions on a tiny config: three training files made by two generation jobs, a
    held-out sample with another seed, a card with the held-out report's metrics; a rerun skips
    every stage, and a lost training file is made again alone."""
    pytest.importorskip("pythia8mc")
    from hepflow.neutrino.pretrained.build import BuildPlan, build

    cfg = from_dict(
        NeutrinoConfig,
        {**TINY_NEUTRINO, "generation": {"train_seed": 31, "test_seed": 32}, "inference": {"samples": 16}},
    )
    with pytest.raises(ConfigError, match="test_seed = 32 is one of the training seeds"):
        BuildPlan(work=tmp_path, config=cfg, jobs=2, train_events=10)
    cfg = from_dict(
        NeutrinoConfig,
        {**TINY_NEUTRINO, "generation": {"train_seed": 31, "test_seed": 40}, "inference": {"samples": 16}},
    )
    target = tmp_path / "installed"
    plan = BuildPlan(
        work=tmp_path / "work", config=cfg, jobs=2, files=3, train_events=401, test_events=150, target=target
    )
    assert [(p.name, n, s) for p, n, s in plan.train_files()] == [
        ("train_0.root", 134, 31),
        ("train_1.root", 134, 32),
        ("train_2.root", 133, 33),
    ]
    card = build(plan)

    report = json.loads((tmp_path / "work" / "report_test" / "report.json").read_text())
    assert card["training_data"]["seeds"] == [31, 32, 33]
    assert card["training_data"]["generated_events"] == 401
    assert card["held_out"] == {"generated_events": 150, "seed": 40, "events_with_truth": report["events"]}
    assert card["detector"]["pileup_mean"] > 0
    # the card records the calorimeters it was trained with, and the line says nothing more
    assert card["detector"]["calorimeters"] == calorimeter_description()
    assert pretrained.detector_note(card) == ""
    for method in ("quad", "flow_median", "ff"):
        assert (
            card["metrics"]["resolution"][method]["pz"]["rms"]
            == report["resolution"]["all"][method]["pz"]["rms"]
        )
    assert card["metrics"]["coverage"] == report["calibration"]["coverage"]
    assert any(line.startswith("pz CRPS (lower is better): ") for line in card["metrics"]["verdicts"])
    assert card["config"]["flow"]["depth"] == 2
    assert sorted(card["files"]) == sorted(MODEL_FILES)
    assert verify_model(target) == card
    stages = json.loads((tmp_path / "work" / "stages.json").read_text())
    assert set(stages) == {
        "generate train_0.root",
        "generate train_1.root",
        "generate train_2.root",
        "generate test.root",
        "process train",
        "train",
        "infer test",
        "report test",
        "install",
    }

    # resumable: a rerun with the same settings runs nothing (training would fail here)
    from hepflow.neutrino import pipeline

    monkeypatch.setattr(pipeline, "train", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(pipeline, "infer", lambda *a, **k: pytest.fail("inferred again"))
    caplog.set_level("INFO", logger="hepflow.neutrino.pretrained.build")
    caplog.clear()
    assert build(plan) == card
    assert caplog.text.count("done, skipped") == len(stages)

    # a lost training file (an interrupted generation) is made again alone, identical (same seed)
    caplog.clear()
    lost = tmp_path / "work" / "train_2.root"
    before = lost.read_bytes()
    lost.unlink()
    assert build(plan) == card
    assert "generating train_2.root in 1 processes" in caplog.text
    assert "generated train_2.root" in caplog.text
    assert caplog.text.count("done, skipped") == len(stages)
    assert len(lost.read_bytes()) == len(before)


# ---------------------------------------------------------------------------- the shipped model
def test_the_shipped_model_is_complete_and_its_card_holds_the_held_out_metrics() -> None:
    """The model committed as package data: every file matches its card; the card records
    training data of at least 3e5 events on seeds other than the held-out one, and the held-out
    metrics the build measured (docs/training.md, README "The pretrained neutrino model")."""
    assert pretrained.available()
    card = verify_model(pretrained.pretrained_dir())
    data, held_out = card["training_data"], card["held_out"]
    assert data["generated_events"] >= 300_000
    assert held_out["seed"] not in data["seeds"]
    assert f"(seeds {data['seeds'][0]}-{data['seeds'][-1]})" in pretrained.card_line()  # consecutive
    # the shipped model was trained with this hepflow's detector, so its line has no note
    assert card["detector"]["calorimeters"] == calorimeter_description()
    assert "note:" not in pretrained.card_line()
    assert held_out["events_with_truth"] > 1000
    metrics = card["metrics"]
    assert any(line.startswith("pz CRPS (lower is better): ") for line in metrics["verdicts"])
    for level in ("0.68", "0.95"):  # calibrated on the held-out sample within 0.03
        for comp in ("px", "py", "pz"):
            assert abs(metrics["coverage"][level][comp] - float(level)) < 0.03, (level, comp)
    # the flow's pz median beats the quadratic solution's RMS on the held-out sample
    res = metrics["resolution"]
    assert res["flow_median"]["pz"]["rms"] < res["quad"]["pz"]["rms"]
    assert sum(e["bytes"] for e in card["files"].values()) <= card_module.MAX_BYTES


def test_the_shipped_model_gives_a_posterior_for_the_cms_sample(
    nano_v12: Path, tmp_path: Path, capsys
) -> None:
    """`hepflow infer neutrino --input <CMS NanoAODv12>` with no model: the shipped one, named
    with its card; finite posterior columns for every selected event, physical |pz|."""
    argv = ["infer", "neutrino", "--input", str(nano_v12), "--samples", "64", "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "nu")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"pretrained model {pretrained.LOCATION}: trained on ")
    table = read_parquet_dir(tmp_path / "nu")
    assert len(table) == 52
    pz = np.asarray(table.flow_pz_median)
    assert np.all(np.isfinite(pz))
    assert np.all(np.abs(pz) < 6500.0)


def test_a_card_of_another_detector_version_gets_a_note_naming_both() -> None:
    card = {"detector": {"calorimeters": "hadrons within |eta| < 3: 150 %/sqrt(E) (+) 5 %"}}
    note = pretrained.detector_note(card)
    assert note.startswith("; note: trained on another version of the fast detector (hadrons")
    assert f"this hepflow: {calorimeter_description()}" in note
    assert "--model DIR" in note
    assert "does not record" in pretrained.detector_note({})
