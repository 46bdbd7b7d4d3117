"""Prior: support, density, unconstrained bijection."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import Prior
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
