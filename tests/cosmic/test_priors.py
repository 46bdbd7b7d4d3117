"""Prior: support, density, unconstrained bijection; the training proposal and its correction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hepflow.cosmic import Prior, Proposal
from hepflow.errors import ConfigError


def test_samples_inside_support() -> None:
    prior = Prior()
    theta = prior.sample(5000, rng=1)
    assert theta.shape == (5000, 7)
    assert prior.in_support(theta).all()
    assert theta[:, 0].min() >= -3.0
    assert theta[:, 0].max() <= 3.0
    assert theta[:, 1].min() >= 17.5
    assert theta[:, 1].max() <= 19.5
    np.testing.assert_allclose(theta[:, 2:].sum(axis=1), 1.0)
    # uniform on the simplex: each fraction has mean 1/5
    np.testing.assert_allclose(theta[:, 2:].mean(axis=0), 0.2, atol=0.01)
    np.testing.assert_array_equal(prior.sample(3, rng=7), prior.sample(3, rng=7))


def test_log_prob() -> None:
    prior = Prior()
    theta = prior.sample(10, rng=2)
    # uniform: log(4!) - log(6) - log(2)
    np.testing.assert_allclose(prior.log_prob(theta), np.log(24.0) - np.log(12.0))
    outside = theta.copy()
    outside[0, 0] = 3.5
    outside[1, 2:] = [0.5, 0.5, 0.5, -0.5, 0.0]
    outside[2, 2:] = [0.5, 0.1, 0.1, 0.1, 0.1]
    lp = prior.log_prob(outside)
    assert np.all(np.isneginf(lp[:3]))
    assert np.all(np.isfinite(lp[3:]))
    peaked = Prior(concentration=3.0)
    assert (
        peaked.log_prob([0.0, 18.5, 0.2, 0.2, 0.2, 0.2, 0.2])[0]
        > peaked.log_prob([0.0, 18.5, 0.6, 0.1, 0.1, 0.1, 0.1])[0]
    )


def test_unconstrained_round_trip() -> None:
    prior = Prior()
    theta = prior.sample(1000, rng=3)
    z = prior.to_unconstrained(theta)
    assert z.shape == (1000, 6)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(prior.from_unconstrained(z), theta, atol=1e-10)
    centre = prior.to_unconstrained([0.0, 18.5, 0.2, 0.2, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(centre, 0.0, atol=1e-12)
    assert prior.in_support(prior.from_unconstrained(np.random.default_rng(0).normal(0, 5, (100, 6)))).all()


def test_invalid_prior() -> None:
    with pytest.raises(ConfigError, match="lg_rcut"):
        Prior(lg_rcut=(19.0, 18.0))
    with pytest.raises(ConfigError, match="concentration"):
        Prior(concentration=0.0)


def test_proposal_of_weight_one_is_the_prior() -> None:
    prior = Prior()
    proposal = Proposal(prior)
    assert proposal.is_prior
    np.testing.assert_array_equal(proposal.sample(50, rng=3), prior.sample(50, rng=3))
    theta = prior.sample(20, rng=4)
    np.testing.assert_array_equal(proposal.log_prob(theta), prior.log_prob(theta))
    np.testing.assert_array_equal(proposal.log_acceptance(theta), 0.0)


def test_proposal_puts_mass_on_the_faces_and_its_density_is_the_mixture() -> None:
    prior = Prior()
    proposal = Proposal(prior, prior_weight=0.5, concentration=0.3)
    theta = proposal.sample(40000, rng=5)
    assert prior.in_support(theta).all()
    sparse = (theta[:, 4:] < 0.01).all(axis=1)  # N, Si and Fe below 1 %
    assert sparse.mean() > 20 * (prior.sample(40000, rng=6)[:, 4:] < 0.01).all(axis=1).mean()
    # density: E_proposal[prior / proposal] = 1 and E_proposal[1 / proposal] = the support volume
    with np.errstate(over="ignore"):
        ratio = np.exp(prior.log_prob(theta) - proposal.log_prob(theta))
    assert abs(ratio.mean() - 1.0) < 0.02
    assert ratio.max() <= 1 / 0.5 + 1e-9
    # against the mixture written out with scipy's Dirichlet on an interior point
    x = np.array([[0.3, 18.4, 0.1, 0.2, 0.3, 0.25, 0.15]])
    box = np.log(6.0) + np.log(2.0)
    f = x[0, 2:]
    mix = 0.5 * stats.dirichlet(np.ones(5)).pdf(f) + 0.5 * stats.dirichlet(np.full(5, 0.3)).pdf(f)
    np.testing.assert_allclose(proposal.log_prob(x), np.log(mix) - box, rtol=1e-10)
    assert np.isneginf(proposal.log_prob([[3.5, 18.4, 0.2, 0.2, 0.2, 0.2, 0.2]])).all()


@pytest.mark.parametrize("prior_weight", [0.8, 0.3])
def test_accepted_proposal_draws_follow_the_prior(prior_weight) -> None:
    prior = Prior()
    proposal = Proposal(prior, prior_weight=prior_weight, concentration=0.3)
    theta = proposal.sample(60000, rng=7)
    assert (proposal.log_acceptance(theta) <= 0).all()
    kept = theta[proposal.accept(theta, rng=8)]
    assert abs(len(kept) / len(theta) - prior_weight) < 0.01  # acceptance lambda on average
    # under the flat Dirichlet every fraction is Beta(1, 4); the raw proposal draws are not
    for k in range(2, 7):
        assert stats.kstest(kept[:, k], stats.beta(1, 4).cdf).pvalue > 1e-3
    assert stats.kstest(theta[:, 4], stats.beta(1, 4).cdf).pvalue < 1e-6
    assert stats.kstest(kept[:, 0], stats.uniform(-3, 6).cdf).pvalue > 1e-3


def test_invalid_proposal() -> None:
    with pytest.raises(ConfigError, match="prior_weight"):
        Proposal(Prior(), prior_weight=0.0)
    with pytest.raises(ConfigError, match="prior_weight"):
        Proposal(Prior(), prior_weight=1.5)
    with pytest.raises(ConfigError, match="concentration"):
        Proposal(Prior(), prior_weight=0.5, concentration=-1.0)


def test_restrict_conditions_the_prior_on_a_box() -> None:
    """Prior.restrict: uniform in the narrower gamma, lg R_cut ranges, the Dirichlet conditioned
    on the fraction bounds; its mass agrees with plain prior draws; bounds it cannot apply
    cheaply (a fraction bound keeping < 1 % of draws) are dropped, the prior's own are infinite."""
    prior = Prior()
    lower = np.array([0.5, 18.2, 0.1, 0.0, 0.0, 0.0, 0.0])
    upper = np.array([1.5, 18.9, 0.6, 0.7, 1.0, 1.0, 1.0])
    sub, mass, lo, hi = prior.restrict(lower, upper)
    draws = prior.sample(400_000, rng=3)
    inside = np.all((draws >= lower) & (draws <= upper), axis=1)
    assert mass == pytest.approx(inside.mean(), rel=0.03)
    x = sub.sample(20_000, rng=4)
    assert np.all((x >= lower) & (x <= upper))
    # the conditioned prior: its draws look like the prior's draws inside the box
    np.testing.assert_allclose(x.mean(axis=0), draws[inside].mean(axis=0), atol=0.01)
    np.testing.assert_array_equal(lo, [0.5, 18.2, 0.1, -np.inf, -np.inf, -np.inf, -np.inf])
    np.testing.assert_array_equal(hi, [1.5, 18.9, 0.6, 0.7, np.inf, np.inf, np.inf])
    # f_Si <= 1e-4 keeps 4e-4 of the Dirichlet's draws: not applied
    tiny = upper.copy()
    tiny[6] = 1e-4
    _, _, _, hi_tiny = prior.restrict(lower, tiny)
    assert np.all(np.isinf(hi_tiny[2:]))
    with pytest.raises(ConfigError, match="misses the prior's support"):
        prior.restrict(np.r_[4.0, lower[1:]], np.r_[5.0, upper[1:]])
