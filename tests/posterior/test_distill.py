"""Tuning a flow to the exact posterior with likelihood weights: hepflow.posterior.distill."""

from __future__ import annotations

import numpy as np
import pytest

import hepflow
from hepflow.errors import ConfigError, ModelError
from hepflow.posterior import FlowPosterior
from hepflow.posterior.distill import distill
from hepflow.posterior.importance import importance_weights
from hepflow.posterior.toys import Bimodal, GaussianLinear

FAST = {"batch_size": 128, "lr": 3e-3}


@pytest.fixture(scope="module")
def poor() -> tuple[GaussianLinear, hepflow.ConditionalINN, np.ndarray]:
    """The Gaussian linear toy (3 dimensions), a cINN trained for 3 epochs, an observation."""
    toy = GaussianLinear(dim=3, noise=0.3)
    theta = toy.prior.sample(2000, rng=0)
    net = hepflow.ConditionalINN(3, 3, blocks="affine", depth=3, width=32, seed=0)
    hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=3, progress=False, seed=0)
    return toy, net, np.array([[1.5, -1.0, 0.4]])


def _moments(post: FlowPosterior, x_o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    draws, _ = post.sample(8000, x_o, seed=5)
    return draws[0].mean(0), draws[0].std(0)


def test_a_poor_flow_is_tuned_to_the_exact_posterior(poor) -> None:
    toy, net, x_o = poor
    mean, sd = toy.posterior_mean_sd(x_o[0])
    before = FlowPosterior(net)
    m0, _s0 = _moments(before, x_o)
    assert np.max(np.abs(m0 - mean) / sd) > 1.0  # the poor flow is far off
    target = lambda t: toy.log_likelihood(t, x_o[0]) + toy.prior.log_prob(t)  # noqa: E731
    result = distill(before, x_o, target, steps=3, samples=2000, epochs=30, fit_options=FAST, seed=1)
    m1, s1 = _moments(result.posterior, x_o)
    assert np.all(np.abs(m1 - mean) < 0.15 * sd)
    assert np.all(np.abs(s1 / sd - 1) < 0.1)
    # the steps' importance efficiency rises, and fresh draws of the tuned flow are nearly exact
    effs = [s.efficiency for s in result.steps]
    assert effs[0] < 0.3 < effs[-1]
    assert result.efficiency > 0.85
    meta = result.metadata()
    assert len(meta["steps"]) == 3
    assert meta["efficiency_after"] == result.efficiency
    assert "arXiv:1808.03856" in meta["method"]
    # the input flow is not modified
    np.testing.assert_allclose(_moments(before, x_o)[0], m0)


def test_the_tuned_posterior_keeps_features_and_metadata(poor) -> None:
    toy, net, x_o = poor
    post = FlowPosterior(net, features=lambda x: np.asarray(x, dtype=np.float32), metadata={"k": 1})
    target = lambda t: toy.log_likelihood(t, x_o[0]) + toy.prior.log_prob(t)  # noqa: E731
    result = distill(post, x_o, target, steps=1, samples=500, epochs=2, fit_options=FAST, check=False)
    assert result.efficiency is None
    assert result.posterior.features is post.features
    assert result.posterior.metadata == {"k": 1}
    draws, logp = result.posterior.sample(10, x_o, seed=0, log_prob=True)
    assert draws.shape == (1, 10, 3)
    assert logp is not None


def test_a_flow_that_misses_the_posterior_is_refused(poor) -> None:
    """Weights cannot teach what no draw reaches: an observation far in the prior's tail."""
    toy, net, _ = poor
    x_far = np.array([[9.0, -9.0, 9.0]])
    target = lambda t: toy.log_likelihood(t, x_far[0]) + toy.prior.log_prob(t)  # noqa: E731
    draws, logq = FlowPosterior(net).sample(2000, x_far, seed=0, log_prob=True)
    assert importance_weights(target(draws[0]), logq[0]).efficiency < 0.05
    with pytest.raises(ModelError, match="does not cover the posterior"):
        distill(FlowPosterior(net), x_far, target, samples=2000, min_ess=100)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"steps": 0}, "steps >= 1"),
        ({"samples": 5}, "samples >= 10"),
        ({"epochs": 0}, "epochs >= 1"),
        ({"samples": 100, "min_ess": 100}, "min_ess"),
        ({"fit_options": {"epochs": 3}}, "fit_options must not set epochs"),
    ],
)
def test_bad_options_are_refused(poor, options, match) -> None:
    toy, net, x_o = poor
    with pytest.raises(ConfigError, match=match):
        distill(FlowPosterior(net), x_o, toy.prior.log_prob, **options)


