"""The paired bootstrap of a ratio of two methods' scores (hepflow.calibration.paired)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hepflow.calibration.paired import PairedRatio, paired_ratio
from hepflow.errors import InputError
from hepflow.neutrino.verdicts import compare


def _means(a: np.ndarray, b: np.ndarray):
    return lambda i: (a[i].mean(), b[i].mean())


def test_the_bootstrap_error_of_a_mean_ratio_matches_the_delta_method():
    """For means, se(log(ma / mb)) = sd(a / ma - b / mb) / sqrt(n) to first order."""
    rng = np.random.default_rng(3)
    n = 2000
    a = rng.exponential(10.0, n)
    b = a * 1.1 + rng.exponential(3.0, n)
    r = paired_ratio(_means(a, b), n, n_boot=400, seed=1)
    delta = np.std(a / a.mean() - b / b.mean(), ddof=1) / math.sqrt(n)
    assert r.ratio == pytest.approx(a.mean() / b.mean())
    assert r.se == pytest.approx(delta, rel=0.15)


def test_pairing_resolves_a_difference_that_independent_errors_would_call_a_tie():
    """Both methods share a large per-event difficulty: their 3 % difference is far below the
    independent errors of each mean but well above the paired error."""
    rng = np.random.default_rng(5)
    n = 300
    hard = rng.exponential(20.0, n)
    a, b = hard * 0.97, hard + rng.normal(0.0, 0.2, n)
    independent = math.hypot(a.std() / a.mean(), b.std() / b.mean()) / math.sqrt(n)
    r = paired_ratio(_means(a, b), n, seed=0)
    assert abs(math.log(r.ratio)) < 2 * independent  # a tie without the pairing
    assert r.significant()
    assert r.se < independent / 10


def test_equal_methods_give_a_tie_and_zero_error():
    x = np.random.default_rng(0).exponential(1.0, 50)
    r = paired_ratio(_means(x, x), 50)
    assert r == PairedRatio(1.0, 0.0)
    assert not r.significant()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_ratio_of_noise_is_rarely_significant(seed):
    """Two methods with the same expected score differ only by noise: within 2 se almost always
    (each seed is a fixed draw, so this is deterministic)."""
    rng = np.random.default_rng(100 + seed)
    a, b = rng.exponential(5.0, (2, 400))
    assert not paired_ratio(_means(a, b), 400, seed=seed).significant(sigmas=3.0)


def test_undefined_ratios_have_no_error():
    zero = np.zeros(10)
    r = paired_ratio(_means(zero, np.ones(10)), 10)
    assert math.isnan(r.ratio)
    assert math.isnan(r.se)
    assert not r.significant()


@pytest.mark.parametrize(("n", "n_boot", "match"), [(0, 200, "n_events=0"), (5, 1, "n_boot >= 2")])
def test_bad_arguments_are_refused_in_one_line(n, n_boot, match):
    with pytest.raises(InputError, match=match):
        paired_ratio(lambda i: (1.0, 1.0), n, n_boot=n_boot)


def test_verdict_lines_use_the_paired_error():
    values = {"flow": 48.0, "quadratic": 50.0}
    assert "a tie: flow and quadratic agree" in compare("pz CRPS", values, unit="GeV", se=0.05)
    won = compare("pz CRPS", values, unit="GeV", se=0.01)
    assert won.endswith("flow better than quadratic by 4 % (ratio 0.96 +- 0.01)")
    # without an error the margin is printed as before
    assert compare("pz CRPS", values, unit="GeV").endswith("flow better than quadratic by 4 %")
