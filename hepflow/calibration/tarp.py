"""Tests of Accuracy with Random Points (TARP).

Lemos, Coogan, Hezaveh, Perreault-Levasseur, "Sampling-Based Accuracy Testing of Posterior
Estimators for General Inference", arXiv:2302.03026. For each observation i a reference point
theta_r is drawn; f_i is the fraction of posterior samples closer to theta_r than theta_true is
(the posterior mass of the ball around theta_r through theta_true). The expected coverage
probability ECP(alpha) = P(f <= alpha) equals alpha for every alpha when the posterior is
correct; deviations reveal over/under-confidence and bias, jointly in all parameters.

Conventions (as in the reference implementation and in ``sbi``): parameters are min-max
normalized with the range of ``theta_true`` over observations, one reference per observation
is drawn uniformly in that box, the distance is Euclidean (or L1). Ties between distances are
broken at random and f is made continuous, f = (r + U) / (k + 1), exactly Uniform(0, 1) under the
null, so ECP is evaluated exactly as the empirical CDF of f (no histogram).

Summaries:

* ATC, the area between the ECP curve and the diagonal for alpha in [0.5, 1],
  ATC = int_{0.5}^{1} (ECP(alpha) - alpha) d alpha = mean(1 - max(f, 0.5)) - 3/8, computed
  exactly from f; ``sbi.diagnostics.check_tarp`` returns a Riemann-sum approximation of the
  same integral. ATC > 0: underconfident (too wide); ATC < 0: overconfident (too narrow).
* a one-sample Kolmogorov-Smirnov test of f against Uniform(0, 1) (sup |ECP - alpha|). A
  biased posterior bends the ECP curve on both sides of alpha = 0.5, which largely cancels in
  the ATC but not in the KS distance: look at both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from hepflow.calibration._validation import (
    RngLike,
    as_numpy,
    check_posterior_samples,
    randomized_rank,
    rng_from,
)

__all__ = ["TarpResult", "tarp"]


@dataclass(frozen=True)
class TarpResult:
    """TARP expected coverage curve and its summaries.

    Attributes:
        alpha: (m,) credibility grid from 0 to 1.
        ecp: (m,) expected coverage probability at ``alpha``.
        f: (n,) per-observation credibility of the ball through theta_true.
        atc: area between ECP and the diagonal over alpha in [0.5, 1] (0 when calibrated).
        ks_statistic: sup |ECP(alpha) - alpha|, the KS distance of f from Uniform(0, 1).
        ks_pvalue: its p-value.
    """

    alpha: np.ndarray
    ecp: np.ndarray
    f: np.ndarray
    atc: float
    ks_statistic: float
    ks_pvalue: float


def tarp(
    theta_true: Any,
    samples: Any,
    *,
    references: Any = None,
    n_alpha: int = 101,
    normalize: bool = True,
    metric: Literal["euclidean", "l1"] = "euclidean",
    rng: RngLike = 0,
) -> TarpResult:
    """TARP expected coverage probability with random reference points.

    Args:
        theta_true: (n, d) true parameters (or (n,)); numpy array or torch tensor.
        samples: (n, k, d) posterior samples (or (n, k)).
        references: (n, d) reference points in the original parameter units; default one point
            per observation drawn uniformly in the bounding box of ``theta_true``.
        n_alpha: number of points of the alpha grid, 0 to 1.
        normalize: min-max normalize every parameter with the range of ``theta_true`` before
            computing distances (so parameters of different units weigh alike).
        metric: ``"euclidean"`` or ``"l1"`` distance.
        rng: seed or Generator for the references and tie-breaking.

    Example:
        >>> import numpy as np
        >>> g = np.random.default_rng(0)
        >>> theta, samples = g.normal(size=(1000, 2)), g.normal(size=(1000, 100, 2))
        >>> res = tarp(theta, samples)
        >>> abs(res.atc) < 0.02, res.ks_pvalue > 1e-3
        (True, True)
    """
    theta, post = check_posterior_samples(theta_true, samples)
    n, _, d = post.shape
    if metric not in ("euclidean", "l1"):
        raise ValueError(f"metric must be 'euclidean' or 'l1', got {metric!r}")
    if int(n_alpha) != n_alpha or n_alpha < 2:
        raise ValueError(f"n_alpha must be an integer >= 2, got {n_alpha}")
    gen = rng_from(rng)
    lo, hi = theta.min(axis=0), theta.max(axis=0)
    if references is None:
        refs = lo + (hi - lo) * gen.random((n, d))
    else:
        refs = as_numpy(references, name="references")
        if refs.shape != theta.shape:
            raise ValueError(f"references has shape {refs.shape} but theta_true has shape {theta.shape}")
        if not np.all(np.isfinite(refs)):
            raise ValueError("references contain non-finite values")
    if normalize:
        span = np.where(hi > lo, hi - lo, 1.0)
        theta, post, refs = (theta - lo) / span, (post - lo) / span, (refs - lo) / span

    def distance(x: np.ndarray) -> np.ndarray:
        diff = x - (refs[:, None, :] if x.ndim == 3 else refs)
        if metric == "euclidean":
            return np.sqrt(np.sum(diff**2, axis=-1))
        return np.sum(np.abs(diff), axis=-1)

    _, f = randomized_rank(distance(theta), distance(post), axis=1, rng=gen)
    alpha = np.linspace(0.0, 1.0, int(n_alpha))
    ecp = np.mean(f[None, :] <= alpha[:, None], axis=1)
    atc = float(np.mean(1.0 - np.maximum(f, 0.5)) - 0.375)
    ks = stats.kstest(f, "uniform")
    return TarpResult(
        alpha=alpha,
        ecp=ecp,
        f=f,
        atc=atc,
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
    )
