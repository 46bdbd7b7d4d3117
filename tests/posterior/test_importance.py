"""Importance weights: exact for known densities, ESS limits, resampling, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hepflow.errors import InputError
from hepflow.posterior import importance_weights


def test_weights_recover_the_target_moments() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 2.0, 50_000)
    target = stats.norm(0.7, 0.8)
    iw = importance_weights(target.logpdf(x) + 12.3, stats.norm(0.0, 2.0).logpdf(x))  # any constant
    assert iw.weights.sum() == pytest.approx(1.0)
    mean = np.sum(iw.weights * x)
    sd = np.sqrt(np.sum(iw.weights * (x - mean) ** 2))
    assert mean == pytest.approx(0.7, abs=0.02)
    assert sd == pytest.approx(0.8, abs=0.02)
    # ESS of N(0, 2) for N(0.7, 0.8): n / E_q[w^2] with E_q[w^2] = int p^2 / q
    grid = np.linspace(-12, 12, 200_001)
    second = np.trapezoid(target.pdf(grid) ** 2 / stats.norm(0.0, 2.0).pdf(grid), grid)
    assert iw.efficiency == pytest.approx(1 / second, rel=0.05)
    draws = x[iw.resample(rng=5)]
    assert draws.mean() == pytest.approx(0.7, abs=0.03)
    assert len(iw.resample(10, rng=1)) == 10


def test_perfect_proposal_and_a_vanishing_target() -> None:
    lq = np.log(np.full(100, 0.5))
    iw = importance_weights(lq, lq)
    assert iw.ess == pytest.approx(100.0)
    assert iw.efficiency == pytest.approx(1.0)
    lt = lq.copy()
    lt[:60] = -np.inf  # outside the target's support
    iw = importance_weights(lt, lq)
    assert iw.ess == pytest.approx(40.0)
    assert (iw.weights[:60] == 0).all()
    assert set(iw.resample(500, rng=0)) <= set(range(60, 100))


@pytest.mark.parametrize(
    ("lt", "lq", "match"),
    [
        ([0.0, np.nan], [0.0, 0.0], "log_target has 1 NaN"),
        ([0.0, np.inf], [0.0, 0.0], r"log_target has 1 NaN/\+inf"),
        ([0.0, 0.0], [0.0, -np.inf], "log_proposal has 1 non-finite"),
        ([-np.inf, -np.inf], [0.0, 0.0], "zero at every sample"),
        ([0.0, 0.0], [0.0], "must have one equal"),
        ([], [], "non-empty"),
    ],
)
def test_bad_input_is_named(lt, lq, match) -> None:
    with pytest.raises(InputError, match=match):
        importance_weights(lt, lq)


def test_resample_needs_a_positive_size() -> None:
    iw = importance_weights([0.0, 1.0], [0.0, 0.0])
    with pytest.raises(InputError, match="n must be >= 1"):
        iw.resample(0)
