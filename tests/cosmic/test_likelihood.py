"""Combined-fit deviance: formulas, profiled normalisation, maximum near the truth."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import ForwardModel, Likelihood, Observation, multinomial_deviance, poisson_deviance
from hepflow.errors import ConfigError

from .conftest import COMBINED_FIT

DIFFERENT = np.array(
    [
        [2.0, 19.5, 1.0, 0.0, 0.0, 0.0, 0.0],  # soft protons
        [-1.5, 18.6, 0.0, 0.0, 0.8, 0.2, 0.0],  # hard and heavy (second-minimum-like)
        [0.96, 18.68, 0.0, 0.0, 0.0, 0.0, 1.0],  # iron
        [1.6, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0],  # softer
        [0.96, 19.0, 0.0, 0.673, 0.281, 0.046, 0.0],  # higher cut-off
        [0.96, 18.68, 0.3, 0.373, 0.281, 0.046, 0.0],  # lighter
    ]
)


def test_deviance_formulas() -> None:
    assert float(poisson_deviance(np.array([5.0, 0.0]), np.array([5.0, 0.0]))) == 0.0
    n, mu = np.array([4.0, 9.0]), np.array([5.0, 7.0])
    assert float(poisson_deviance(n, mu)) == pytest.approx(
        2 * sum(m - k + k * np.log(k / m) for k, m in zip(n, mu, strict=True))
    )
    k = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert float(multinomial_deviance(k, k / k.sum(axis=1, keepdims=True))) == pytest.approx(0.0)
    p = np.full((2, 3), 1.0 / 3.0)
    expected = 2 * (3 * np.log(3 / (4 / 3)) + np.log(1 / (4 / 3)) + 2 * 2 * np.log(2 / (4 / 3)))
    assert float(multinomial_deviance(k, p)) == pytest.approx(expected)


@pytest.fixture(scope="module")
def asimov(model: ForwardModel) -> Observation:
    """Expected counts at the truth with 10x the Auger statistics."""
    mu = model.expected(COMBINED_FIT, n_spectrum=10 * model.n_spectrum, n_xmax=10 * model.n_xmax)
    return Observation(model.binning, mu["spectrum"][0], mu["xmax"][0])


def test_asimov_deviance_minimal_at_truth(model: ForwardModel, asimov: Observation) -> None:
    like = Likelihood(asimov, model=model)
    d_true = like.deviance(COMBINED_FIT)
    assert d_true.total[0] == pytest.approx(0.0, abs=1e-6)
    d_other = like.deviance(DIFFERENT)
    assert np.all(d_other.total > 25.0)
    # small steps in every direction increase the deviance
    steps = np.repeat(COMBINED_FIT[None], 4, axis=0)
    steps[0, 0] += 0.1
    steps[1, 1] -= 0.05
    steps[2, 3:5] += [-0.05, 0.05]
    steps[3, 3:6] += [-0.02, 0.0, 0.02]
    assert np.all(like.deviance(steps).total > 1.0)


def test_poisson_mock_prefers_truth(model: ForwardModel) -> None:
    sim = model.simulate(COMBINED_FIT, rng=5, n_spectrum=10 * model.n_spectrum, n_xmax=10 * model.n_xmax)
    obs = model.observation(sim)
    like = Likelihood(obs, model=model)
    grid = np.repeat(COMBINED_FIT[None], 21, axis=0)
    grid[:, 0] = np.linspace(0.46, 1.46, 21)
    best = grid[np.argmax(like(grid)), 0]
    assert best == pytest.approx(0.96, abs=0.1)
    assert np.all(like(COMBINED_FIT) > like(DIFFERENT))


def test_vectorised_loglike_and_support(model: ForwardModel, auger: Observation) -> None:
    like = Likelihood(auger, model=model)
    theta = np.vstack([COMBINED_FIT, DIFFERENT, [1.0, 19.0, 0.5, 0.6, 0.0, 0.0, 0.0], [np.nan] * 7])
    ll = like(theta)
    assert ll.shape == (9,)
    assert np.all(np.isfinite(ll[:7]))
    assert np.all(np.isneginf(ll[7:]))
    np.testing.assert_allclose(ll[:7], -0.5 * like.deviance(theta[:7]).total)
    # profiled normalisation: the best scale of the shape is sum(n) / sum(shape)
    shape = model.spectrum_shape(COMBINED_FIT)[0]
    n = auger.spectrum
    scales = np.linspace(0.9, 1.1, 41) * n.sum()
    d = [float(poisson_deviance(n, s * shape)) for s in scales]
    assert scales[int(np.argmin(d))] == pytest.approx(n.sum())
    only_x = Likelihood(auger, model=model, use_spectrum=False)
    np.testing.assert_allclose(only_x.deviance(DIFFERENT).spectrum, 0.0)
    with pytest.raises(ConfigError, match="not both"):
        Likelihood(auger, model=model, irb="Kneiske04")
    with pytest.raises(ConfigError, match="binnings"):
        Likelihood(Observation.from_auger(lg_e_min=19.0), model=model)
