"""Is one method's score really lower than another's? The paired bootstrap of a ratio.

Two methods scored on the *same* events are correlated: an event that is hard for one is usually
hard for the other. Their difference is therefore known far better than two independent
uncertainties suggest. :func:`paired_ratio` resamples the events (with replacement), recomputes
both scores on every resample, and returns the ratio ``a / b`` with the standard deviation of
``log(a / b)`` over the resamples: the relative uncertainty of the ratio, correlation included.
It works for any statistic of the events, a mean score (CRPS, energy score), a width (IQR, RMS of
residuals) or a distance between spectra (Wasserstein), because the statistic is a callable of the
resampled event indices.

A difference is *significant* when ``|log(a / b)| > 2 se`` (:meth:`PairedRatio.significant`).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> hard = rng.exponential(10.0, 400)            # per-event difficulty shared by both methods
    >>> a, b = hard * 0.9, hard * 1.0 + rng.normal(0, 0.5, 400)
    >>> r = paired_ratio(lambda i: (a[i].mean(), b[i].mean()), 400, seed=0)
    >>> round(r.ratio, 2), r.significant()
    (0.9, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hepflow.errors import InputError

__all__ = ["PairedRatio", "paired_ratio"]


@dataclass(frozen=True)
class PairedRatio:
    """``ratio = a / b`` on all events and ``se``, the bootstrap standard deviation of ``log(a / b)``."""

    ratio: float
    se: float

    def significant(self, *, sigmas: float = 2.0) -> bool:
        """Whether ``|log ratio|`` exceeds ``sigmas`` times its standard error (False when undefined)."""
        if not (math.isfinite(self.ratio) and self.ratio > 0 and math.isfinite(self.se)):
            return False
        return abs(math.log(self.ratio)) > sigmas * self.se


def paired_ratio(
    statistic: Callable[[np.ndarray], tuple[float, float]],
    n_events: int,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> PairedRatio:
    """The ratio of two methods' statistics on the same events and its paired bootstrap error.

    Args:
        statistic: maps an array of event indices to the two statistics ``(a, b)`` computed on
            those events (both positive: scores, widths, distances).
        n_events: the number of events; the full sample is ``np.arange(n_events)``.
        n_boot: bootstrap resamples.
        seed: seed of the resampling (the result is reproducible).

    Returns:
        :class:`PairedRatio`; ``se`` is ``nan`` when the ratio is undefined on the full sample or
        on more than a tenth of the resamples (too few events).

    Example:
        >>> import numpy as np
        >>> x = np.arange(1.0, 101.0)
        >>> paired_ratio(lambda i: (x[i].mean(), x[i].mean()), 100).se  # identical methods
        0.0
    """
    if n_events < 1:
        raise InputError(f"paired_ratio needs at least one event, got n_events={n_events}")
    if n_boot < 2:
        raise InputError(f"paired_ratio needs n_boot >= 2, got {n_boot}")
    a, b = statistic(np.arange(n_events))
    ratio = float(a) / float(b) if b > 0 and a > 0 else float("nan")
    if not math.isfinite(ratio):
        return PairedRatio(ratio, float("nan"))
    rng = np.random.default_rng(seed)
    logs = []
    for _ in range(n_boot):
        ra, rb = statistic(rng.integers(0, n_events, n_events))
        if ra > 0 and rb > 0 and math.isfinite(ra) and math.isfinite(rb):
            logs.append(math.log(ra / rb))
    if len(logs) < 0.9 * n_boot:
        return PairedRatio(ratio, float("nan"))
    return PairedRatio(ratio, float(np.std(logs, ddof=1)))
