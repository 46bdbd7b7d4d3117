"""The likelihood marginalised over the nuisances (hepflow.cosmic.marginal) against a grid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from hepflow.cosmic import ForwardModel, Likelihood, Observation, Systematics
from hepflow.cosmic.marginal import MarginalLikelihood
from hepflow.errors import ConfigError

from .conftest import COMBINED_FIT

#: the best sample of `hepflow mcmc cosmic --observation auger --systematics` (the soft mode,
#: docs/cosmic_model.md), where a systematics posterior lives, and its nuisances
SOFT_MODE = np.array([1.436, 18.643, 0.0181, 0.0195, 0.7526, 0.2076, 0.0022])  # fractions sum to 1
SOFT_MODE_NU = (2.37, 2.25)
#: another sample of that MCMC, at the other end of its energy scale
SOFT_LOW_SCALE = np.array([1.4445, 18.701, 0.4371, 0.0006, 0.2642, 0.2852, 0.0129])
SOFT_LOW_SCALE_NU = (-0.20, 2.02)


@pytest.fixture(scope="module")
def like(auger: Observation) -> Likelihood:
    return Likelihood(auger, model=ForwardModel(auger, systematics=Systematics()))


def _grid_marginal(like: Likelihood, theta: np.ndarray, box: tuple[tuple[float, float], ...]) -> float:
    """log integral L p dnu by the midpoint rule on 101 x 101 points of a box in (nu_E, nu_X)
    chosen independently of the estimator: +-1.2 (about 8 conditional sd) around the MCMC
    sample's own nuisances, or the region a scan of the whole support found."""
    axes = [np.linspace(lo, hi, 101) for lo, hi in box]
    e, x = np.meshgrid(*axes, indexing="ij")
    nu = np.c_[e.ravel(), x.ravel()]
    f = like(np.c_[np.tile(theta, (len(nu), 1)), nu]) + like.model.systematics.log_prob(nu)
    return float(special.logsumexp(f) + np.log(np.diff(axes[0])[0] * np.diff(axes[1])[0]))


@pytest.mark.parametrize(
    ("theta", "nu"),
    [(SOFT_MODE, SOFT_MODE_NU), (SOFT_LOW_SCALE, SOFT_LOW_SCALE_NU)],
    ids=["soft_mode", "soft_low_scale"],
)
def test_the_estimate_agrees_with_a_grid_and_is_precise(
    like: Likelihood, theta: np.ndarray, nu: tuple
) -> None:
    """20 independent estimates of one posterior sample: their mean within 0.05 of the grid, each
    within 0.4 (the Laplace proposal makes nearly every draw count)."""
    est = MarginalLikelihood(like, seed=1).estimate(np.tile(theta, (20, 1)))
    exact = _grid_marginal(like, theta, tuple((v - 1.2, v + 1.2) for v in nu))
    assert np.all(np.abs(est.mode[0] - nu) < 0.3)  # the conditional mode near the joint sample's
    assert abs(special.logsumexp(est.log_likelihood) - np.log(20) - exact) < 0.05
    assert np.all(np.abs(est.log_likelihood - exact) < 0.4)
    assert np.median(est.inner_ess) > 0.7 * est.draws
    # far better than the likelihood at the prior's centre: the data want shifted scales
    assert exact > like(np.r_[theta, 0.0, 0.0][None])[0] + 5
    summary = est.summary()
    assert summary["draws"] == 32
    assert summary["inner_ess_median"] > 20


def test_off_the_posterior_the_estimate_is_noisier_but_unbiased(like: Likelihood) -> None:
    """The combined fit without shifts lies off the systematics posterior; there the conditional of
    nu is far from Gaussian (a scan of the whole support puts its mode at the edge, nu_E = 4,
    nu_X = 0.8) and few draws count, but the mean of 20 estimates still agrees with the grid
    within 0.5."""
    est = MarginalLikelihood(like, seed=1).estimate(np.tile(COMBINED_FIT, (20, 1)))
    exact = _grid_marginal(like, COMBINED_FIT, ((3.4, 4.0), (0.0, 1.6)))
    assert abs(special.logsumexp(est.log_likelihood) - np.log(20) - exact) < 0.5
    assert np.median(est.inner_ess) < 0.5 * est.draws


def test_the_marginal_is_below_the_best_conditional_and_ranks_parameters(like: Likelihood) -> None:
    """p(x | theta) <= max_nu L(x | theta, nu) (p(nu) <= 1/(2 pi)); the soft mode of the
    systematics fit is far more likely than the combined fit without shifts."""
    est = MarginalLikelihood(like, seed=2).estimate(np.stack([SOFT_MODE, COMBINED_FIT]))
    best = like(np.c_[np.stack([SOFT_MODE, COMBINED_FIT]), est.mode])
    assert np.all(est.log_likelihood < best)
    assert est.log_likelihood[0] > est.log_likelihood[1] + 50


def test_rows_outside_the_parameter_space_are_minus_infinity(like: Likelihood) -> None:
    assert MarginalLikelihood(like).estimate(np.zeros((0, 7))).log_likelihood.shape == (0,)
    bad = SOFT_MODE.copy()
    bad[2:] = [0.5, 0.5, 0.5, 0.0, 0.0]  # fractions off the simplex
    out = MarginalLikelihood(like, draws=4, starts=2, newton_steps=1).estimate(np.stack([bad, SOFT_MODE]))
    assert out.log_likelihood[0] == -np.inf
    assert np.isfinite(out.log_likelihood[1])


def test_bad_settings_are_refused(auger: Observation, like: Likelihood) -> None:
    with pytest.raises(ConfigError, match="the forward model has no systematics"):
        MarginalLikelihood(Likelihood(auger))
    with pytest.raises(ConfigError, match="draws must be >= 2"):
        MarginalLikelihood(like, draws=1)
    with pytest.raises(ConfigError, match="defensive must be in"):
        MarginalLikelihood(like, defensive=0.0)
    with pytest.raises(ConfigError, match=r"source parameters \(n, 7\), got \(2, 9\)"):
        MarginalLikelihood(like).estimate(np.zeros((2, 9)))


def test_the_conditional_mode_is_the_grid_maximum(like: Likelihood) -> None:
    """The mode search alone (what the report scores a cINN mode at) finds the maximum of
    L(x | theta, nu) p(nu) on a fine grid, and is the mode the estimate uses."""
    ml = MarginalLikelihood(like, seed=3)
    mode = ml.conditional_mode(SOFT_MODE)
    assert mode.shape == (1, 2)
    axes = [np.linspace(v - 0.6, v + 0.6, 121) for v in SOFT_MODE_NU]
    e, x = np.meshgrid(*axes, indexing="ij")
    nu = np.c_[e.ravel(), x.ravel()]
    f = like(np.c_[np.tile(SOFT_MODE, (len(nu), 1)), nu]) + like.model.systematics.log_prob(nu)
    assert np.all(np.abs(mode[0] - nu[np.argmax(f)]) < 0.02)  # two grid steps
    np.testing.assert_array_equal(mode, ml.estimate(SOFT_MODE[None]).mode)
    with pytest.raises(ConfigError, match=r"source parameters \(n, 7\)"):
        ml.conditional_mode(np.zeros((1, 9)))