def test_a_target_of_the_wrong_shape_is_refused(poor) -> None:
    _toy, net, x_o = poor
    with pytest.raises(ModelError, match="log_target returned shape"):
        distill(FlowPosterior(net), x_o, lambda t: np.zeros(3), samples=20)


def test_a_target_that_vanishes_everywhere_is_refused(poor) -> None:
    _toy, net, x_o = poor
    with pytest.raises(ModelError, match="the target vanishes at all 50 draws"):
        distill(FlowPosterior(net), x_o, lambda t: np.full(len(t), -np.inf), samples=50)


def test_an_untrained_flow_is_refused(poor) -> None:
    _toy, _net, x_o = poor
    fresh = hepflow.ConditionalINN(3, 3, blocks="affine", depth=2, width=8, seed=0)
    with pytest.raises(ConfigError, match="never fitted"):
        distill(FlowPosterior(fresh), x_o, lambda t: np.zeros(len(t)), samples=50)


def test_pooled_weights_are_against_the_mixture_of_the_steps_flows(poor) -> None:
    """The balance heuristic: with a poor first step, the pool of both steps is worth more than
    the second step's draws alone (its pooled ESS exceeds that step's own ESS)."""
    toy, net, x_o = poor
    target = lambda t: toy.log_likelihood(t, x_o[0]) + toy.prior.log_prob(t)  # noqa: E731
    result = distill(
        FlowPosterior(net), x_o, target, steps=2, samples=2000, epochs=30, fit_options=FAST, seed=1
    )
    first, second = result.steps
    assert first.pooled_ess == pytest.approx(first.ess, rel=1e-6)  # one step: its own weights
    assert second.pooled_ess > second.ess


@pytest.fixture(scope="module")
def one_sided() -> tuple[Bimodal, hepflow.ConditionalINN, np.ndarray]:
    """The bimodal toy (``x_0 = theta_0^2``: modes at +-theta_0 of equal mass) and a cINN trained
    on ``theta_0 > 0`` only: at ``x_o = (1, 0)`` it knows the mode at +1 and not the one at -1."""
    toy = Bimodal(noise=0.1)
    theta = toy.prior.sample(6000, rng=0)
    theta[:, 0] = np.abs(theta[:, 0])
    net = hepflow.ConditionalINN(2, 2, blocks="affine", depth=4, width=32, seed=0)
    hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=15, progress=False, seed=0, **FAST)
    return toy, net, np.array([[1.0, 0.0]])


def _share_below_zero(post: FlowPosterior, x_o: np.ndarray) -> float:
    draws, _ = post.sample(4000, x_o, seed=5)
    return float(np.mean(draws[0][:, 0] < 0))


