"""Iterative cINN unfolding: the density-ratio reweighting pieces, and on a toy with a strongly
smeared observable, the iteration removes most of the single pass's pull toward the prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hepflow.config import from_dict
from hepflow.errors import ConfigError, InputError
from hepflow.training.config import FitConfig
from hepflow.unfolding import build_response, compare, fake_rate
from hepflow.unfolding.binning import histogram
from hepflow.unfolding.cinn import sample_ensemble, train_ensemble, unfold_cinn
from hepflow.unfolding.icinn import (
    ICINNConfig,
    density_ratio,
    joint_unfolded,
    make_finetune,
    marginal_ratio,
    particle_weights,
    unfold_icinn,
)
from hepflow.unfolding.study import UnfoldingConfig

EDGES = np.array([30.0, 60.0, 90.0, 130.0, 180.0, 260.0, 400.0])


def test_density_ratio_normalises_clips_and_keeps_empty_bins():
    r = density_ratio(np.array([10.0, 30.0, 60.0, 0.0]), np.array([50.0, 30.0, 20.0, 0.0]), clip=2.0)
    # shapes 0.1, 0.3, 0.6 over 0.5, 0.3, 0.2: 0.2 -> clipped to 0.5, 1, 3 -> 2; empty prior bin: 1
    np.testing.assert_allclose(r, [0.5, 1.0, 2.0, 1.0])
    with pytest.raises(InputError, match="cannot reweight"):
        density_ratio(np.zeros(2), np.ones(2), clip=2.0)


def test_reweighting_with_the_ratio_reproduces_the_unfolded_shape():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 3.0, 30_000)
    edges = [np.array([0.0, 1.0, 2.0, 3.0])]
    prior, _ = histogram(x, edges[0])
    target = np.array([1.0, 2.0, 3.0])
    w = particle_weights([x], edges, density_ratio(target, prior, clip=10.0), np.ones(len(x), bool))
    reweighted, _ = histogram(x, edges[0], weights=w)
    np.testing.assert_allclose(reweighted / reweighted.sum(), target / target.sum(), rtol=1e-12)


def test_marginal_ratio_gives_the_unfolded_marginals_and_keeps_the_correlation():
    rng = np.random.default_rng(5)
    prior = rng.uniform(1.0, 5.0, (4, 3)) + 10.0 * np.eye(4, 3)  # correlated
    targets = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.0, 1.0, 1.0])]
    fitted = prior * marginal_ratio(prior, targets, clip=100.0)
    np.testing.assert_allclose(fitted.sum(axis=1) / fitted.sum(), targets[0] / targets[0].sum(), rtol=1e-6)
    np.testing.assert_allclose(fitted.sum(axis=0) / fitted.sum(), targets[1] / targets[1].sum(), rtol=1e-6)
    # the ratio is a product of one factor per axis: the odds ratios of the prior are kept
    odds = fitted[0, 0] * fitted[1, 1] / (fitted[0, 1] * fitted[1, 0])
    assert odds == pytest.approx(prior[0, 0] * prior[1, 1] / (prior[0, 1] * prior[1, 0]))
    with pytest.raises(InputError, match="marginal 1 has shape"):
        marginal_ratio(prior, [targets[0], np.ones(4)], clip=10.0)


def test_joint_unfolded_counts_posterior_occupancy_over_the_efficiency():
    samples = np.zeros((2, 3, 4, 2))
    samples[..., 0] = [[[0.5, 0.5, 1.5, 1.5]] * 3] * 2  # half of each event's draws in x bin 1
    samples[..., 1] = 0.5
    eff = np.array([[0.5], [0.25]])
    u = joint_unfolded(
        samples, [np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0])], np.array([1.0, 1.0, 2.0]), eff
    )
    np.testing.assert_allclose(u, [[2.0 / 0.5], [2.0 / 0.25]])


def test_config():
    cfg = UnfoldingConfig.from_file()
    assert cfg.icinn.enabled
    assert cfg.icinn.iterations >= 1
    with pytest.raises(ConfigError, match="clip must be > 1"):
        from_dict(UnfoldingConfig, {"icinn": {"clip": 1.0}})
    with pytest.raises(ConfigError, match="'both' is not one of"):
        from_dict(UnfoldingConfig, {"icinn": {"ratio": "both"}})
    with pytest.raises(ConfigError, match="tolerance"):
        from_dict(UnfoldingConfig, {"icinn": {"tolerance": -1.0}})
    with pytest.raises(ConfigError, match="'again' is not one of"):
        from_dict(UnfoldingConfig, {"icinn": {"training": "again"}})
    assert ICINNConfig().enabled is False  # off unless configured


def _toy(rng, n, slope=0.0):
    """x: particle level; y: x smeared by 35 %; all events pass both levels (no fakes)."""
    x = 30.0 + rng.gamma(2.0, 40.0, n)
    if slope:
        keep = rng.random(n) < np.exp(slope * (x - 30.0))  # a softer spectrum by rejection
        x = x[keep]
    y = x * np.exp(0.35 * rng.standard_normal(len(x)))
    return x, y


@pytest.mark.parametrize(
    ("ratio", "training"), [("marginals", "continue"), ("joint", "continue"), ("marginals", "retrain")]
)
def test_iteration_removes_the_pull_toward_the_prior(ratio, training):
    import hepflow

    rng = np.random.default_rng(11)
    x_sim, y_sim = _toy(rng, 6000)
    x_dat, y_dat = _toy(rng, 12_000, slope=-0.012)  # the data: much softer than the simulation
    n_sim = len(x_sim)
    everything = np.ones(n_sim, bool)
    theta = np.log(x_sim)[:, None].astype(np.float32)
    context = {"context": np.log(y_sim)[:, None].astype(np.float32)}
    fit = FitConfig(epochs=10, batch_size=256, lr=5e-3, patience=10, seed=4)

    def build(seed):
        return hepflow.ConditionalINN(theta_dim=1, context_dim=1, depth=2, width=16, seed=seed)

    models, _ = train_ensemble(
        build,
        theta,
        context,
        fit=fit,
        members=2,
    )
    data_context = {"context": np.log(y_dat)[:, None].astype(np.float32)}
    truth, truth_var = histogram(x_dat, EDGES)

    def rebuild(factor):
        kw = {"passes_truth": everything, "passes_reco": everything, "weights": factor}
        return [build_response(x_sim, y_sim, truth_edges=EDGES, reco_edges=EDGES, **kw)], fake_rate(
            [y_sim], [EDGES], **kw
        )

    def unfold(samples, responses, fakes):
        return unfold_cinn(
            samples,
            responses=responses,
            fake_rate=fakes,
            reco_values=[y_dat],
            bootstrap=30,
            sim_toys=30,
            seed=1,
        )

    before = [p.detach().clone() for p in models[0].parameters()]
    result, summary = unfold_icinn(
        models,
        sample=lambda current: np.exp(sample_ensemble(current, data_context, samples=16, seed=3)),
        unfold=unfold,
        rebuild=rebuild,
        finetune=make_finetune(
            theta,
            context,
            np.arange(n_sim),
            fit=fit,
            epochs=4,
            bootstrap=True,
            build=build if training == "retrain" else None,
        ),
        train_gen=[x_sim],
        train_fiducial=everything,
        train_selected=everything,
        train_weights=np.ones(n_sim),
        edges=[EDGES],
        fake_lookup=lambda fakes: fakes.lookup([y_dat]),
        data_weights=np.ones(len(x_dat)),
        cfg=ICINNConfig(enabled=True, ratio=ratio, iterations=3, tolerance=0.05, epochs=4, training=training),
    )
    assert 1 <= summary["iterations"] <= 3
    assert len(summary["centrals"]) == summary["iterations"] + 1
    assert len(summary["moves"]) == summary["iterations"]
    single = np.asarray(summary["centrals"][0][0])
    final = result[0]
    np.testing.assert_allclose(final.central, summary["centrals"][-1][0])
    assert "iteration" in final.components
    # the single pass is pulled toward the (harder) simulation: too few events in the first bin,
    # too many in the last; the iteration moves most of the way to the truth
    bias_single = np.abs(single / truth - 1)
    bias_final = np.abs(final.central / truth - 1)
    assert bias_single[-1] > 0.15, bias_single
    assert bias_final[-1] < 0.6 * bias_single[-1], (bias_single, bias_final)
    assert (
        compare(final, truth, truth_var=truth_var)["chi2"]
        < 0.5 * compare(type(final)(single, final.covariance), truth, truth_var=truth_var)["chi2"]
    )
    # the models passed in were not changed (copies were trained)
    assert all(
        np.array_equal(a.numpy(), b.detach().numpy())
        for a, b in zip(before, models[0].parameters(), strict=True)
    )


def test_continued_training_runs_at_lr_scale_times_the_learning_rate():
    """``[icinn] lr_scale``: the fine-tune moves a trained member less the smaller its learning
    rate (the full rate restarts the schedule as if from scratch)."""
    import hepflow

    rng = np.random.default_rng(5)
    x, y = _toy(rng, 3000)
    theta = np.log(x)[:, None].astype(np.float32)
    context = {"context": np.log(y)[:, None].astype(np.float32)}
    fit = FitConfig(epochs=2, batch_size=256, lr=5e-3, patience=10, seed=4)

    def build(seed):
        return hepflow.ConditionalINN(theta_dim=1, context_dim=1, depth=2, width=16, seed=seed)

    models, _ = train_ensemble(build, theta, context, fit=fit, members=1)
    start = torch.cat([p.detach().flatten() for p in models[0].parameters()])

    def moved(lr_scale):
        finetune = make_finetune(
            theta, context, np.arange(len(x)), fit=fit, epochs=1, bootstrap=True, lr_scale=lr_scale
        )
        (tuned,) = finetune(models, np.ones(len(x)))
        return float((torch.cat([p.detach().flatten() for p in tuned.parameters()]) - start).norm())

    full, tenth, tiny = moved(1.0), moved(0.1), moved(1e-4)
    assert tiny < 0.01 * full
    assert tiny < tenth < full
    with pytest.raises(ConfigError, match="lr_scale"):
        from_dict(UnfoldingConfig, {"icinn": {"lr_scale": 0.0}})
    assert UnfoldingConfig.from_file().icinn.lr_scale > 0
