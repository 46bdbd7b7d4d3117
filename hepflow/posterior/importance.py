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

:class:`ImportancePosterior` puts the weights behind the posterior interface: the draws of a
flow posterior weighted with a target density per observation, and resampled by ``sample``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from hepflow.errors import InputError, ModelError
from hepflow.posterior.base import Posterior

__all__ = ["ImportancePosterior", "ImportanceWeights", "importance_weights"]


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


class ImportancePosterior(Posterior):
    """The draws of ``base`` weighted by ``target / base`` for one observation at a time.

    Arguments:
        base: a posterior whose density comes with its draws or can be computed.
        log_target: ``(theta (n, theta_dim), observation) -> (n,)``, the log of the unnormalised
            target density (log likelihood + log prior) of one observation.

    :meth:`sample_weighted` gives the draws, their base density and the weights;
    :meth:`sample` resamples them to unweighted draws of the target (one observation or a
    sequence of them); the target's density is unnormalised, so :meth:`log_prob` is refused.

    Example:
        >>> import numpy as np
        >>> from hepflow.flows.inn import ConditionalINN
        >>> from hepflow.posterior.base import FlowPosterior
        >>> base = FlowPosterior(ConditionalINN(1, 1, depth=2, width=8, seed=0).eval())
        >>> target = ImportancePosterior(base, lambda t, x: -0.5 * (t[:, 0] - 1.0) ** 2)
        >>> draws, log_q, iw = target.sample_weighted(1000, np.zeros(1, np.float32), seed=0)
        >>> draws.shape, log_q.shape, round(float(iw.weights.sum()), 6)
        ((1000, 1), (1000,), 1.0)
    """

    def __init__(self, base: Posterior, log_target: Callable[[np.ndarray, Any], np.ndarray]) -> None:
        self.base = base
        self.log_target = log_target
        self.parameters = base.parameters
        self.metadata = base.metadata

    def sample_weighted(
        self, n: int, observation: Any, *, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, ImportanceWeights]:
        """``(draws (n, theta_dim), log q (n,), weights)`` of one observation."""
        draws, log_q = self.base.sample(n, [observation], seed=seed, log_prob=True)
        if log_q is None:  # pragma: no cover - every posterior returns it when asked
            log_q = self.base.log_prob(draws, [observation])
        return draws[0], log_q[0], self.weights(draws[0], log_q[0], observation)

    def weights(self, draws: np.ndarray, log_q: np.ndarray, observation: Any) -> ImportanceWeights:
        """The weights of draws ``(n, theta_dim)`` of ``base`` with density ``log_q (n,)``."""
        with np.errstate(divide="ignore"):
            return importance_weights(self.log_target(draws, observation), log_q)

    def sample(
        self,
        n: int,
        x: Any,
        *,
        seed: int | None = None,
        generator: Any = None,
        log_prob: bool = False,
    ) -> tuple[np.ndarray, None]:
        """Resampled draws ``(n_obs, n, theta_dim)`` of the target for a sequence of observations."""
        if log_prob:
            raise ModelError("an importance-weighted posterior has an unnormalised density")
        out = []
        for i, obs in enumerate(x):
            s = None if seed is None else seed + i
            draws, _, iw = self.sample_weighted(n, obs, seed=s)
            out.append(draws[iw.resample(rng=s)])
        return np.stack(out), None

    def log_prob(self, theta: Any, x: Any) -> np.ndarray:
        """Refused: the target density is known up to its normalisation only."""
        raise ModelError("an importance-weighted posterior has an unnormalised density")
