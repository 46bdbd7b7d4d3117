"""Importance weights for posterior samples of a flow, when the likelihood can be evaluated.

A cINN posterior ``q(theta | x)`` is fast but approximate (the amortisation gap of a network
trained over the whole prior). Where the likelihood ``L(x | theta)`` and the prior ``pi(theta)``
can be evaluated, samples from ``q`` with self-normalised weights

    w_i ∝ L(x | theta_i) pi(theta_i) / q(theta_i | x)

are samples of the exact posterior (neural importance sampling), and the effective sample size
``ESS = (sum w)^2 / sum w^2`` says how good the proposal was: ``ESS / n`` near one for a
posterior the flow got right, near ``1 / n`` where it missed (for instance for an observation
that the simulator cannot reproduce). The densities must be with respect to the same measure
(for the cosmic-ray fractions: Lebesgue on the first K - 1 components, as
:class:`hepflow.flows.constraints.Simplex` and :meth:`hepflow.cosmic.Prior.log_prob` both use).

Example:
    >>> import numpy as np
    >>> from scipy import stats
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(0.0, 2.0, 20000)                      # proposal N(0, 2)
    >>> iw = importance_weights(stats.norm(1.0, 1.0).logpdf(x), stats.norm(0.0, 2.0).logpdf(x))
    >>> round(float(np.sum(iw.weights * x)), 1), 0.3 < iw.efficiency < 0.7
    (1.0, True)
    >>> round(float(x[iw.resample(rng=rng)].mean()), 1)     # unweighted draws of the target
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from hepflow.errors import InputError

__all__ = ["ImportanceWeights", "importance_weights"]


@dataclass(frozen=True)
class ImportanceWeights:
    """Self-normalised importance weights of ``n`` samples.

    Attributes:
        log_weights: (n,) ``log target - log proposal`` (unnormalised; ``-inf`` where the target
            vanishes).
        weights: (n,) normalised weights (they sum to one).
    """

    log_weights: np.ndarray
    weights: np.ndarray

    @property
    def ess(self) -> float:
        """Effective sample size ``1 / sum(weights^2)``."""
        return float(1.0 / np.sum(self.weights * self.weights))

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.weights.size)

    @property
    def efficiency(self) -> float:
        """``ess / n``: 1 for a perfect proposal."""
        return self.ess / self.n

    def resample(self, n: int | None = None, *, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Indices of ``n`` (default: all) draws with replacement in proportion to the weights.

        ``samples[iw.resample()]`` are unweighted draws of the target (sampling-importance
        resampling); repeated indices are expected where few samples carry the weight.
        """
        size = self.n if n is None else int(n)
        if size < 1:
            raise InputError(f"resample: n must be >= 1, got {size}")
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return gen.choice(self.n, size=size, p=self.weights)


def importance_weights(log_target: Any, log_proposal: Any) -> ImportanceWeights:
    """Weights ``target / proposal`` of samples drawn from the proposal, normalised to one.

    Args:
        log_target: (n,) log of the unnormalised target density at the samples (e.g. log
            likelihood + log prior); ``-inf`` where it vanishes, never NaN or ``+inf``.
        log_proposal: (n,) log density of the proposal that drew them (finite).

    Raises :class:`~hepflow.errors.InputError` for mismatched shapes, NaN or infinite values
    where they cannot occur, and when every sample has zero target density.
    """
    lt = np.asarray(log_target, dtype=np.float64)
    lq = np.asarray(log_proposal, dtype=np.float64)
    if lt.ndim != 1 or lt.shape != lq.shape or lt.size == 0:
        raise InputError(
            f"importance_weights: log_target {lt.shape} and log_proposal {lq.shape} must have one "
            "equal, non-empty dimension"
        )
    bad = int((np.isnan(lt) | np.isposinf(lt)).sum())
    if bad:
        raise InputError(f"importance_weights: log_target has {bad} NaN/+inf values")
    if not np.isfinite(lq).all():
        raise InputError(
            f"importance_weights: log_proposal has {int((~np.isfinite(lq)).sum())} non-finite values"
        )
    log_w = lt - lq
    if np.isneginf(log_w).all():
        raise InputError("importance_weights: the target density is zero at every sample")
    w = np.exp(log_w - logsumexp(log_w))
    w /= w.sum()
    return ImportanceWeights(log_weights=log_w, weights=w)
