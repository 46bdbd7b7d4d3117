"""CRPS and energy score against closed forms (hepflow.calibration.scores)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gamma

from hepflow.calibration.scores import crps_ensemble, crps_gaussian, energy_score
from hepflow.errors import InputError


def _crps_by_pairs(x: np.ndarray, y: float, w: np.ndarray | None = None) -> float:
    """Definition with explicit double sums (fair denominator for samples)."""
    k = len(x)
    d = np.abs(x[:, None] - x[None, :])
    if w is None:
        return float(np.abs(x - y).mean() - d.sum() / (2 * k * (k - 1)))
    w = w / w.sum()
    return float((w * np.abs(x - y)).sum() - 0.5 * w @ d @ w)


@pytest.mark.parametrize(("mu", "sigma", "y"), [(0.0, 1.0, 0.0), (10.0, 50.0, 80.0), (-3.0, 0.2, -2.5)])
def test_crps_of_a_gaussian_ensemble_matches_the_closed_form(mu, sigma, y):
    rng = np.random.default_rng(1)
    x = rng.normal(mu, sigma, size=(1, 200_000))
    got = crps_ensemble(x, np.array([y]))[0]
    assert got == pytest.approx(float(crps_gaussian(y, mu, sigma)), rel=0.01)


@pytest.mark.parametrize("k", [2, 5, 20])
def test_fair_crps_is_unbiased_for_small_ensembles(k):
    """Mean over events of the fair estimator from k members = the expected Gaussian CRPS; the
    plain estimator (1/k^2 in the second term) would be too large by sigma / (k sqrt(pi))."""
    rng = np.random.default_rng(k)
    n = 200_000
    y = rng.normal(size=n)
    x = rng.normal(size=(n, k))
    expected = float(np.mean(crps_gaussian(y, 0.0, 1.0)))  # = 1/sqrt(pi) (sqrt 2 - 1) + ... here
    got = float(crps_ensemble(x, y).mean())
    assert got == pytest.approx(expected, abs=0.006)
    plain_bias = 1.0 / (k * np.sqrt(np.pi))
    assert abs(got - expected) < plain_bias / 3


@pytest.mark.parametrize(("x", "y"), [(3.0, 1.0), (-2.0, 5.0), (0.0, 0.0)])
def test_a_point_estimate_scores_its_absolute_error(x, y):
    assert crps_ensemble(np.array([[x]]), np.array([y]))[0] == pytest.approx(abs(x - y))
    assert energy_score(np.array([[[x, 0.0, 0.0]]]), np.array([[y, 0.0, 0.0]]))[0] == pytest.approx(
        abs(x - y)
    )


@pytest.mark.parametrize(
    ("roots", "weights", "y"),
    [((0.0, 2.0), (0.5, 0.5), 0.0), ((-40.0, 120.0), (0.5, 0.5), 30.0), ((1.0, 4.0), (0.9, 0.1), 5.0)],
)
def test_two_point_mixture_is_exact(roots, weights, y):
    x, w = np.array([roots]), np.array([weights])
    expected = _crps_by_pairs(x[0], y, w[0])
    assert crps_ensemble(x, np.array([y]), weights=w)[0] == pytest.approx(expected)
    # closed form: w1 |x1 - y| + w2 |x2 - y| - w1 w2 |x1 - x2|
    (a, b), (wa, wb) = roots, weights
    assert expected == pytest.approx(wa * abs(a - y) + wb * abs(b - y) - wa * wb * abs(a - b))
    # equal roots: the mixture is a point
    assert crps_ensemble(np.array([[a, a]]), np.array([y]), weights=w)[0] == pytest.approx(abs(a - y))


def test_sorted_estimator_equals_the_double_sum():
    rng = np.random.default_rng(2)
    x = rng.standard_t(3, size=(50, 17))
    y = rng.normal(size=50)
    w = rng.random((50, 17))
    np.testing.assert_allclose(crps_ensemble(x, y), [_crps_by_pairs(a, b) for a, b in zip(x, y, strict=True)])
    np.testing.assert_allclose(
        crps_ensemble(x, y, weights=w), [_crps_by_pairs(a, b, c) for a, b, c in zip(x, y, w, strict=True)]
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_energy_score_in_one_dimension_is_the_crps(weighted):
    """E|X - y| - 1/2 E|X - X'|: the energy score of a 1-d ensemble equals its CRPS."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 9))
    y = rng.normal(size=40)
    w = rng.random((40, 9)) if weighted else None
    np.testing.assert_allclose(
        energy_score(x[..., None], y[:, None], weights=w), crps_ensemble(x, y, weights=w)
    )


@pytest.mark.parametrize("d", [1, 2, 3])
def test_energy_score_of_a_standard_normal_at_its_mean(d):
    """X ~ N(0, I_d), y = 0: E||X|| = sqrt(2) Gamma((d+1)/2) / Gamma(d/2) (the chi mean) and
    E||X - X'|| = sqrt(2) E||X||, so ES = E||X|| (1 - 1/sqrt(2))."""
    chi_mean = np.sqrt(2) * gamma((d + 1) / 2) / gamma(d / 2)
    rng = np.random.default_rng(d)
    x = rng.normal(size=(400, 300, d))
    got = energy_score(x, np.zeros((400, d))).mean()
    assert got == pytest.approx(chi_mean * (1 - 1 / np.sqrt(2)), rel=0.01)


def test_energy_score_batches_give_the_same_result(monkeypatch):
    from hepflow.calibration import scores

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 12, 3)), rng.normal(size=(30, 3))
    whole = energy_score(x, y)
    monkeypatch.setattr(scores, "_PAIR_BUDGET", 150)  # one event per batch
    np.testing.assert_allclose(energy_score(x, y), whole)


@pytest.mark.parametrize(
    ("samples", "y", "weights", "message"),
    [
        (np.zeros((3, 4)), np.zeros(2), None, r"samples \(3, 4\) and y \(2,\) do not match"),
        (np.zeros((3, 4, 2)), np.zeros(3), None, r"expected samples \(n, k\) and y \(n,\)"),
        (np.array([[np.nan, 1.0]]), np.zeros(1), None, "samples of shape .* 1 non-finite"),
        (np.zeros((2, 2)), np.zeros(2), np.zeros((2, 3)), r"weights \(2, 3\) must have the shape"),
        (np.zeros((2, 2)), np.zeros(2), np.zeros((2, 2)), "weights of 2 events sum to zero"),
    ],
)
def test_bad_input_is_named(samples, y, weights, message):
    with pytest.raises(InputError, match=message):
        crps_ensemble(samples, y, weights=weights)
