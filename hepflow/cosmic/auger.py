"""Published Pierre Auger Observatory data shipped in the installed astrotools package.

* Energy spectrum 2020 (``data/auger_spectrum_2020.txt``; PRL 125 (2020) 121106 / PRD 102 (2020)
  062005, ICRC 2019 data set): 18 bins of 0.1 in lg E from 18.4 to 20.2 with raw counts, exposure
  (60425.7 km^2 sr yr), flux and its statistical errors and the unfolding correction
  ``c = J / (N / (exposure dE))``.
* Xmax 2014 (``data/xmax/``; Auger Collaboration, PRD 90 (2014) 122005, arXiv:1409.4809):
  18 energy bins (lg E 17.8 .. 19.5 in 0.1, then 19.5 .. 20.0), each a histogram of 100 Xmax bins
  of 20 g/cm^2 from 0 to 2000 g/cm^2; per bin the resolution (double Gaussian) and the relative
  acceptance as a function of *true* Xmax (see ``data/xmax/README``).

The data vintages differ (spectrum 2020, Xmax 2014).

Example:
    >>> spec = load_spectrum()
    >>> spec.counts.shape, spec.lg_e_edges[[0, -1]]
    ((18,), array([18.4, 20.2]))
    >>> load_xmax().counts.shape
    (18, 100)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import special

from hepflow.cosmic.tables import astrotools_data_dir
from hepflow.errors import InputError

__all__ = [
    "AugerSpectrum",
    "AugerXmax",
    "load_spectrum",
    "load_xmax",
    "xmax_acceptance",
    "xmax_resolution_matrix",
]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=float)
    a.flags.writeable = False
    return a


def _read(relative: str, *, columns: int) -> np.ndarray:
    path: Path = astrotools_data_dir() / "data" / relative
    try:
        table = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read Auger data file {path}: {err}") from err
    if table.shape[1] != columns:
        raise InputError(f"Auger data file {path} has {table.shape[1]} columns, expected {columns}")
    return table


@dataclass(frozen=True, eq=False)
class AugerSpectrum:
    """Auger combined energy spectrum 2020 (per energy bin).

    Attributes:
        lg_e_edges: (n + 1,) lg(E/eV) edges.
        counts: (n,) raw numbers of events.
        exposure: (n,) exposure in km^2 sr yr.
        flux: (n,) unfolded flux J in km^-2 sr^-1 yr^-1 eV^-1; ``flux_low``/``flux_high`` its
            lower and upper statistical errors.
        unfolding: (n,) unfolding correction c = J dE exposure / N.
    """

    lg_e_edges: np.ndarray
    counts: np.ndarray
    exposure: np.ndarray
    flux: np.ndarray
    flux_low: np.ndarray
    flux_high: np.ndarray
    unfolding: np.ndarray

    @property
    def effective_exposure(self) -> np.ndarray:
        """Exposure / unfolding correction: expected raw counts = true flux x dE x this."""
        return self.exposure / self.unfolding


@functools.lru_cache(maxsize=1)
def load_spectrum() -> AugerSpectrum:
    """Read ``auger_spectrum_2020.txt`` from the installed astrotools package."""
    t = _read("auger_spectrum_2020.txt", columns=9)
    centre, half = t[:, 0], t[:, 1]
    edges = np.round(np.append(centre - half, centre[-1] + half[-1]), 6)
    if not np.allclose(centre[1:] - half[1:], centre[:-1] + half[:-1]):
        raise InputError("auger_spectrum_2020.txt: energy bins are not contiguous")
    return AugerSpectrum(
        lg_e_edges=_frozen(edges),
        counts=_frozen(t[:, 2]),
        exposure=_frozen(t[:, 3]),
        flux=_frozen(t[:, 4]),
        flux_low=_frozen(t[:, 5]),
        flux_high=_frozen(t[:, 6]),
        unfolding=_frozen(t[:, 7]),
    )


@dataclass(frozen=True, eq=False)
class AugerXmax:
    """Auger Xmax distributions 2014 with their detector response (per energy bin).

    Attributes:
        lg_e_edges: (19,) lg(E/eV) edges of the 18 energy bins.
        xmax_edges: (101,) Xmax edges in g/cm^2.
        counts: (18, 100) events per Xmax bin.
        n_events: (18,) events per energy bin.
        resolution: (18, 3) ``sigma1, sigma2`` [g/cm^2] and ``k`` of
            ``k G(0, sigma1) + (1 - k) G(0, sigma2)``.
        resolution_errors: (18, 2) systematic errors of ``sigma1, sigma2``.
        acceptance: (18, 4) ``x1, x2, l1, l2`` [g/cm^2] of :func:`xmax_acceptance`.
        acceptance_errors: (18, 4) their uncertainties.
    """

    lg_e_edges: np.ndarray
    xmax_edges: np.ndarray
    counts: np.ndarray
    n_events: np.ndarray
    resolution: np.ndarray
    resolution_errors: np.ndarray
    acceptance: np.ndarray
    acceptance_errors: np.ndarray


@functools.lru_cache(maxsize=1)
def load_xmax() -> AugerXmax:
    """Read ``xmax/{xmaxHistograms,resolution,acceptance}.txt`` from the installed astrotools."""
    h = _read("xmax/xmaxHistograms.txt", columns=107)
    res = _read("xmax/resolution.txt", columns=8)
    acc = _read("xmax/acceptance.txt", columns=11)
    n_bins, x_lo, x_hi = h[0, 4:7]
    if not (np.all(h[:, 4:7] == h[0, 4:7]) and int(n_bins) == 100):
        raise InputError("xmaxHistograms.txt: the Xmax binning differs between energy bins")
    if not (np.array_equal(h[:, 1:3], res[:, 1:3]) and np.array_equal(h[:, 1:3], acc[:, 1:3])):
        raise InputError("xmax data files: histogram, resolution and acceptance energy bins differ")
    if not np.array_equal(h[:, 7:].sum(axis=1), h[:, 3]):
        raise InputError("xmaxHistograms.txt: histogram sums differ from the numbers of events")
    return AugerXmax(
        lg_e_edges=_frozen(np.append(h[:, 1], h[-1, 2])),
        xmax_edges=_frozen(np.linspace(x_lo, x_hi, int(n_bins) + 1)),
        counts=_frozen(h[:, 7:]),
        n_events=_frozen(h[:, 3]),
        resolution=_frozen(res[:, [3, 5, 7]]),
        resolution_errors=_frozen(res[:, [4, 6]]),
        acceptance=_frozen(acc[:, [3, 5, 7, 9]]),
        acceptance_errors=_frozen(acc[:, [4, 6, 8, 10]]),
    )


def xmax_acceptance(x: np.ndarray, x1: float, x2: float, l1: float, l2: float) -> np.ndarray:
    """Relative acceptance vs true Xmax: exp((X - x1)/l1) below x1, 1 up to x2, exp(-(X - x2)/l2) above.

    Example:
        >>> xmax_acceptance(np.array([500.0, 700.0, 1000.0]), 581.0, 903.0, 387.0, 168.0).round(3)
        array([0.811, 1.   , 0.561])
    """
    x = np.asarray(x, dtype=float)
    return np.where(x < x1, np.exp((x - x1) / l1), np.where(x > x2, np.exp(-(x - x2) / l2), 1.0))


def xmax_resolution_matrix(
    true_x: np.ndarray, rec_edges: np.ndarray, sigma1: float, sigma2: float, k: float
) -> np.ndarray:
    """Probability (n_true, n_rec) that true Xmax ``true_x`` is reconstructed in each bin.

    The resolution is ``k G(0, sigma1) + (1 - k) G(0, sigma2)``; bin probabilities are exact
    Gaussian CDF differences.
    """
    t = np.asarray(true_x, dtype=float)[:, None]
    e = np.asarray(rec_edges, dtype=float)[None, :]
    c1 = special.ndtr((e - t) / sigma1)
    c2 = special.ndtr((e - t) / sigma2)
    return k * np.diff(c1, axis=1) + (1.0 - k) * np.diff(c2, axis=1)
