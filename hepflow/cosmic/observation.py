"""Binned cosmic-ray observations: an energy spectrum and Xmax histograms per energy bin.

The binning follows the published Auger data (:mod:`hepflow.cosmic.auger`): spectrum bins of
0.1 in lg E from ``lg_e_min`` (default 18.7) to 20.2 (2020 data), Xmax energy bins of the 2014
release from ``lg_e_min`` to 20.0 (0.1 wide, the last 19.5 .. 20.0), Xmax bins of 20 g/cm^2 from
0 to 2000 g/cm^2.

Example:
    >>> obs = Observation.from_auger()
    >>> obs.spectrum.shape, obs.xmax.shape
    ((15,), (9, 100))
    >>> int(obs.n_spectrum), obs.n_xmax.astype(int).tolist()[:3]
    (55730, [413, 297, 230])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from hepflow.cosmic.auger import load_spectrum, load_xmax
from hepflow.errors import ConfigError, InputError

__all__ = ["Binning", "Observation", "check_counts"]

_TOL = 1e-6


def _select_from(edges: np.ndarray, lg_e_min: float, what: str) -> np.ndarray:
    hit = np.flatnonzero(np.abs(edges - lg_e_min) < _TOL)
    if hit.size == 0 or hit[0] == edges.size - 1:
        raise ConfigError(
            f"lg_e_min={lg_e_min:g} is not a lower bin edge of the {what}; "
            f"choose one of {', '.join(f'{e:g}' for e in edges[:-1])}"
        )
    return edges[hit[0] :]


@dataclass(frozen=True, eq=False)
class Binning:
    """Bin edges shared by observations and the forward model.

    Attributes:
        spectrum_edges: (n_E + 1,) lg(E/eV) edges of the spectrum.
        xmax_energy_edges: (n_M + 1,) lg(E/eV) edges of the Xmax energy bins.
        xmax_edges: (n_X + 1,) Xmax edges in g/cm^2.
    """

    spectrum_edges: np.ndarray
    xmax_energy_edges: np.ndarray
    xmax_edges: np.ndarray

    def __post_init__(self) -> None:
        for name in ("spectrum_edges", "xmax_energy_edges", "xmax_edges"):
            e = np.array(getattr(self, name), dtype=float)
            if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
                raise ConfigError(f"binning {name} must be increasing 1-d edges, got {e!r}")
            e.flags.writeable = False
            object.__setattr__(self, name, e)

    @classmethod
    def auger(cls, *, lg_e_min: float = 18.7) -> Binning:
        """The published Auger binning above ``lg_e_min`` (18.5 .. 19.5 in steps of 0.1)."""
        if not 18.5 - _TOL <= lg_e_min <= 19.5 + _TOL:
            raise ConfigError(
                f"lg_e_min={lg_e_min:g} is outside 18.5 .. 19.5 (the CRPropa tables start at 10^18.5 eV "
                "and the last Xmax energy bin starts at 10^19.5 eV)"
            )
        xmax = load_xmax()
        return cls(
            spectrum_edges=_select_from(load_spectrum().lg_e_edges, lg_e_min, "Auger 2020 spectrum"),
            xmax_energy_edges=_select_from(xmax.lg_e_edges, lg_e_min, "Auger 2014 Xmax data"),
            xmax_edges=xmax.xmax_edges,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_E spectrum bins, n_M Xmax energy bins, n_X Xmax bins)."""
        return (self.spectrum_edges.size - 1, self.xmax_energy_edges.size - 1, self.xmax_edges.size - 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Binning):
            return NotImplemented
        return all(
            a.shape == b.shape and np.allclose(a, b, rtol=0.0, atol=_TOL)
            for a, b in (
                (self.spectrum_edges, other.spectrum_edges),
                (self.xmax_energy_edges, other.xmax_energy_edges),
                (self.xmax_edges, other.xmax_edges),
            )
        )

    __hash__ = None  # type: ignore[assignment]


def check_counts(binning: Binning, spectrum: np.ndarray, xmax: np.ndarray, *, source: str = "") -> None:
    """Refuse NaN, infinite or negative counts, naming ``source``, the row and the bin.

    ``spectrum`` is (n_E,) or (n, n_E), ``xmax`` (n_M, n_X) or (n, n_M, n_X) in ``binning``.

    Example:
        >>> b = Binning.auger()
        >>> spectrum = np.ones(b.shape[0]); spectrum[3] = -1
        >>> check_counts(b, spectrum, np.ones(b.shape[1:]), source="pe.root entry 0")
        Traceback (most recent call last):
        ...
        hepflow.errors.InputError: pe.root entry 0: spectrum count -1 in bin 3 (lg E 19 .. 19.1); ...
    """
    axes = {
        "spectrum": (("lg E", binning.spectrum_edges),),
        "Xmax": (("lg E", binning.xmax_energy_edges), ("Xmax", binning.xmax_edges)),
    }
    for (name, bins), counts in zip(axes.items(), (spectrum, xmax), strict=True):
        a = np.asarray(counts, dtype=float)
        bad = ~np.isfinite(a) | (a < 0)
        if not bad.any():
            continue
        index = np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)
        row, cell = index[: a.ndim - len(bins)], index[a.ndim - len(bins) :]
        where = ", ".join(
            f"{label} {e[i]:g} .. {e[i + 1]:g}" for (label, e), i in zip(bins, cell, strict=True)
        )
        n_bad = int(bad.sum())
        raise InputError(
            f"{source + ': ' if source else ''}{name} count {a[index]:g} in "
            f"{f'row {row[0]}, ' if row else ''}bin {', '.join(map(str, cell))} ({where}); "
            f"counts must be finite and >= 0 ({n_bad} bad bin{'s' if n_bad > 1 else ''})"
        )