def test_a_defensive_proposal_teaches_the_mode_the_flow_misses(one_sided) -> None:
    """Without a proposal the weights cannot move mass to the mode no draw reaches (and their
    efficiency does not show it); with a Student t mixture on both modes as defensive component
    (half of every step's draws), the flow learns it with its exact mass (1/2)."""
    from hepflow.cosmic.modes import StudentMixture

    toy, net, x_o = one_sided
    target = lambda t: toy.log_likelihood(t, x_o[0]) + toy.prior.log_prob(t)  # noqa: E731
    assert _share_below_zero(FlowPosterior(net), x_o) < 0.01
    options = {"steps": 3, "samples": 2000, "epochs": 30, "fit_options": FAST, "seed": 1}
    alone = distill(FlowPosterior(net), x_o, target, **options)
    assert _share_below_zero(alone.posterior, x_o) < 0.02
    assert alone.settings["proposal"] is None
    both = StudentMixture(
        np.array([[1.0, 0.0], [-1.0, 0.0]]), np.stack([0.04 * np.eye(2)] * 2), np.ones(2) / 2
    )
    defended = distill(FlowPosterior(net), x_o, target, proposal=both, proposal_share=0.5, **options)
    assert abs(_share_below_zero(defended.posterior, x_o) - 0.5) < 0.08
    # the check draws the flow alone; its weights cannot see a missed mode: the one-sided flow
    # looks as efficient as the right one
    assert defended.efficiency > 0.8
    assert alone.efficiency > 0.8
    assert defended.settings["proposal"] == {"kind": "StudentMixture", "share": 0.5}
    first = defended.steps[0]
    assert first.pooled_ess == pytest.approx(first.ess, rel=1e-6)  # one step: its own weights


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"proposal": object()}, "proposal needs sample and log_prob"),
        ({"proposal_share": 0.0}, r"proposal_share must lie in \(0, 1\)"),
        ({"proposal_share": 1.0}, r"proposal_share must lie in \(0, 1\)"),
        ({"proposal_share": 0.01, "samples": 20}, "leaves no draw"),
    ],
)
def test_bad_proposals_are_refused(one_sided, options, match) -> None:
    from hepflow.cosmic.modes import StudentMixture

    toy, net, x_o = one_sided
    options = {"proposal": StudentMixture(np.zeros((1, 2)), np.eye(2)[None], np.ones(1)), **options}
    with pytest.raises(ConfigError, match=match):
        distill(FlowPosterior(net), x_o, toy.prior.log_prob, **options)


def test_a_proposal_of_the_wrong_shape_is_refused(one_sided) -> None:
    from hepflow.cosmic.modes import StudentMixture

    toy, net, x_o = one_sided
    three = StudentMixture(np.zeros((1, 3)), np.eye(3)[None], np.ones(1))
    with pytest.raises(ModelError, match=r"proposal returned draws of shape \(10, 3\)"):
        distill(FlowPosterior(net), x_o, toy.prior.log_prob, samples=20, proposal=three)


def test_the_weights_are_against_the_mixture_of_flow_and_proposal(one_sided, monkeypatch) -> None:
    """One step with a quarter of the draws from the proposal: the weights the network is trained
    on are target / (0.75 q + 0.25 g), q the input flow's density (the share enters, not only the
    sum of the densities)."""
    import importlib

    from hepflow.cosmic.modes import StudentMixture

    fit_module = importlib.import_module("hepflow.training.fit")

    toy, net, x_o = one_sided
    target = lambda t: toy.log_likelihood(t, x_o[0]) + toy.prior.log_prob(t)  # noqa: E731
    g = StudentMixture(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.stack([0.04 * np.eye(2)] * 2), np.ones(2) / 2)
    seen = {}
    real_fit = fit_module.fit

    def spy(model, theta, context, *, weights, **kwargs):
        seen.update(theta=np.asarray(theta, dtype=np.float64), weights=np.asarray(weights))
        return real_fit(model, theta, context, weights=weights, **kwargs)

    monkeypatch.setattr(fit_module, "fit", spy)
    result = distill(
        FlowPosterior(net), x_o, target, steps=1, samples=400, epochs=1, proposal=g, proposal_share=0.25,
        fit_options=FAST, check=False, seed=3,
    )  # fmt: skip
    assert result.steps[0].unusable == 0
    theta = seen["theta"]
    log_q = FlowPosterior(net).log_prob(theta[None], x_o)[0]
    expected = np.exp(target(theta) - np.logaddexp(np.log(0.75) + log_q, np.log(0.25) + g.log_prob(theta)))
    ratio = seen["weights"] / expected
    np.testing.assert_allclose(ratio / ratio.mean(), 1.0, rtol=1e-3)
    swapped = np.exp(target(theta) - np.logaddexp(np.log(0.25) + log_q, np.log(0.75) + g.log_prob(theta)))
    assert np.std(seen["weights"] / swapped) / np.mean(seen["weights"] / swapped) > 0.01
