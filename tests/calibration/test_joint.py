"""The joint coverage test: its leave-one-out intervals, its null, its power."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.calibration import calibration_report, central_intervals, coverage_at, coverage_test
from hepflow.calibration.joint import _loo_inside


def test_leave_one_out_intervals_match_central_intervals_without_the_draw():
    """The pseudo-experiments' intervals are those of the draws with the stand-in removed,
    interpolated as ``central_intervals`` does."""
    g = np.random.default_rng(3)
    n, k, d = 7, 11, 2
    post = g.normal(size=(n, k, d))
    order = np.argsort(post, axis=1)
    srt = np.take_along_axis(post, order, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k)[None, :, None], axis=1)
    levels = np.array([0.3, 0.68, 0.95])
    for pick in range(k):
        x = post[:, pick, :]
        got = _loo_inside(srt, rank[:, pick, :], x, levels)
        lo, hi = central_intervals(np.delete(post, pick, axis=1), levels)
        np.testing.assert_array_equal(got, (lo <= x[None]) & (x[None] <= hi))


def test_calibrated_posteriors_give_roughly_uniform_p_values():
    """60 calibrated data sets of 49 events, 3 parameters: the p-values spread over [0, 1]."""
    g = np.random.default_rng(11)
    p = np.array(
        [
            coverage_test(g.normal(size=(49, 3)), g.normal(size=(49, 64, 3)), n_pseudo=200, rng=i).p_value
            for i in range(60)
        ]
    )
    assert np.mean(p < 0.05) <= 0.12
    assert 0.3 <= np.mean(p < 0.5) <= 0.7


@pytest.mark.parametrize("scale", [0.7, 1.5])
def test_overconfident_and_overdispersed_posteriors_fail(scale):
    g = np.random.default_rng(2)
    theta, post = g.normal(size=(400, 2)), scale * g.normal(size=(400, 100, 2))
    test = coverage_test(theta, post, ["a", "b"], n_pseudo=300)
    assert test.p_value < 0.01
    assert test.statistic > 3
    assert test.worst.split(" at ")[0] in ("a", "b")


def test_several_coverages_often_have_one_outside_two_sd():
    """Six coverages of 49 events: a calibrated posterior has all six within two binomial
    standard deviations only about 82 % of the time; with the three parameters identical the
    coverages move together and pass more often."""
    g = np.random.default_rng(4)
    theta, post = g.normal(size=(49, 3)), g.normal(size=(49, 256, 3))
    independent = coverage_test(theta, post, n_pseudo=1000).p_all_within_2sd
    assert 0.7 < independent < 0.9
    same = np.repeat(post[:, :, :1], 3, axis=2)
    correlated = coverage_test(np.repeat(theta[:, :1], 3, axis=1), same, n_pseudo=1000).p_all_within_2sd
    assert correlated > independent + 0.05


def test_the_report_carries_the_joint_test():
    g = np.random.default_rng(0)
    rep = calibration_report(g.normal(size=(100, 2)), g.normal(size=(100, 50, 2)), ["mu", "sigma"])
    joint = rep["coverage_test"]
    assert set(joint["z"]) == {"0.68", "0.95"}
    assert 0 < joint["p_value"] <= 1
    assert joint["n_pseudo"] == 1000


def test_the_observed_coverage_is_that_of_the_central_intervals():
    g = np.random.default_rng(6)
    theta, post = g.normal(size=(80, 2)), g.normal(size=(80, 30, 2))
    test = coverage_test(theta, post, levels=(0.5, 0.68, 0.95), n_pseudo=10)
    cov = coverage_at(theta, post, levels=(0.5, 0.68, 0.95))
    np.testing.assert_array_equal(test.coverage, np.stack([cov[0.5], cov[0.68], cov[0.95]]))
    assert test.samples == 30


@pytest.mark.parametrize(("k", "discrete"), [(2, False), (20, True)])
def test_the_null_is_exact_for_few_draws_and_for_tied_values(k, discrete):
    """The truth is one of the k + 1 exchangeable values: with two draws per observation, or
    with integer-valued truth and draws (many ties), a calibrated posterior still gets p-values
    spread over [0, 1] (a null from the draws alone gave p near 1 for the ties)."""
    g = np.random.default_rng(7)

    def draw(shape):
        return g.integers(0, 3, size=shape).astype(float) if discrete else g.normal(size=shape)

    p = np.array(
        [coverage_test(draw((100, 1)), draw((100, k, 1)), n_pseudo=200, rng=i).p_value for i in range(80)]
    )
    assert np.mean(p < 0.1) <= 0.2
    assert 0.3 <= np.mean(p < 0.5) <= 0.7


def test_bad_input_is_refused():
    g = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2 posterior samples"):
        coverage_test(g.normal(size=(5, 1)), g.normal(size=(5, 1, 1)))
    with pytest.raises(ValueError, match="n_pseudo"):
        coverage_test(g.normal(size=(5, 1)), g.normal(size=(5, 9, 1)), n_pseudo=0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        coverage_test(g.normal(size=(5, 1)), g.normal(size=(5, 9, 1)), levels=(0.0, 0.68))
