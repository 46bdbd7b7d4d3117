"""The pretrained cosmic model shipped with hepflow: verified, selected by default, its card's
config used, and its Auger posterior the one its card records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hepflow.cli import main
from hepflow.cosmic import pretrained
from hepflow.modelcard import verify_model

pytestmark = pytest.mark.skipif(not pretrained.available(), reason="this checkout ships no cosmic model")


def test_the_shipped_model_verifies_and_records_how_it_was_made() -> None:
    card = verify_model(pretrained.pretrained_dir())
    assert card["config"]["systematics"]["enabled"] is True
    assert pretrained.pretrained_config().systematics.enabled
    assert card["training_data"]["pseudo_experiments"] >= 400_000
    assert sorted(card["files"]) == sorted(pretrained.MODEL_FILES)
    line = pretrained.card_line()
    assert "pseudo-experiments (seed 7) with the energy- and Xmax-scale nuisances" in line
    assert set(card["auger"]["per_parameter"]) >= {"gamma", "lg_rcut"}
    # its mock record (hepflow compare cosmic): the amortized targets, and the card says them
    mocks = card["mocks"]
    assert mocks["n_mocks"] >= 10
    assert mocks["summary"]["all"]["abs_mean_shift"]["median"] <= 0.2
    assert max(mocks["calibration"]["max_coverage_deviation"].values()) <= 0.03
    assert mocks["timing"]["time_ratio_median"] >= 1000
    md = (pretrained.LOCATION / "card.md").read_text()
    assert md == pretrained.render_card(card)  # the markdown card is the rendering of card.json
    assert "| all | 0.19 | 1.03 | 81 % |" in md


def test_infer_cosmic_without_a_model_uses_the_shipped_one(tmp_path: Path, capsys) -> None:
    """`hepflow infer cosmic --observation auger` works without training: the shipped model, with
    the config it was trained with (its nuisances); its posterior is the one on its card."""
    out = tmp_path / "auger"
    assert main(["infer", "cosmic", "--observation", "auger", "--output", str(out), "--samples", "1000"]) == 0
    assert capsys.readouterr().out.startswith("pretrained cosmic model ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith(str(pretrained.LOCATION))
    assert summary["systematics"]["parameters"] == ["nu_E", "nu_X"]
    card = json.loads((pretrained.LOCATION / "card.json").read_text())
    for name in ("gamma", "lg_rcut"):
        recorded = card["auger"]["per_parameter"][name]
        # 1000 draws: the mean within 0.15 of the recorded cINN's sd of the card's 4000
        assert summary["posterior"][name]["mean"] == pytest.approx(
            recorded["cinn_mean"], abs=0.15 * recorded["cinn_std"]
        )


def test_refine_the_shipped_model_for_the_auger_data(tmp_path: Path) -> None:
    """`hepflow refine cosmic --model pretrained`: the shipped model and its config (its
    nuisances), here on a tiny budget."""
    from hepflow.cosmic.refine import refine_model

    summary = refine_model(
        "pretrained",
        "auger",
        output_dir=tmp_path / "r",
        rounds=1,
        simulations=200,
        epochs=1,
        fine_tune=True,
        seeds=False,
        distill_steps=1,
        distill_samples=40,
        distill_epochs=1,
        distill_min_ess=0.0,
        progress=False,
    )
    assert summary["base_model"] == str(pretrained.LOCATION)
    # the distillation ran, with the likelihood marginalised over the nuisances
    (step,) = summary["distillation"]["steps"]
    assert step["samples"] == 40
    assert step["target_seconds"] > 0
    assert 0 < summary["distillation"]["efficiency_after"] <= 1
    meta = json.loads((tmp_path / "r" / "flow" / "config.json").read_text())["metadata"]
    assert meta["systematics"]["parameters"] == ["nu_E", "nu_X"]
    assert meta["refinement"]["min_acceptance"] == 1e-3
