"""SBC, coverage and TARP on exact, overconfident, underconfident and biased posteriors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hepflow.calibration import (
    central_intervals,
    coverage_at,
    expected_coverage,
    hpd_coverage,
    sbc_ranks,
    sbc_test,
    simulation_based_calibration,
    tarp,
)
from hepflow.calibration.sbc import default_rank_bins, rank_bin_edges

# --- exact posterior: everything calibrated ---------------------------------------------------


def test_exact_posterior_ranks_uniform(problem):
    res = simulation_based_calibration(problem.theta, problem.samples(), rng=1)
    assert res.ranks.shape == problem.theta.shape
    assert res.ranks.min() >= 0
    assert res.ranks.max() <= res.n_samples
    assert np.all(res.chi2_pvalue > 1e-3), res.chi2_pvalue
    assert np.all(res.ks_pvalue > 1e-3), res.ks_pvalue


def test_exact_posterior_coverage_nominal_at_all_levels(problem):
    curve = expected_coverage(problem.theta, problem.samples())
    assert curve.coverage.shape == (len(curve.levels), 2)
    assert np.all(curve.max_deviation < 0.05), curve.max_deviation
    cov = coverage_at(problem.theta, problem.samples())
    for level in (0.68, 0.95):
        np.testing.assert_allclose(cov[level], level, atol=0.03)


def test_exact_posterior_hpd_coverage(problem):
    samples = problem.samples()
    curve = expected_coverage(
        problem.theta,
        samples,
        log_prob_true=problem.log_prob(problem.theta),
        log_prob_samples=problem.log_prob(samples),
    )
    assert curve.hpd is not None
    assert np.max(np.abs(curve.hpd - curve.levels)) < 0.05


def test_exact_posterior_tarp(problem):
    res = tarp(problem.theta, problem.samples(), rng=2)
    assert res.ecp[0] == 0.0
    assert res.ecp[-1] == 1.0
    assert abs(res.atc) < 0.01
    assert res.ks_pvalue > 1e-3
    assert np.max(np.abs(res.ecp - res.alpha)) < 0.05


# --- mis-calibrated posteriors ------------------------------------------------------------------


def test_overconfident_posterior_detected(problem):
    samples = problem.samples(width=0.5)
    cov = coverage_at(problem.theta, samples)
    assert np.all(cov[0.68] < 0.68 - 0.2), cov
    assert np.all(cov[0.95] < 0.95 - 0.2), cov
    curve = expected_coverage(problem.theta, samples)
    inner = (curve.levels > 0.05) & (curve.levels < 0.99)
    assert np.all(curve.coverage[inner] < curve.levels[inner, None])
    res = simulation_based_calibration(problem.theta, samples)
    assert np.all(res.chi2_pvalue < 1e-6)
    assert np.all(res.ks_pvalue < 1e-6)
    # cup-shaped ranks: the outer bins are over-populated
    assert np.all(res.counts[0] > 2 * res.expected[0])
    assert np.all(res.counts[-1] > 2 * res.expected[-1])
    t = tarp(problem.theta, samples)
    assert t.atc < -0.03
    assert t.ks_pvalue < 1e-6


def test_underconfident_posterior_detected(problem):
    samples = problem.samples(width=2.0)
    cov = coverage_at(problem.theta, samples)
    assert np.all(cov[0.68] > 0.68 + 0.15), cov
    res = simulation_based_calibration(problem.theta, samples)
    assert np.all(res.chi2_pvalue < 1e-6)
    t = tarp(problem.theta, samples)
    assert t.atc > 0.03


def test_biased_posterior_detected(problem):
    samples = problem.samples(shift=1.0)
    cov = coverage_at(problem.theta, samples)
    assert np.all(cov[0.68] < 0.68 - 0.1), cov
    res = simulation_based_calibration(problem.theta, samples)
    assert np.all(res.ks_pvalue < 1e-6)
    # shifted up: the true value ranks low
    assert np.all(res.ranks.mean(axis=0) < 0.35 * res.n_samples)
    t = tarp(problem.theta, samples)
    # a shift shows in the KS distance of the ECP curve rather than in the ATC
    assert t.ks_pvalue < 1e-6
    assert np.max(np.abs(t.ecp - t.alpha)) > 0.08
    hpd = expected_coverage(
        problem.theta,
        samples,
        log_prob_true=problem.log_prob(problem.theta, shift=1.0),
        log_prob_samples=problem.log_prob(samples, shift=1.0),
    ).hpd
    i68 = np.argmin(np.abs(np.linspace(0, 1, 51) - 0.68))
    assert hpd[i68] < 0.68 - 0.1


# --- details ------------------------------------------------------------------------------------


def test_ranks_by_hand():
    theta = np.array([[0.5, 10.0], [-1.0, 0.0]])
    samples = np.array([[[0.0, 1.0], [1.0, 2.0], [0.2, 3.0]], [[0.0, -1.0], [1.0, -2.0], [2.0, 3.0]]])
    # dim 0: 0.5 is above 0.0 and 0.2 -> 2; -1.0 is below all -> 0
    # dim 1: 10 above all -> 3; 0.0 is above -1 and -2 -> 2
    assert sbc_ranks(theta, samples).tolist() == [[2, 3], [0, 2]]


def test_ties_broken_uniformly():
    theta = np.zeros((4000, 1))
    samples = np.zeros((4000, 9, 1))  # all tied: the rank is uniform on 0..9
    ranks = sbc_ranks(theta, samples, rng=3)
    counts = np.bincount(ranks[:, 0], minlength=10)
    assert counts.min() > 300
    res = sbc_test(ranks, 9)
    assert res.chi2_pvalue[0] > 1e-3


def test_rank_binning_exact_expected_counts():
    edges = rank_bin_edges(100, 7)  # 101 rank values in 7 bins of 14 or 15 values
    assert edges[0] == 0
    assert edges[-1] == 101
    assert set(np.diff(edges)) <= {14, 15}
    res = sbc_test(np.arange(101).repeat(3), 100, n_bins=7)
    np.testing.assert_allclose(res.counts[:, 0], res.expected)
    assert res.chi2[0] == pytest.approx(0.0)
    assert default_rank_bins(1000, 999) == 20
    assert default_rank_bins(50, 999) == 5
    assert default_rank_bins(1000, 4) == 5


def test_central_intervals_match_numpy_quantile():
    samples = np.random.default_rng(5).normal(size=(7, 33, 3))
    levels = np.array([0.0, 0.3, 0.68, 0.95, 1.0])
    lo, hi = central_intervals(samples, levels)
    np.testing.assert_allclose(lo, np.quantile(samples, (1 - levels) / 2, axis=1))
    np.testing.assert_allclose(hi, np.quantile(samples, (1 + levels) / 2, axis=1))


def test_hpd_coverage_by_hand():
    # observation 0: 1 of 4 samples denser than the truth (+ half a tie) -> fraction 0.375
    # observation 1: none denser -> fraction 0
    lpt = np.array([0.0, 5.0])
    lps = np.array([[1.0, 0.0, -1.0, -2.0], [1.0, 2.0, 3.0, 4.0]])
    assert hpd_coverage(lpt, lps, levels=[0.0, 0.3, 0.4, 1.0]).tolist() == [0.5, 0.5, 1.0, 1.0]


def test_torch_and_one_dimensional_inputs(problem):
    theta = torch.as_tensor(problem.theta[:, :1])
    samples = torch.as_tensor(problem.samples()[:, :, :1])
    cov_t = coverage_at(theta, samples)
    cov_1d = coverage_at(theta[:, 0].numpy(), samples[:, :, 0].numpy())
    assert cov_t[0.68].shape == (1,)
    np.testing.assert_array_equal(cov_t[0.68], cov_1d[0.68])


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("theta_shape", "samples_shape", "match"),
    [
        ((10, 2), (9, 50, 2), r"\(10, 2\).*\(9, 50, 2\).*number of observations"),
        ((10, 2), (10, 50, 3), r"\(10, 2\).*\(10, 50, 3\).*number of parameters"),
        ((10, 2), (10, 50), r"expected theta_true of shape \(n, d\)"),
        ((10, 2), (10, 1, 2), r"at least 2 posterior samples"),
    ],
)
def test_shape_errors_name_the_shapes(theta_shape, samples_shape, match):
    with pytest.raises(ValueError, match=match):
        expected_coverage(np.zeros(theta_shape), np.zeros(samples_shape))
    with pytest.raises(ValueError, match=match):
        sbc_ranks(np.zeros(theta_shape), np.zeros(samples_shape))
    with pytest.raises(ValueError, match=match):
        tarp(np.zeros(theta_shape), np.zeros(samples_shape))


def test_other_input_errors():
    theta, samples = np.zeros((10, 1)), np.zeros((10, 5, 1))
    bad = samples.copy()
    bad[3, 2, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        sbc_ranks(theta, bad)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 1\]"):
        expected_coverage(theta, samples, levels=[0.5, 1.2])
    with pytest.raises(ValueError, match="both log_prob_true and log_prob_samples"):
        expected_coverage(theta, samples, log_prob_true=np.zeros(10))
    with pytest.raises(ValueError, match=r"log_prob_samples has shape \(10, 4\)"):
        expected_coverage(theta, samples, log_prob_true=np.zeros(10), log_prob_samples=np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"ranks must lie in \[0, n_samples = 5\]"):
        sbc_test(np.array([0, 6]), 5)
    with pytest.raises(ValueError, match=r"references has shape \(3, 1\)"):
        tarp(theta, samples, references=np.zeros((3, 1)))


def test_coverage_deviation_is_measured_from_the_calibrated_target_of_k_draws():
    """Intervals from 16 draws of the exact posterior cover 0.95 x 15/17 = 0.84, not 0.95: the
    curve's target says so, its max_deviation does not flag the calibrated posterior, and the
    report records the target next to the coverage."""
    from hepflow.calibration import calibration_report, sampled_level

    g = np.random.default_rng(4)
    theta, samples = g.normal(size=(20000, 1)), g.normal(size=(20000, 16, 1))
    curve = expected_coverage(theta, samples, levels=[0.68, 0.95])
    assert curve.samples == 16
    np.testing.assert_allclose(curve.target, [0.68 * 15 / 17, 0.95 * 15 / 17])
    assert np.all(np.abs(curve.coverage[:, 0] - [0.68, 0.95]) > 0.05)  # far from the levels
    assert curve.max_deviation[0] < 0.02  # close to the target (Gaussian: within 0.013 at 16)
    rep = calibration_report(theta[:500], samples[:500])
    assert rep["coverage_target"] == {"0.68": sampled_level(0.68, 16), "0.95": sampled_level(0.95, 16)}
