"""One test of several coverages at once, with its null drawn from the posterior itself.

A report that checks the central-interval coverage of d parameters at two levels makes 2 d
checks. Each one, held to two binomial standard deviations, passes a calibrated posterior about
95 % of the time, so all of them together fail it more often: with 49 observations, three
parameters and the levels 0.68 and 0.95, about one time in five. One miss by one observation is
then weak evidence of miscalibration, and a verdict should say how weak with a number.

:func:`coverage_test` gives that number. Its statistic is the largest deviation, in binomial
standard deviations of the coverage a calibrated posterior has with k draws
(:func:`~hepflow.calibration.coverage.sampled_level`)::

    T = max over levels L and parameters j of |c_Lj - t_L| / sqrt(t_L (1 - t_L) / n)

Its null distribution is that of a randomisation test. For every observation the truth and the
k posterior draws are pooled (k + 1 values); a posterior is calibrated (in the strong sense: the
truth behaves like one more draw, given the observation) exactly when the k + 1 are exchangeable.
Each pseudo-experiment picks one of the k + 1 at random per observation as the stand-in truth
and measures its coverage with the other k, so the observed statistic is one of the
pseudo-experiments (the truth picked everywhere), with the same number of draws and the same
target; ties between them are ties, whatever the discreteness of a small sample or of the
draws. The pick is the same for all parameters, so the correlations between the parameters'
coverages are those of the posterior (if the posterior has them wrong the null is slightly
off). The p-value is the fraction of pseudo-experiments with a statistic at least as large as
the observed one, counting the observed one (Davison and Hinkley, "Bootstrap Methods and their
Application", 1997, eq. 4.11: ``(1 + r) / (1 + R)``).

This is a family-wise test: a p-value below the chosen threshold says the coverages as a whole
are off; a single coverage outside two standard deviations with a large p-value is what a
calibrated posterior shows that often. On few observations the test has little power (on 49
events it rejects a posterior 20 % too narrow about 80 % of the time, one 20 % too wide about
20 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hepflow.calibration._validation import (
    RngLike,
    check_levels,
    check_names,
    check_posterior_samples,
    rng_from,
)
from hepflow.calibration.coverage import interpolation_points, sampled_level

__all__ = ["CoverageTest", "coverage_test"]


@dataclass(frozen=True)
class CoverageTest:
    """The joint coverage test of :func:`coverage_test`.

    Attributes:
        levels: (L,) credibility levels.
        names: d parameter names.
        coverage: (L, d) observed coverage.
        target: (L,) coverage of a calibrated posterior with the given number of draws.
        z: (L, d) observed deviations in binomial standard deviations of the target.
        statistic: the largest ``|z|``.
        p_value: ``(1 + r) / (1 + n_pseudo)`` with ``r`` the pseudo-experiments with a
            statistic at least as large as the observed one.
        exceed: that ``r``.
        p_all_within_2sd: fraction of calibrated pseudo-experiments in which every ``|z|`` is at
            most 2 (how often a calibrated posterior passes the check "each coverage within two
            standard deviations" on these observations).
        n_obs: observations.
        n_pseudo: pseudo-experiments.
        samples: posterior draws per observation.
    """

    levels: np.ndarray
    names: list[str]
    coverage: np.ndarray
    target: np.ndarray
    z: np.ndarray
    statistic: float
    p_value: float
    exceed: int
    p_all_within_2sd: float
    n_obs: int
    n_pseudo: int
    samples: int

    @property
    def worst(self) -> str:
        """The coverage furthest from its target, e.g. ``'px at 68%'``."""
        i, j = np.unravel_index(int(np.argmax(np.abs(self.z))), self.z.shape)
        return f"{self.names[j]} at {self.levels[i]:.0%}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "statistic": self.statistic,
            "worst": self.worst,
            "p_value": self.p_value,
            "exceed": self.exceed,
            "p_all_within_2sd": self.p_all_within_2sd,
            "n_observations": self.n_obs,
            "n_pseudo": self.n_pseudo,
            "samples": self.samples,
            "z": {
                f"{lv:g}": {name: float(v) for name, v in zip(self.names, row, strict=True)}
                for lv, row in zip(self.levels, self.z, strict=True)
            },
        }


def _loo_inside(srt: np.ndarray, pos: np.ndarray, x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """(L, n, d): whether ``x`` lies in the central intervals of the sorted values ``srt``
    (n, K, d) with the one at sorted position ``pos`` (n, d) left out (K - 1 remain), interpolated
    as :func:`~hepflow.calibration.coverage.central_intervals` does."""
    n, k, d = srt.shape
    m = k - 1
    rows = np.arange(n)[:, None]
    cols = np.arange(d)[None, :]

    def remaining(j: np.ndarray) -> np.ndarray:
        # the j-th of the k - 1 draws that are left: skip the one at ``pos``
        jj = np.where(j < pos, j, j + 1)
        return srt[rows, np.minimum(jj, k - 1), cols]

    def quantile(q: float) -> np.ndarray:
        i0, i1, w = interpolation_points(q, m)
        a = remaining(np.full((n, d), i0))
        b = remaining(np.full((n, d), i1))
        return a + w * (b - a)

    out = np.empty((len(levels), n, d), dtype=bool)
    for i, lv in enumerate(levels):
        out[i] = (quantile((1.0 - lv) / 2.0) <= x) & (x <= quantile((1.0 + lv) / 2.0))
    return out


def coverage_test(
    theta_true: Any,
    samples: Any,
    names: Any = None,
    *,
    levels: Any = (0.68, 0.95),
    n_pseudo: int = 1000,
    rng: RngLike = 0,
) -> CoverageTest:
    """Test the central-interval coverages at all ``levels`` and parameters together.

    Args:
        theta_true: (n, d) true parameters (or (n,)).
        samples: (n, k, d) posterior draws (or (n, k)).
        names: d parameter names, default ``theta_0, ...``.
        levels: credibility levels strictly between 0 and 1, default 0.68 and 0.95.
        n_pseudo: pseudo-experiments for the null distribution.
        rng: seed or Generator for the choice of the stand-in truths.

    Returns:
        A :class:`CoverageTest`.

    Example:
        >>> import numpy as np
        >>> g = np.random.default_rng(1)
        >>> theta, post = g.normal(size=(200, 2)), g.normal(size=(200, 100, 2))
        >>> coverage_test(theta, post, n_pseudo=200).p_value > 0.05  # calibrated
        True
        >>> coverage_test(theta, 0.6 * post, n_pseudo=200).p_value < 0.01  # overconfident
        True
    """
    theta, post = check_posterior_samples(theta_true, samples)
    n, k, d = post.shape
    if n_pseudo < 1:
        raise ValueError(f"n_pseudo must be at least 1, got {n_pseudo}")
    labels = check_names(names, d)
    lv = check_levels(levels, default=np.array([0.68, 0.95]))
    if np.any((lv <= 0) | (lv >= 1)):
        raise ValueError(f"coverage_test levels must lie strictly between 0 and 1, got {lv.tolist()}")
    gen = rng_from(rng)
    target = np.array([sampled_level(a, k) for a in lv])
    sd = np.sqrt(target * (1.0 - target) / n)

    # the truth (position 0) and the k draws, exchangeable under calibration
    pool = np.concatenate([theta[:, None, :], post], axis=1)
    order = np.argsort(pool, axis=1, kind="stable")
    srt = np.take_along_axis(pool, order, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k + 1)[None, :, None], axis=1)
    rows = np.arange(n)

    def coverage(pick: np.ndarray) -> np.ndarray:
        return _loo_inside(srt, rank[rows, pick, :], pool[rows, pick, :], lv).mean(axis=1)

    def deviations(c: np.ndarray) -> np.ndarray:
        return (c - target[:, None]) / sd[:, None]

    observed = coverage(np.zeros(n, dtype=np.int64))
    z = deviations(observed)
    stat = float(np.max(np.abs(z)))
    null = np.array(
        [np.max(np.abs(deviations(coverage(gen.integers(0, k + 1, size=n))))) for _ in range(n_pseudo)]
    )
    exceed = int(np.count_nonzero(null >= stat - 1e-9))
    return CoverageTest(
        levels=lv,
        names=labels,
        coverage=observed,
        target=target,
        z=z,
        statistic=stat,
        p_value=float((1 + exceed) / (1 + n_pseudo)),
        exceed=exceed,
        p_all_within_2sd=float(np.mean(null <= 2.0 + 1e-9)),
        n_obs=int(n),
        n_pseudo=int(n_pseudo),
        samples=int(k),
    )
