"""Bin edges, weighted histograms and the statistical fluctuation of weighted counts.

Values outside the edges are put into the first or last bin (no under- or overflow bins): the
unfolded spectra are reported on a finite range whose edge bins include the tails, so that no
event is lost between the levels because it fell outside the range at one of them.

Example:
    >>> edges = check_edges([0.0, 10.0, 20.0], "x")
    >>> sumw, sumw2 = histogram(np.array([-5.0, 5.0, 15.0, 99.0]), edges, weights=np.array([1, 1, 2, 1.0]))
    >>> sumw.tolist(), sumw2.tolist()
    ([2.0, 3.0], [2.0, 5.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import hist
import numpy as np

from hepflow.errors import ConfigError, InputError

__all__ = ["bin_index", "check_edges", "clip_into", "histogram", "histogram_nd", "poisson_fluctuate"]


def check_edges(edges: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """Bin edges as a float64 array; at least one bin, finite and strictly increasing."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2:
        raise ConfigError(f"binning.{name}: need at least two edges, got {list(np.atleast_1d(e))}")
    if not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
        raise ConfigError(f"binning.{name}: edges must be finite and strictly increasing, got {e.tolist()}")
    return e


def clip_into(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``values`` clipped into ``[edges[0], edges[-1])`` (tails go to the edge bins)."""
    return np.clip(np.asarray(values, dtype=np.float64), edges[0], np.nextafter(edges[-1], -np.inf))


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of every value (0 to ``len(edges) - 2``), tails in the edge bins; NaN is refused."""
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).any():
        raise InputError(f"cannot bin {int(np.isnan(v).sum())} NaN value(s)")
    return np.searchsorted(edges, clip_into(v, edges), side="right") - 1


def _weights(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return np.ones(len(values))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(values),):
        raise InputError(f"weights have shape {w.shape}; expected ({len(values)},)")
    return w


def histogram(
    values: np.ndarray, edges: np.ndarray, *, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of weights and sum of squared weights per bin (a :class:`hist.Hist` with Weight storage)."""
    h = histogram_nd([values], [edges], weights=weights)
    return h.values(), h.variances()


def histogram_nd(
    values: Sequence[np.ndarray], edges: Sequence[np.ndarray], *, weights: np.ndarray | None = None
) -> hist.Hist:
    """A weighted :class:`hist.Hist` over one axis per ``values`` entry (tails in the edge bins)."""
    if len(values) != len(edges) or not values:
        raise InputError(f"{len(values)} value arrays for {len(edges)} binnings")
    n = len(values[0])
    for v in values:
        if np.shape(v) != (n,):
            raise InputError(f"value arrays of different lengths: {[np.shape(v) for v in values]}")
        if np.isnan(np.asarray(v, dtype=np.float64)).any():
            raise InputError(f"cannot histogram {int(np.isnan(np.asarray(v, float)).sum())} NaN value(s)")
    axes = [hist.axis.Variable(e, name=f"x{i}", underflow=False, overflow=False) for i, e in enumerate(edges)]
    h = hist.Hist(*axes, storage=hist.storage.Weight())
    h.fill(
        *[clip_into(v, e) for v, e in zip(values, edges, strict=True)], weight=_weights(values[0], weights)
    )
    return h


def poisson_fluctuate(sumw: np.ndarray, sumw2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A statistical replica of weighted counts: scaled Poisson with the same mean and variance.

    A bin with sum of weights ``s`` and sum of squared weights ``v`` holds ``n = s^2 / v``
    effective events of weight ``v / s``; the replica is ``Poisson(n) * v / s`` (for unit weights
    plain Poisson). Empty bins stay empty.
    """
    s = np.asarray(sumw, dtype=np.float64)
    v = np.asarray(sumw2, dtype=np.float64)
    filled = (s > 0) & (v > 0)
    n_eff = np.where(filled, s * s / np.where(filled, v, 1.0), 0.0)
    scale = np.where(filled, v / np.where(filled, s, 1.0), 0.0)
    return np.where(filled, rng.poisson(n_eff) * scale, s)
