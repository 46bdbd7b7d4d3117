"""The domain-shift check: training summaries, the per-feature test, its false-alarm rate, and
the summaries that models and the coffea sampler carry."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import hepflow
from hepflow.errors import InputError, ModelError
from hepflow.flows.serialization import CONFIG_NAME
from hepflow.posterior.shift import (
    DomainShiftWarning,
    TrainingSummary,
    compare,
    context_columns,
    model_summary,
    read_summary,
    summarize,
    tally,
)


def _sample(n: int, rng: np.random.Generator, *, met_scale: float = 1.0, jet_shift: float = 0.0) -> dict:
    """Synthetic features like the neutrino context: a MET component, a skewed energy, a
    multiplicity, a 0/1 tag, and a jet slot that 30 % of the events fill (NaN: padding)."""
    return {
        "met_px": met_scale * rng.normal(0.0, 25.0, n),
        "lep_e": rng.exponential(30.0, n) + 20.0,
        "njet": rng.poisson(5, n).astype(float),
        "btag": rng.integers(0, 2, n).astype(float),
        "jet_px[5]": np.where(rng.random(n) < 0.3, rng.normal(50.0 + jet_shift, 10.0, n), np.nan),
    }


@pytest.fixture(scope="module")
def summary() -> TrainingSummary:
    return summarize(_sample(20000, np.random.default_rng(0)))


@pytest.mark.parametrize("n", [20, 50, 200, 1000])
def test_false_alarms_on_the_training_distribution_are_rare(summary, n):
    """20 held-out inputs of the training distribution per size: at a 1 % family-wise level, at
    most 2 may fire (3 or more has probability 0.1 % if the level holds)."""
    fires = [
        compare(
            summary, tally(summary, _sample(n, np.random.default_rng(100 + i))), draws=2000, seed=i
        ).shifted
        for i in range(20)
    ]
    assert sum(fires) <= 2, fires


@pytest.mark.parametrize("n", [50, 200, 1000])
def test_met_scaled_by_1_6_is_flagged_with_its_numbers(summary, n):
    result = compare(summary, tally(summary, _sample(n, np.random.default_rng(7), met_scale=1.6)))
    assert result.shifted
    assert result.features[0].name == "met_px"
    assert result.features[0].rejected
    assert [f.name for f in result.differing] == ["met_px"]  # the other features are alike
    text = result.summary()
    assert text.startswith(f"input differs from the training data ({n} events): met_px")
    assert "met_px: input mean" in text
    assert "vs training mean" in text
    assert ", p " in text
    assert result.features[0].p_value <= 0.01 / len(result.features)  # Holm's first step
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["shifted"] is True
    assert record["features"][0]["name"] == "met_px"


def test_a_shift_of_a_padded_slot_is_flagged(summary):
    result = compare(summary, tally(summary, _sample(2000, np.random.default_rng(8), jet_shift=5.0)))
    assert [f.name for f in result.differing] == ["jet_px[5]"]
    assert result.differing[0].n == pytest.approx(600, rel=0.15)  # only the events filling the slot


def test_summary_content_and_json_roundtrip(summary):
    f = summary.features["jet_px[5]"]
    assert summary.events == 20000
    assert f["padding"] == pytest.approx(0.7, abs=0.02)
    assert f["n"] == sum(f["counts"])
    assert f["quantiles"][5] == pytest.approx(50.0, abs=0.5)
    assert f["std"] == pytest.approx(10.0, rel=0.05)
    assert summary.features["btag"]["zeros"] == pytest.approx(0.5, abs=0.02)
    text = json.dumps(summary.to_dict())
    assert len(text) < 3000  # a few KB for the neutrino model's 44 features
    again = TrainingSummary.from_dict(json.loads(text))
    assert again.features == summary.features
    assert again.events == summary.events


def test_malformed_summary_is_one_line():
    doc = summarize({"x": np.arange(100.0)}).to_dict()
    doc["features"]["x"]["counts"][0] += 1
    with pytest.raises(
        ModelError, match=r"^training_summary: feature 'x' is malformed \(counts do not add up"
    ):
        TrainingSummary.from_dict(doc)
    with pytest.raises(ModelError, match="has version 7; this hepflow reads version 1"):
        TrainingSummary.from_dict({**doc, "version": 7})


def test_padding_is_no_value_and_rare_slots_are_left_out():
    rng = np.random.default_rng(3)
    n = 1000
    counts = rng.integers(4, 7, n)  # 4 to 6 jets: slots 6 to 9 are always padding
    ctx = {
        "flat": rng.normal(size=(n, 2)),
        "jets": rng.normal(size=(n, 10, 1)),
        "mask": np.arange(10) < counts[:, None],
    }
    ctx["jets"][~ctx["mask"]] = 0.0
    cols = context_columns(ctx, names={"flat": ["a", "b"], "jets": ["pt"]}, masks={"jets": "mask"})
    assert np.isnan(cols["pt[5]"]).mean() == pytest.approx(2 / 3, abs=0.05)
    s = summarize(cols)
    assert sorted(s.features) == ["a", "b", "pt[0]", "pt[1]", "pt[2]", "pt[3]", "pt[4]", "pt[5]"]
    assert s.features["pt[5]"]["zeros"] == 0.0  # the zero padding is not counted as values


def test_empty_input_says_so(summary):
    result = compare(summary, tally(summary, _sample(0, np.random.default_rng(1))))
    assert not result.shifted
    assert result.verdict() == "no input events: nothing to compare with the training data"


def test_fit_records_and_save_model_stores_the_summary(tmp_path):
    theta, ctx = torch.randn(400, 2), torch.randn(400, 3)
    model = hepflow.ConditionalINN(2, 3, depth=2, width=8)
    hepflow.fit(model, theta, ctx, epochs=1, seed=0, progress=False)
    path = hepflow.save_model(model, tmp_path / "m")
    summary = read_summary(path)
    assert summary is not None
    assert summary.events == 400
    assert len(summary.features) == 3
    result = compare(summary, tally(summary, summary.columns(3.0 * torch.randn(300, 3).numpy())))
    assert result.shifted
    assert len(result.differing) == 3
    # a model saved before summaries were stored: loads as before, and records none
    doc = json.loads((path / CONFIG_NAME).read_text())
    del doc["metadata"]["training_summary"]
    (path / CONFIG_NAME).write_text(json.dumps(doc))
    assert "training_summary" not in hepflow.load_model(path).metadata
    assert read_summary(path) is None


def test_a_wide_context_gets_no_summary():
    model = hepflow.ConditionalINN(2, 943, depth=1, width=8)
    assert model_summary(model, torch.randn(200, 943)) is None  # the cosmic model's 943 features
    assert model_summary(model, {"image": torch.randn(200, 2, 2, 2)}) is None


def test_ensemble_members_may_have_their_own_summaries(tmp_path):
    for seed in (1, 2):
        m = hepflow.ConditionalINN(2, 3, depth=2, width=8, seed=seed)
        hepflow.fit(m, torch.randn(300, 2), torch.randn(300, 3) + seed, epochs=1, seed=seed, progress=False)
        hepflow.save_model(m, tmp_path / f"m{seed}" / "flow", metadata={"analysis": "demo"})
    from hepflow.posterior import load_posterior, write_ensemble

    ens = write_ensemble([tmp_path / "m1", tmp_path / "m2"], tmp_path / "ens")
    assert type(load_posterior(ens)).__name__ == "EnsemblePosterior"
    assert read_summary(ens).features == read_summary(tmp_path / "m1").features  # the first member's


def test_sampler_check_inputs(tmp_path):
    """The coffea sampler's check: silent on the training distribution, a DomainShiftWarning on
    a shifted input; calling the sampler is unchanged; an old model says once that it has no
    summary."""
    from hepflow.inference.coffea import PosteriorSampler
    from hepflow.inference.export import export_torchscript

    rng = np.random.default_rng(0)
    model = hepflow.ConditionalINN(2, 3, depth=2, width=8)
    hepflow.fit(
        model,
        torch.randn(3000, 2),
        torch.as_tensor(rng.normal(size=(3000, 3)), dtype=torch.float32),
        epochs=1,
        seed=0,
        progress=False,
    )
    folder = hepflow.save_model(model, tmp_path / "m")
    ts = str(export_torchscript(model, tmp_path / "sampler.pt"))
    sampler = PosteriorSampler(ts, samples=4, latent_dim=2, theta_dim=2, training_summary=folder)
    same = rng.normal(size=(200, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainShiftWarning)
        assert not sampler.check_inputs(same).shifted
    shifted = same.copy()
    shifted[:, 0] *= 1.6
    with pytest.warns(
        DomainShiftWarning, match=r"input differs from the training data \(200 events\): context\[0\]"
    ):
        result = sampler.check_inputs(shifted)
    assert result.differing[0].name == "context[0]"
    assert sampler(shifted).shape == (200, 4, 2)
    import dask.array as da

    with pytest.raises(InputError, match="check_inputs needs computed arrays"):
        sampler.check_inputs(da.from_array(shifted))

    doc = json.loads((folder / CONFIG_NAME).read_text())
    del doc["metadata"]["training_summary"]
    (folder / CONFIG_NAME).write_text(json.dumps(doc))
    old = PosteriorSampler(ts, samples=4, latent_dim=2, theta_dim=2, training_summary=folder)
    with pytest.warns(DomainShiftWarning, match="records no training summary"):
        assert old.check_inputs(same) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainShiftWarning)
        assert old.check_inputs(same) is None  # said once
    with pytest.raises(InputError, match="check_inputs needs the model's training summary"):
        PosteriorSampler(ts, samples=4, latent_dim=2, theta_dim=2).check_inputs(same)


def test_a_training_set_smaller_than_min_count_keeps_its_full_features() -> None:
    # 49 training events (the CMS example): the features every event fills are summarised,
    # the slots only some events fill are not
    from hepflow.posterior.shift import summarize

    rng = np.random.default_rng(0)
    s = summarize({"met": rng.normal(size=49), "jet4": np.r_[rng.normal(size=20), [np.nan] * 29]})
    assert list(s.features) == ["met"]
    assert s.events == 49