@dataclass(frozen=True, eq=False)
class Observation:
    """Spectrum counts (n_E,) and Xmax histograms (n_M, n_X) in a :class:`Binning`.

    Counts may be non-integer (e.g. an Asimov data set of expected counts) but not negative.
    ``source`` says where they come from (a file, an entry), for error messages.
    """

    binning: Binning
    spectrum: np.ndarray
    xmax: np.ndarray
    source: str = field(default="observation", repr=False)

    def __post_init__(self) -> None:
        n_e, n_m, n_x = self.binning.shape
        for name, shape in (("spectrum", (n_e,)), ("xmax", (n_m, n_x))):
            a = np.array(getattr(self, name), dtype=float)
            if a.shape != shape:
                raise InputError(
                    f"{self.source}: {name} must have shape {shape} for its binning, got {a.shape}"
                )
            a.flags.writeable = False
            object.__setattr__(self, name, a)
        check_counts(self.binning, self.spectrum, self.xmax, source=self.source)

    @property
    def n_spectrum(self) -> float:
        """Total number of events in the spectrum."""
        return float(self.spectrum.sum())

    @property
    def n_xmax(self) -> np.ndarray:
        """(n_M,) numbers of Xmax events per energy bin."""
        return self.xmax.sum(axis=1)

    def digest(self) -> str:
        """SHA-256 of the counts (as float64), to recognise the same observation in a saved run.

        >>> b = Binning.auger()
        >>> a = Observation(b, np.ones(b.shape[0]), np.ones(b.shape[1:]))
        >>> a.digest() == Observation(b, np.ones(b.shape[0]), np.ones(b.shape[1:])).digest()
        True
        >>> a.digest() == Observation(b, 2 * np.ones(b.shape[0]), np.ones(b.shape[1:])).digest()
        False
        """
        h = hashlib.sha256()
        for a in (self.spectrum, self.xmax):
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        return h.hexdigest()

    @classmethod
    def from_auger(cls, *, lg_e_min: float = 18.7) -> Observation:
        """The published Auger data (spectrum 2020, Xmax 2014) above ``lg_e_min``."""
        binning = Binning.auger(lg_e_min=lg_e_min)
        spec, xmax = load_spectrum(), load_xmax()
        n_e, n_m, _ = binning.shape
        return cls(binning, spec.counts[-n_e:], xmax.counts[-n_m:])

    @classmethod
    def from_showers(
        cls,
        lg_e: np.ndarray,
        xmax: np.ndarray | None = None,
        *,
        binning: Binning | None = None,
        source: str = "showers",
    ) -> Observation:
        """Bin a list of showers: every shower enters the spectrum; those with a finite Xmax the histograms.

        Showers outside the bins are ignored; ``xmax`` may hold NaN for showers without an Xmax
        measurement (or be omitted).

        Example:
            >>> obs = Observation.from_showers([18.75, 19.01, 19.6], [750.0, np.nan, 705.0])
            >>> obs.spectrum[[0, 3, 9]].tolist(), float(obs.xmax.sum())
            ([1.0, 1.0, 1.0], 2.0)
        """
        b = binning if binning is not None else Binning.auger()
        e = np.asarray(lg_e, dtype=float).ravel()
        x = np.full_like(e, np.nan) if xmax is None else np.asarray(xmax, dtype=float).ravel()
        if x.shape != e.shape:
            raise InputError(f"{source}: lg_e has {e.size} entries but xmax has {x.size}")
        if np.any(~np.isfinite(e)):
            first = int(np.flatnonzero(~np.isfinite(e))[0])
            raise InputError(f"{source}: lg_e must be finite, shower {first} has {e[first]}")
        spectrum, _ = np.histogram(e, bins=b.spectrum_edges)
        has_x = np.isfinite(x)
        hist, _, _ = np.histogram2d(e[has_x], x[has_x], bins=(b.xmax_energy_edges, b.xmax_edges))
        return cls(b, spectrum.astype(float), hist, source=source)
