"""Response matrix, efficiency and fake rate from simulated events that carry both levels.

Every simulated event has a particle-level value (when it passes the particle-level, fiducial,
selection) and a detector-level value (when it passes the detector-level selection). Events
passing both fill the migration matrix ``M[j, i]`` (detector bin j, particle bin i); events
passing only the particle level are *misses* (inefficiency), events passing only the detector
level are *fakes*. From these (weighted counts with their sums of squared weights, kept as
:class:`hist.Hist` with Weight storage while filling):

* ``truth[i] = sum_j M[j, i] + misses[i]``: the fiducial particle-level spectrum;
* ``efficiency[i] = sum_j M[j, i] / truth[i]``: probability to pass the detector level;
* ``matrix[j, i] = M[j, i] / truth[i]``: probability to be measured in bin j (sums to the
  efficiency over j);
* ``fake_fraction[j] = fakes[j] / reco[j]``, ``reco[j] = sum_i M[j, i] + fakes[j]``: the
  fraction of detector-level events in bin j without a particle-level counterpart.

:class:`FakeRate` is the fake fraction in any number of detector-level dimensions (the cINN
removes fakes with an event weight ``1 - f`` looked up in the bins of both observables).

Example:
    >>> truth = np.array([0.5, 1.5, 1.5, 0.5]); reco = np.array([0.5, 1.5, 0.5, 1.5])
    >>> r = build_response(truth, reco, truth_edges=[0, 1, 2], reco_edges=[0, 1, 2],
    ...                    passes_truth=np.array([True, True, True, False]),
    ...                    passes_reco=np.array([True, True, False, True]))
    >>> r.migration.tolist(), r.efficiency.tolist(), r.fake_fraction.tolist()
    ([[1.0, 0.0], [0.0, 1.0]], [1.0, 0.5], [0.0, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import hist
import numpy as np

from hepflow.errors import InputError
from hepflow.unfolding.binning import bin_index, check_edges, histogram_nd, poisson_fluctuate

__all__ = ["FakeRate", "Response", "build_response", "fake_rate"]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


@dataclass(frozen=True)
class Response:
    """Binned response of one observable (weighted counts and their sums of squared weights)."""

    truth_edges: np.ndarray
    reco_edges: np.ndarray
    migration: np.ndarray
    migration_var: np.ndarray
    misses: np.ndarray
    misses_var: np.ndarray
    fakes: np.ndarray
    fakes_var: np.ndarray

    def __post_init__(self) -> None:
        nt, nr = len(self.truth_edges) - 1, len(self.reco_edges) - 1
        shapes = {
            "migration": (self.migration.shape, (nr, nt)),
            "migration_var": (self.migration_var.shape, (nr, nt)),
            "misses": (self.misses.shape, (nt,)),
            "misses_var": (self.misses_var.shape, (nt,)),
            "fakes": (self.fakes.shape, (nr,)),
            "fakes_var": (self.fakes_var.shape, (nr,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise InputError(f"response {name} has shape {got}; the binning needs {want}")

    @classmethod
    def from_hists(cls, migration: hist.Hist, misses: hist.Hist, fakes: hist.Hist) -> Response:
        """From weighted histograms: migration (detector axis, particle axis), misses, fakes."""
        reco_edges, truth_edges = (np.asarray(a.edges, dtype=np.float64) for a in migration.axes)
        if not np.array_equal(np.asarray(misses.axes[0].edges), truth_edges):
            raise InputError("the misses histogram and the migration's particle axis have different bins")
        if not np.array_equal(np.asarray(fakes.axes[0].edges), reco_edges):
            raise InputError("the fakes histogram and the migration's detector axis have different bins")

        def var(h: hist.Hist) -> np.ndarray:
            v = h.variances()
            return h.values().copy() if v is None else np.asarray(v, dtype=np.float64)

        return cls(
            truth_edges=truth_edges,
            reco_edges=reco_edges,
            migration=np.asarray(migration.values(), dtype=np.float64),
            migration_var=var(migration),
            misses=np.asarray(misses.values(), dtype=np.float64),
            misses_var=var(misses),
            fakes=np.asarray(fakes.values(), dtype=np.float64),
            fakes_var=var(fakes),
        )

    @property
    def matched_truth(self) -> np.ndarray:
        """Particle-level counts of the events passing both levels."""
        return self.migration.sum(axis=0)

    @property
    def matched_reco(self) -> np.ndarray:
        """Detector-level counts of the events passing both levels."""
        return self.migration.sum(axis=1)

    @property
    def truth(self) -> np.ndarray:
        """The fiducial particle-level spectrum of the simulation."""
        return self.matched_truth + self.misses

    @property
    def reco(self) -> np.ndarray:
        """The detector-level spectrum of the simulation (fakes included)."""
        return self.matched_reco + self.fakes

    @property
    def efficiency(self) -> np.ndarray:
        """Per particle-level bin, the fraction of fiducial events passing the detector level."""
        return _ratio(self.matched_truth, self.truth)

    @property
    def fake_fraction(self) -> np.ndarray:
        """Per detector-level bin, the fraction of events failing the particle level."""
        return _ratio(self.fakes, self.reco)

    @property
    def matrix(self) -> np.ndarray:
        """``P(detector bin j and passing | particle bin i)``, shape (n_reco, n_truth)."""
        return _ratio(self.migration, self.truth[None, :])

    def fluctuate(self, rng: np.random.Generator) -> Response:
        """A replica with every count fluctuated within its simulation statistics."""
        return replace(
            self,
            migration=poisson_fluctuate(self.migration, self.migration_var, rng),
            misses=poisson_fluctuate(self.misses, self.misses_var, rng),
            fakes=poisson_fluctuate(self.fakes, self.fakes_var, rng),
        )


def _check_level(values: np.ndarray, passes: np.ndarray, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(passes)
    if v.shape != (n,) or p.shape != (n,):
        raise InputError(f"{name}: values {v.shape} and pass flags {p.shape} need shape ({n},)")
    if p.dtype != np.bool_:
        raise InputError(f"{name}: pass flags must be booleans, got {p.dtype}")
    bad = p & ~np.isfinite(v)
    if bad.any():
        raise InputError(f"{name}: {int(bad.sum())} event(s) pass the selection with a non-finite value")
    return v, p


def build_response(
    truth_values: np.ndarray,
    reco_values: np.ndarray,
    *,
    truth_edges: Sequence[float] | np.ndarray,
    reco_edges: Sequence[float] | np.ndarray,
    passes_truth: np.ndarray,
    passes_reco: np.ndarray,
    weights: np.ndarray | None = None,
) -> Response:
    """Fill the response of one observable from simulated events.

    Args:
        truth_values, reco_values: the observable at particle and detector level, one value per
            event (anything, e.g. NaN, where the level is not passed).
        truth_edges, reco_edges: bin edges (tails go to the edge bins).
        passes_truth, passes_reco: the two selections, booleans per event.
        weights: event weights (default 1).
    """
    n = len(np.asarray(truth_values))
    tv, pt = _check_level(truth_values, passes_truth, n, "particle level")
    rv, pr = _check_level(reco_values, passes_reco, n, "detector level")
    te, re = check_edges(truth_edges, "truth"), check_edges(reco_edges, "reco")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights have shape {w.shape}; expected ({n},)")
    both = pt & pr
    migration = histogram_nd([rv[both], tv[both]], [re, te], weights=w[both])
    misses = histogram_nd([tv[pt & ~pr]], [te], weights=w[pt & ~pr])
    fakes = histogram_nd([rv[pr & ~pt]], [re], weights=w[pr & ~pt])
    return Response.from_hists(migration, misses, fakes)


@dataclass(frozen=True)
class FakeRate:
    """Fraction of detector-level events without a particle-level counterpart, in N-D bins."""

    edges: tuple[np.ndarray, ...]
    fakes: np.ndarray
    fakes_var: np.ndarray
    matched: np.ndarray
    matched_var: np.ndarray

    @property
    def fraction(self) -> np.ndarray:
        """The fake fraction per bin (0 in empty bins)."""
        return _ratio(self.fakes, self.fakes + self.matched)

    def lookup(self, values: Sequence[np.ndarray]) -> np.ndarray:
        """The fake fraction of the bin of every event (``values``: one array per dimension)."""
        if len(values) != len(self.edges):
            raise InputError(f"{len(values)} value arrays for a {len(self.edges)}-dimensional fake rate")
        index = tuple(bin_index(v, e) for v, e in zip(values, self.edges, strict=True))
        return self.fraction[index]

    def fluctuate(self, rng: np.random.Generator) -> FakeRate:
        """A replica with fakes and matched counts fluctuated within the simulation statistics."""
        return replace(
            self,
            fakes=poisson_fluctuate(self.fakes, self.fakes_var, rng),
            matched=poisson_fluctuate(self.matched, self.matched_var, rng),
        )


def fake_rate(
    reco_values: Sequence[np.ndarray],
    edges: Sequence[Sequence[float] | np.ndarray],
    *,
    passes_truth: np.ndarray,
    passes_reco: np.ndarray,
    weights: np.ndarray | None = None,
) -> FakeRate:
    """The fake fraction in the bins of one or more detector-level observables."""
    pr = np.asarray(passes_reco, dtype=bool)
    pt = np.asarray(passes_truth, dtype=bool)
    n = len(pr)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    checked = [check_edges(e, f"reco[{i}]") for i, e in enumerate(edges)]
    values = [_check_level(v, pr, n, f"detector level [{i}]")[0] for i, v in enumerate(reco_values)]
    fake, matched = pr & ~pt, pr & pt
    hf = histogram_nd([v[fake] for v in values], checked, weights=w[fake])
    hm = histogram_nd([v[matched] for v in values], checked, weights=w[matched])
    return FakeRate(
        edges=tuple(checked),
        fakes=hf.values(),
        fakes_var=hf.variances(),
        matched=hm.values(),
        matched_var=hm.variances(),
    )
