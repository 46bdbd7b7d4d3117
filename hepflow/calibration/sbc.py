"""Simulation-based calibration (SBC) ranks and their uniformity tests.

Talts, Betancourt, Simpson, Vehtari, Gelman, "Validating Bayesian inference algorithms with
simulation-based calibration", arXiv:1804.06788. For pairs (theta_true, y) drawn from the joint
prior predictive, the rank of theta_true among k draws from the posterior p(theta | y) is, per
parameter, uniform on {0, ..., k} if and only if (for all such test functions) the posterior is
correct on average. A U- (cup-)shaped rank histogram signals an overconfident (too narrow)
posterior, an inverted-U an underconfident one, a slope a bias.

Thinning: the ranks are uniform only when the k posterior draws are independent. Flow or
rejection samples are; correlated MCMC draws must first be thinned to about their effective
sample size (Talts et al., section 5), otherwise the histogram shows a spurious cup shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from hepflow.calibration._validation import RngLike, check_posterior_samples, randomized_rank, rng_from

__all__ = [
    "SBCResult",
    "default_rank_bins",
    "rank_bin_edges",
    "sbc_ranks",
    "sbc_test",
    "simulation_based_calibration",
]


@dataclass(frozen=True)
class SBCResult:
    """Ranks and per-parameter uniformity tests.

    Attributes:
        ranks: (n, d) integer ranks in {0, ..., n_samples}.
        n_samples: k, the number of posterior samples per observation.
        bin_edges: (n_bins + 1,) integer rank edges; bin b holds edges[b] <= r < edges[b + 1].
        counts: (n_bins, d) rank histogram.
        expected: (n_bins,) expected counts under uniformity.
        chi2: (d,) Pearson chi-square of ``counts`` against ``expected`` (n_bins - 1 dof).
        chi2_pvalue: (d,) its p-value.
        ks_statistic: (d,) Kolmogorov-Smirnov distance of the randomized normalized ranks
            u = (r + U) / (k + 1) from Uniform(0, 1).
        ks_pvalue: (d,) its p-value.
    """

    ranks: np.ndarray
    n_samples: int
    bin_edges: np.ndarray
    counts: np.ndarray
    expected: np.ndarray
    chi2: np.ndarray
    chi2_pvalue: np.ndarray
    ks_statistic: np.ndarray
    ks_pvalue: np.ndarray

    @property
    def n_bins(self) -> int:
        return len(self.bin_edges) - 1


def sbc_ranks(theta_true: Any, samples: Any, *, rng: RngLike = 0) -> np.ndarray:
    """Rank of each true value among its posterior samples, per parameter.

    Args:
        theta_true: (n, d) true parameters (or (n,) for d = 1); numpy array or torch tensor.
        samples: (n, k, d) posterior samples per observation (or (n, k)).
        rng: seed or Generator for breaking ties uniformly at random (ties only occur for
            discrete or duplicated samples).

    Returns:
        (n, d) int64 ranks in {0, ..., k}: the number of samples below the true value, plus a
        uniform draw among the samples equal to it.

    Example:
        >>> import numpy as np
        >>> sbc_ranks(np.array([[0.5]]), np.array([[[0.0], [1.0], [0.2]]])).tolist()
        [[2]]
    """
    theta, post = check_posterior_samples(theta_true, samples)
    ranks, _ = randomized_rank(theta, post, axis=1, rng=rng_from(rng))
    return ranks


def default_rank_bins(n_obs: int, n_samples: int) -> int:
    """Default number of rank bins: ``min(k + 1, 20, max(2, n // 10))``.

    With n // 10 bins the expected count per bin is at least 10 (for n >= 20), enough for the
    chi-square approximation; 20 bins are plenty to see the shapes SBC looks for.
    """
    return int(min(n_samples + 1, 20, max(2, n_obs // 10)))


def rank_bin_edges(n_samples: int, n_bins: int) -> np.ndarray:
    """Integer edges grouping the k + 1 rank values {0, ..., k} into ``n_bins`` contiguous bins.

    Edge b is ``floor(b (k + 1) / n_bins)``; bins hold ``edges[b] <= r < edges[b + 1]``, so their
    widths differ by at most one rank value when ``n_bins`` does not divide ``k + 1``; the
    expected counts account for this exactly.
    """
    if not 1 <= n_bins <= n_samples + 1:
        raise ValueError(f"n_bins must be in [1, k + 1 = {n_samples + 1}], got {n_bins}")
    return (np.arange(n_bins + 1) * (n_samples + 1)) // n_bins


def sbc_test(ranks: Any, n_samples: int, *, n_bins: int | None = None, rng: RngLike = 0) -> SBCResult:
    """Chi-square and Kolmogorov-Smirnov uniformity tests of SBC ranks, per parameter.

    Binning (chi-square): the k + 1 possible rank values are grouped into ``n_bins`` contiguous
    bins (:func:`rank_bin_edges`, default :func:`default_rank_bins`); the expected count of a bin
    is n x (rank values in the bin) / (k + 1); the statistic has n_bins - 1 degrees of freedom.

    KS: the ranks are made continuous, u = (r + U) / (k + 1) with U ~ Uniform(0, 1) drawn from
    ``rng``, which is exactly Uniform(0, 1) under the null, and compared with the uniform CDF.

    Args:
        ranks: (n, d) or (n,) integer ranks in {0, ..., n_samples}.
        n_samples: k, the number of posterior samples each rank was computed from.
        n_bins: chi-square bins; default ``default_rank_bins(n, k)``.
        rng: seed or Generator for the KS randomization.

    Example:
        >>> import numpy as np
        >>> r = np.random.default_rng(1).integers(0, 100, size=(500, 2))
        >>> res = sbc_test(r, 99)
        >>> res.n_bins, bool(np.all(res.chi2_pvalue > 1e-3))
        (20, True)
    """
    r = np.asarray(ranks)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] < 1:
        raise ValueError(f"ranks must have shape (n, d) or (n,), got {np.shape(ranks)}")
    if int(n_samples) != n_samples or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples}")
    n_samples = int(n_samples)
    if not np.issubdtype(r.dtype, np.integer):
        if not np.all(np.isfinite(r)) or np.any(r != np.round(r)):
            raise ValueError(f"ranks must be integers, got dtype {r.dtype}")
        r = r.astype(np.int64)
    if r.min() < 0 or r.max() > n_samples:
        raise ValueError(f"ranks must lie in [0, n_samples = {n_samples}], got [{r.min()}, {r.max()}]")
    n, d = r.shape
    nb = default_rank_bins(n, n_samples) if n_bins is None else int(n_bins)
    edges = rank_bin_edges(n_samples, nb)
    counts = np.stack([np.histogram(r[:, j], bins=edges)[0] for j in range(d)], axis=1)
    expected = n * np.diff(edges) / (n_samples + 1)
    if nb > 1:
        chi2 = np.sum((counts - expected[:, None]) ** 2 / expected[:, None], axis=0)
        chi2_p = stats.chi2.sf(chi2, df=nb - 1)
    else:
        chi2, chi2_p = np.zeros(d), np.ones(d)
    gen = rng_from(rng)
    u = (r + gen.random(r.shape)) / (n_samples + 1)
    ks = [stats.kstest(u[:, j], "uniform") for j in range(d)]
    return SBCResult(
        ranks=r,
        n_samples=n_samples,
        bin_edges=edges,
        counts=counts,
        expected=expected,
        chi2=np.asarray(chi2, dtype=np.float64),
        chi2_pvalue=np.asarray(chi2_p, dtype=np.float64),
        ks_statistic=np.array([t.statistic for t in ks], dtype=np.float64),
        ks_pvalue=np.array([t.pvalue for t in ks], dtype=np.float64),
    )


def simulation_based_calibration(
    theta_true: Any, samples: Any, *, n_bins: int | None = None, rng: RngLike = 0
) -> SBCResult:
    """Ranks (:func:`sbc_ranks`) and their uniformity tests (:func:`sbc_test`) in one call.

    Example:
        >>> import numpy as np
        >>> g = np.random.default_rng(0)
        >>> theta = g.normal(size=(400, 1))
        >>> samples = g.normal(size=(400, 99, 1))  # prior draws: a calibrated (if useless) posterior
        >>> res = simulation_based_calibration(theta, samples)
        >>> res.ranks.shape, bool(res.ks_pvalue[0] > 1e-3)
        ((400, 1), True)
    """
    gen = rng_from(rng)
    theta, post = check_posterior_samples(theta_true, samples)
    ranks = sbc_ranks(theta, post, rng=gen)
    return sbc_test(ranks, post.shape[1], n_bins=n_bins, rng=gen)
