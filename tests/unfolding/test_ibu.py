"""Iterative Bayesian unfolding: analytic answers, efficiency and fakes, convergence, toys."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.errors import ConfigError, InputError
from hepflow.unfolding import build_response, compare, iterative_bayes, unfold_ibu
from hepflow.unfolding.binning import histogram

R2 = np.array([[0.8, 0.2], [0.2, 0.8]])


def test_identity_response_returns_the_data_for_any_prior():
    data = np.array([5.0, 120.0, 33.0, 0.0])
    for prior in (np.ones(4), np.array([100.0, 1.0, 7.0, 3.0])):
        out = iterative_bayes(data, np.eye(4), prior=prior, iterations=1)
        np.testing.assert_allclose(out, data)


def test_two_bins_first_iterations_by_hand():
    data = np.array([60.0, 40.0])
    steps = iterative_bayes(data, R2, prior=np.array([1.0, 1.0]), iterations=2, all_iterations=True)
    # iteration 1 (flat prior): P(0|0) = 0.8, P(0|1) = 0.2 -> u0 = 0.8 * 60 + 0.2 * 40
    np.testing.assert_allclose(steps[0], [56.0, 44.0])
    # iteration 2 (prior 56, 44): folded = (53.6, 46.4)
    u0 = 60 * 0.8 * 56 / 53.6 + 40 * 0.2 * 56 / 46.4
    u1 = 60 * 0.2 * 44 / 53.6 + 40 * 0.8 * 44 / 46.4
    np.testing.assert_allclose(steps[1], [u0, u1])
    assert steps[1].sum() == pytest.approx(100.0)  # full efficiency conserves the count


def test_many_iterations_reach_the_inverse():
    data = np.array([60.0, 40.0])
    out = iterative_bayes(data, R2, prior=np.array([1.0, 1.0]), iterations=500)
    np.testing.assert_allclose(out, np.linalg.solve(R2, data), rtol=1e-6)  # (66.67, 33.33)


def test_efficiency_and_fakes_three_bins():
    truth = np.array([300.0, 500.0, 200.0])
    migration = np.array([[0.6, 0.1, 0.0], [0.1, 0.5, 0.1], [0.0, 0.1, 0.6]])  # columns: 0.7, 0.7, 0.7
    migration[:, 1] *= 0.5 / 0.7  # bin 1 efficiency 0.5
    fakes = np.array([30.0, 10.0, 40.0])
    data = migration @ truth + fakes
    f = fakes / data
    out = iterative_bayes(data, migration, prior=np.ones(3), iterations=2000, fake_fraction=f)
    np.testing.assert_allclose(out, truth, rtol=1e-4)
    # leaving the fakes in or ignoring the efficiency fails
    no_fakes = iterative_bayes(data, migration, prior=np.ones(3), iterations=2000)
    assert np.max(np.abs(no_fakes / truth - 1)) > 0.05
    # starting from the truth, one iteration returns it; with efficiency 1 only the detected part
    start = iterative_bayes(data, migration, prior=truth, iterations=1, fake_fraction=f)
    np.testing.assert_allclose(start, truth)
    unit_eff = iterative_bayes(
        data, migration, prior=truth, iterations=1, fake_fraction=f, efficiency=np.ones(3)
    )
    np.testing.assert_allclose(unit_eff, truth * migration.sum(axis=0))


def test_zero_efficiency_bin_stays_zero_without_nan():
    R = np.array([[0.9, 0.0], [0.1, 0.0]])
    out = iterative_bayes(np.array([10.0, 5.0]), R, prior=np.ones(2), iterations=3)
    assert np.isfinite(out).all()
    assert out[1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"iterations": 0}, ConfigError),
        ({"prior": np.ones(3)}, InputError),
        ({"matrix": -R2}, InputError),
        ({"fake_fraction": np.ones(3)}, InputError),
    ],
)
def test_invalid_inputs(kwargs, error):
    args = {"data": np.array([1.0, 2.0]), "matrix": R2, "prior": np.ones(2), "iterations": 2, **kwargs}
    with pytest.raises(error):
        iterative_bayes(**args)


def _smeared(rng, n, slope, *, sigma=0.25, shift=0.0):
    """Toy: x exponential, efficiency rising with x, Gaussian smearing, a few fakes."""
    x = 20.0 + rng.exponential(1.0 / slope, n)
    passes_truth = rng.random(n) < 0.9
    y = x * (1.0 + shift + sigma * rng.standard_normal(n))
    passes_reco = rng.random(n) < 0.4 + 0.4 * (1 - np.exp(-x / 80.0))
    return x, y, passes_truth, passes_reco


EDGES = np.array([20.0, 50.0, 80.0, 120.0, 170.0, 250.0, 400.0])


def _response(rng, n, slope, **kw):
    x, y, pt, pr = _smeared(rng, n, slope, **kw)
    return build_response(x, y, truth_edges=EDGES, reco_edges=EDGES, passes_truth=pt, passes_reco=pr)


def test_convergence_to_the_truth_on_smeared_toys():
    rng = np.random.default_rng(1)
    response = _response(rng, 400_000, 1 / 60.0)  # simulation with a harder spectrum than the data
    x, y, pt, pr = _smeared(rng, 40_000, 1 / 45.0)
    truth, _ = histogram(x[pt], EDGES)
    data, data_var = histogram(y[pr], EDGES)
    result, steps = unfold_ibu(data, data_var, response, iterations=30, toys=50, seed=2)
    chi = [compare(type(result)(s, result.covariance), truth)["chi2"] for s in steps]
    assert chi[-1] < chi[0] / 3  # the iterations move away from the (wrong) prior
    assert chi[-1] / len(truth) < 3.0
    # a response that does not describe the detector (10 % scale shift) does not close
    wrong = _response(rng, 400_000, 1 / 60.0, shift=0.1)
    bad, _ = unfold_ibu(data, data_var, wrong, iterations=30, toys=50, seed=2)
    assert compare(bad, truth)["chi2"] / len(truth) > 10.0


def test_toy_uncertainties_for_an_identity_response():
    data = np.array([100.0, 400.0, 900.0])
    response = build_response(
        np.repeat([0.5, 1.5, 2.5], data.astype(int)),
        np.repeat([0.5, 1.5, 2.5], data.astype(int)),
        truth_edges=[0, 1, 2, 3],
        reco_edges=[0, 1, 2, 3],
        passes_truth=np.ones(1400, bool),
        passes_reco=np.ones(1400, bool),
    )
    result, _ = unfold_ibu(data, data, response, iterations=1, toys=400, seed=0)
    np.testing.assert_allclose(result.central, data)
    np.testing.assert_allclose(result.components["data"], np.sqrt(data), rtol=0.15)
    # a diagonal response estimated from the same events has no migration to fluctuate
    np.testing.assert_allclose(result.components["simulation"], 0.0, atol=1e-9)
    with pytest.raises(ConfigError):
        unfold_ibu(data, data, response, iterations=1, toys=1)
