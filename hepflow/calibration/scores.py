"""Proper scoring rules that judge a whole predictive distribution: CRPS and the energy score.

A point metric (bias, RMS, IQR width of a summary) judges one number per event; a posterior is a
distribution, and a method whose spectrum is too narrow can win on point metrics while its
distribution is wrong. The continuous ranked probability score (CRPS) and its multivariate
generalisation, the energy score (ES), are *strictly proper*: their expectation is smallest only
for the true distribution, and both have the units of the variable (GeV here). Lower is better.

For a predictive distribution F of a d-dimensional variable and an observed value y::

    ES(F, y) = E||X - y|| - 1/2 E||X - X'||,     X, X' ~ F independent,

and CRPS is the same with d = 1 (Gneiting & Raftery 2007, JASA 102, 359). All functions here
estimate it from an ensemble of k members per event, vectorised over events:

* ``weights=None`` (samples): the *fair* (unbiased) estimator, whose second term averages over
  the k (k - 1) distinct pairs, so that the mean over events is an unbiased estimate of the
  expected score of the distribution the samples come from, for any k >= 2 (Ferro 2014,
  QJRMS 140, 1917). A one-member ensemble (k = 1) is a point estimate: the score is |x - y|
  (||x - y||), the score of a point mass.
* ``weights`` given: the ensemble *is* the distribution (a finite mixture of point masses, e.g.
  the two roots of the W-mass constraint with probability 1/2 each) and the score is exact:
  ``sum_i w_i |x_i - y| - 1/2 sum_ij w_i w_j |x_i - x_j|``.

Example:
    >>> import numpy as np
    >>> crps_ensemble(np.array([[3.0]]), np.array([1.0]))  # a point estimate: |x - y|
    array([2.])
    >>> crps_ensemble(np.array([[0.0, 2.0]]), np.array([0.0]), weights=np.array([[0.5, 0.5]]))
    array([0.5])
    >>> round(float(crps_gaussian(0.0, 0.0, 1.0)), 4)  # sigma (sqrt(2) - 1) / sqrt(pi)
    0.2337
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepflow.calibration._validation import as_numpy
from hepflow.errors import InputError

__all__ = ["crps_ensemble", "crps_gaussian", "energy_score"]

#: bound on the number of pairwise distances computed at once by :func:`energy_score`
_PAIR_BUDGET = 4_000_000


def _check(samples: Any, y: Any, weights: Any, *, multivariate: bool) -> tuple[np.ndarray, ...]:
    x = as_numpy(samples, name="samples")
    obs = as_numpy(y, name="y")
    want = "(n, k, d) and y (n, d)" if multivariate else "(n, k) and y (n,)"
    if (multivariate and (x.ndim != 3 or obs.ndim != 2)) or (
        not multivariate and (x.ndim != 2 or obs.ndim != 1)
    ):
        raise InputError(f"expected samples {want}, got samples {x.shape} and y {obs.shape}")
    if x.shape[0] != obs.shape[0] or (multivariate and x.shape[2] != obs.shape[1]):
        raise InputError(f"samples {x.shape} and y {obs.shape} do not match: expected samples {want}")
    if x.shape[1] < 1:
        raise InputError(f"samples {x.shape} have no ensemble member (k = 0)")
    for name, arr in (("samples", x), ("y", obs)):
        if bad := int(arr.size - np.count_nonzero(np.isfinite(arr))):
            raise InputError(f"{name} of shape {arr.shape} has {bad} non-finite values (NaN or inf)")
    if weights is None:
        return x, obs, None
    w = as_numpy(weights, name="weights")
    if w.shape != x.shape[:2]:
        raise InputError(f"weights {w.shape} must have the shape (n, k) = {x.shape[:2]} of the ensemble")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputError("weights must be finite and non-negative")
    total = w.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise InputError(f"weights of {int((total <= 0).sum())} events sum to zero")
    return x, obs, w / total


def crps_ensemble(samples: Any, y: Any, *, weights: Any = None) -> np.ndarray:
    """CRPS of each event's ensemble ``samples`` (n, k) at the observation ``y`` (n,).

    Without ``weights``: the fair estimator for k >= 2, |x - y| for k = 1 (a point estimate).
    With ``weights`` (n, k), non-negative (normalised per event): the exact CRPS of the mixture
    of point masses. Exact in O(k log k) per event (sorted members, no k x k matrix).

    Returns:
        (n,) scores, in the units of ``y``; lower is better.

    Example:
        >>> import numpy as np
        >>> crps_ensemble(np.array([[0.0, 2.0], [1.0, 1.0]]), np.array([1.0, 1.0]))
        array([0., 0.])
    """
    x, obs, w = _check(samples, y, weights, multivariate=False)
    k = x.shape[1]
    xs = np.sort(x, axis=1)
    if w is None:
        first = np.abs(x - obs[:, None]).mean(axis=1)
        if k == 1:
            return first
        # sum_{i,j} |x_i - x_j| = 2 sum_i (2 i - k + 1) x_(i), i = 0..k-1 over sorted members
        coef = 2.0 * np.arange(k) - k + 1.0
        pair_sum = 2.0 * (xs * coef).sum(axis=1)
        return first - pair_sum / (2.0 * k * (k - 1))
    order = np.argsort(x, axis=1)
    ws = np.take_along_axis(w, order, axis=1)
    first = (w * np.abs(x - obs[:, None])).sum(axis=1)
    below = np.cumsum(ws, axis=1) - ws  # weight of the members sorted before each one
    above = 1.0 - below - ws
    # sum_{i,j} w_i w_j |x_i - x_j| = 2 sum_i w_i x_(i) (W_below - W_above)
    pair_sum = 2.0 * (ws * xs * (below - above)).sum(axis=1)
    return first - 0.5 * pair_sum


def energy_score(samples: Any, y: Any, *, weights: Any = None) -> np.ndarray:
    """Energy score of each event's ensemble ``samples`` (n, k, d) at ``y`` (n, d), Euclidean norm.

    Estimators as :func:`crps_ensemble` (fair for k >= 2 samples; ||x - y|| for k = 1; exact
    with ``weights``). In one dimension it equals the CRPS. The pairwise distances are computed
    in batches of events (at most a few million at a time).

    Returns:
        (n,) scores, in the units of ``y``; lower is better.

    Example:
        >>> import numpy as np
        >>> energy_score(np.array([[[3.0, 4.0]]]), np.array([[0.0, 0.0]]))  # a point: ||x - y||
        array([5.])
    """
    x, obs, w = _check(samples, y, weights, multivariate=True)
    n, k, _ = x.shape
    first_terms = np.linalg.norm(x - obs[:, None, :], axis=2)
    out = np.empty(n)
    step = max(1, _PAIR_BUDGET // max(k * k, 1))
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        xb = x[sl]
        pair = np.linalg.norm(xb[:, :, None, :] - xb[:, None, :, :], axis=3)  # (b, k, k)
        if w is None:
            first = first_terms[sl].mean(axis=1)
            second = pair.sum(axis=(1, 2)) / (2.0 * k * (k - 1)) if k > 1 else 0.0
        else:
            wb = w[sl]
            first = (wb * first_terms[sl]).sum(axis=1)
            second = 0.5 * np.einsum("bi,bij,bj->b", wb, pair, wb)
        out[sl] = first - second
    return out


def crps_gaussian(y: Any, mu: Any, sigma: Any) -> np.ndarray:
    """Closed-form CRPS of a normal distribution N(mu, sigma^2) at ``y`` (broadcast arrays).

    ``sigma (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))`` with z = (y - mu) / sigma
    (Gneiting et al. 2005, MWR 133, 1098): the reference the ensemble estimators are tested on.

    Example:
        >>> round(float(crps_gaussian(1.0, 0.0, 1.0)), 4)
        0.6024
    """
    from scipy.stats import norm

    s = np.asarray(sigma, dtype=np.float64)
    if (s <= 0).any():
        raise InputError(f"sigma must be positive, got {sigma!r}")
    z = (np.asarray(y, dtype=np.float64) - np.asarray(mu, dtype=np.float64)) / s
    return s * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z) - 1.0 / np.sqrt(np.pi))
