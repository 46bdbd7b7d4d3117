"""Cosmic-ray conditioning features: one fixed-length vector per binned observation.

A simulated pseudo-experiment (:meth:`hepflow.cosmic.ForwardModel.simulate`), a list of showers
histogrammed by :class:`hepflow.cosmic.processor.ShowerHistogramProcessor` (or binned with
:meth:`hepflow.cosmic.Observation.from_showers`) and the published Auger histograms
(:meth:`hepflow.cosmic.Observation.from_auger`) all reduce to the same counts, spectrum (n_E,)
and Xmax histograms (n_M, n_X), and :func:`observation_features` turns counts into the same
feature layout. With the default Auger binning above 10^18.7 eV (n_E = 15, n_M = 9, n_X = 100)
there are 943 features, in this order (:func:`feature_names`):

=====================  =========  ==================================================================
name                   count      meaning
=====================  =========  ==================================================================
``lg_n_spectrum``      1          ``log10(1 + N)``, N the number of events in the spectrum
``spec_lf{i:02d}``     n_E        ``ln((n_i + 1/2) / (N + n_E / 2))``: smoothed log fraction of
                                  spectrum bin i (finite for empty bins)
``xmax_lgn{m}``        n_M        ``log10(1 + k_m)``, k_m the Xmax events of energy bin m
``xmax_mean{m}``       n_M        mean Xmax of energy bin m (bin centres) in 100 g/cm^2; 0 if empty
``xmax_std{m}``        n_M        standard deviation of Xmax in energy bin m in 100 g/cm^2; 0 if
                                  empty
``xmax_p{m}_{x:02d}``  n_M n_X    fraction of the Xmax events of energy bin m in Xmax bin x; 0 if
                                  empty
=====================  =========  ==================================================================

Spectrum bin ``i`` is ``[spectrum_edges[i], spectrum_edges[i + 1])``, Xmax energy bin ``m`` is
``[xmax_energy_edges[m], xmax_energy_edges[m + 1])`` of the :class:`~hepflow.cosmic.Binning`.
The counts themselves enter through ``lg_n_*``: they set how much the shapes can be trusted and
make data sets of different exposures distinguishable. The features are not standardised (the
training code standardises them).

The module also holds the lg E x Xmax histogram in which shower lists are collected
(:func:`shower_histogram`, :func:`histogram_counts`): every shower fills it, those without an Xmax
(NaN) land in the Xmax overflow bin, so one histogram gives both the spectrum and the Xmax
distributions.

Example:
    >>> from hepflow.cosmic import Observation
    >>> obs = Observation.from_auger()
    >>> x = observation_features(obs.spectrum, obs.xmax)
    >>> x.shape, len(feature_names()), bool(np.isfinite(x).all())
    ((1, 943), 943, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import awkward as ak
import hist
import numpy as np

from hepflow.cosmic import PARAMETER_NAMES, Binning, Observation
from hepflow.cosmic.observation import check_counts
from hepflow.errors import InputError

__all__ = [
    "TRUTH_COLUMNS",
    "feature_columns",
    "feature_matrix",
    "feature_names",
    "histogram_counts",
    "histogram_observation",
    "observation_features",
    "shower_histogram",
    "valid_rows",
]

#: Truth columns of the pseudo-experiment feature tables (the 7 source parameters).
TRUTH_COLUMNS: tuple[str, ...] = PARAMETER_NAMES
#: Unit of the Xmax moments features, g/cm^2.
XMAX_UNIT = 100.0
_TOL = 1e-6


def _binning(binning: Binning | None) -> Binning:
    return binning if binning is not None else Binning.auger()


def feature_names(binning: Binning | None = None) -> tuple[str, ...]:
    """Names of the features, in the order of the columns of :func:`observation_features`.

    Example:
        >>> names = feature_names()
        >>> names[:3], names[-1]
        (('lg_n_spectrum', 'spec_lf00', 'spec_lf01'), 'xmax_p8_99')
    """
    n_e, n_m, n_x = _binning(binning).shape
    return (
        "lg_n_spectrum",
        *(f"spec_lf{i:02d}" for i in range(n_e)),
        *(f"xmax_lgn{m}" for m in range(n_m)),
        *(f"xmax_mean{m}" for m in range(n_m)),
        *(f"xmax_std{m}" for m in range(n_m)),
        *(f"xmax_p{m}_{x:02d}" for m in range(n_m) for x in range(n_x)),
    )


def observation_features(
    spectrum_counts: np.ndarray, xmax_counts: np.ndarray, *, binning: Binning | None = None
) -> np.ndarray:
    """Feature vectors (n, n_features) of ``n`` observations (see the module docstring).

    Args:
        spectrum_counts: (n, n_E) or (n_E,) spectrum counts (integers, or expected counts).
        xmax_counts: (n, n_M, n_X), (n, n_M * n_X) or (n_M, n_X) Xmax histograms.
        binning: the binning of the counts (default: the Auger binning above 10^18.7 eV); the Xmax
            bin centres enter the moments.

    Example:
        >>> spec = np.array([[4, 2, 1] + [0] * 12])
        >>> xmax = np.zeros((1, 9, 100)); xmax[0, 0, 37] = 3
        >>> f = observation_features(spec, xmax)
        >>> names = feature_names()
        >>> round(float(f[0, names.index("xmax_mean0")]), 2), float(f[0, names.index("xmax_p0_37")])
        (7.5, 1.0)
    """
    b = _binning(binning)
    n_e, n_m, n_x = b.shape
    spec = np.asarray(spectrum_counts, dtype=float)
    xmax = np.asarray(xmax_counts, dtype=float)
    if spec.ndim == 1:
        spec = spec[None, :]
    if xmax.ndim == 2 and xmax.shape == (n_m, n_x):
        xmax = xmax[None]
    elif xmax.ndim == 2 and xmax.shape[1] == n_m * n_x:
        xmax = xmax.reshape(-1, n_m, n_x)
    if spec.ndim != 2 or spec.shape[1] != n_e:
        raise InputError(f"spectrum counts must have shape (n, {n_e}) for this binning, got {spec.shape}")
    if xmax.ndim != 3 or xmax.shape[1:] != (n_m, n_x):
        raise InputError(
            f"Xmax counts must have shape (n, {n_m}, {n_x}) for this binning, got {np.shape(xmax_counts)}"
        )
    if xmax.shape[0] != spec.shape[0]:
        raise InputError(
            f"{spec.shape[0]} spectra but {xmax.shape[0]} sets of Xmax histograms: need one of each"
        )
    check_counts(b, spec, xmax)

    total = spec.sum(axis=1, keepdims=True)
    lg_n = np.log10(1.0 + total)
    log_frac = np.log((spec + 0.5) / (total + 0.5 * n_e))

    k = xmax.sum(axis=2)  # (n, n_M)
    has = k > 0
    safe_k = np.where(has, k, 1.0)
    p = xmax / safe_k[:, :, None]
    centres = 0.5 * (b.xmax_edges[1:] + b.xmax_edges[:-1]) / XMAX_UNIT
    mean = p @ centres
    var = np.maximum(p @ centres**2 - mean**2, 0.0)
    std = np.where(has, np.sqrt(var), 0.0)
    mean = np.where(has, mean, 0.0)
    flat = p.reshape(p.shape[0], n_m * n_x)  # explicit: -1 is ambiguous for zero rows
    return np.concatenate([lg_n, log_frac, np.log10(1.0 + k), mean, std, flat], axis=1)


def valid_rows(*arrays: np.ndarray, nonnegative: bool = True) -> np.ndarray:
    """Per row (first axis), whether every entry of every array is finite (and >= 0).

    Use it to drop pseudo-experiments with NaN, infinite or negative counts before
    :func:`observation_features` (which refuses them), or rows with non-finite parameters
    (``nonnegative=False``).

    Example:
        >>> spec = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, -1.0]])
        >>> xmax = np.ones((3, 2, 2))
        >>> valid_rows(spec, xmax).tolist(), valid_rows(spec, nonnegative=False).tolist()
        ([True, False, False], [True, False, True])
    """
    if not arrays:
        raise ValueError("valid_rows needs at least one array")
    ok = np.ones(len(arrays[0]), bool)
    for a in arrays:
        x = np.asarray(a, dtype=float)
        x = x.reshape(len(x), int(np.prod(x.shape[1:])))  # not -1: zero rows have no size to infer
        if x.shape[0] != ok.shape[0]:
            raise InputError(f"valid_rows: arrays of {ok.shape[0]} and {x.shape[0]} rows")
        good = np.isfinite(x)
        if nonnegative:
            good &= x >= 0
        ok &= good.all(axis=1)
    return ok


def feature_columns(
    features: np.ndarray, *, truth: np.ndarray | None = None, binning: Binning | None = None
) -> ak.Array:
    """A flat record array: the 7 truth columns (when given) then one column per feature.

    Example:
        >>> cols = feature_columns(np.zeros((2, 943)), truth=np.zeros((2, 7)))
        >>> cols.fields[:2], cols.fields[7], len(cols.fields)
        (['gamma', 'lg_rcut'], 'lg_n_spectrum', 950)
    """
    names = feature_names(binning)
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise InputError(f"features must have shape (n, {len(names)}) for this binning, got {x.shape}")
    contents: dict[str, np.ndarray] = {}
    if truth is not None:
        t = np.asarray(truth, dtype=float)
        if t.shape != (x.shape[0], len(TRUTH_COLUMNS)):
            raise InputError(f"truth must have shape ({x.shape[0]}, {len(TRUTH_COLUMNS)}), got {t.shape}")
        contents.update({name: np.ascontiguousarray(t[:, i]) for i, name in enumerate(TRUTH_COLUMNS)})
    contents.update({name: np.ascontiguousarray(x[:, i]) for i, name in enumerate(names)})
    return ak.zip(contents, depth_limit=1)


def feature_matrix(columns: ak.Array, *, binning: Binning | None = None) -> np.ndarray:
    """Stack the feature columns of a table (e.g. from ``read_parquet_dir``) into (n, n_features).

    Raises :class:`~hepflow.errors.InputError` naming the first missing column.
    """
    names = feature_names(binning)
    missing = [n for n in names if n not in columns.fields]
    if missing:
        raise InputError(
            f"the table lacks feature column {missing[0]!r} ({len(missing)} missing): "
            "was it written by `hepflow process cosmic` with the same binning?"
        )
    return np.stack([ak.to_numpy(columns[n]).astype(float) for n in names], axis=1)


# ---------------------------------------------------------------------- shower histogram
def shower_histogram(binning: Binning | None = None) -> hist.Hist:
    """An empty lg E x Xmax histogram (spectrum energy bins x Xmax bins, with flow bins).

    Fill it with every shower; a NaN Xmax (no Xmax measurement) goes to the Xmax overflow bin.

    Example:
        >>> h = shower_histogram()
        >>> h.fill(lg_e=[18.75, 18.75], xmax=[750.0, np.nan]).values(flow=True)[1, [38, -1]].tolist()
        [1.0, 1.0]
    """
    b = _binning(binning)
    _check_nested(b)
    return hist.Hist(
        hist.axis.Variable(b.spectrum_edges, name="lg_e", label="lg(E/eV)"),
        hist.axis.Variable(b.xmax_edges, name="xmax", label="Xmax [g/cm^2]"),
        storage=hist.storage.Double(),
    )


def histogram_counts(h: hist.Hist, *, binning: Binning | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spectrum counts (n_E,) and Xmax histograms (n_M, n_X) of a :func:`shower_histogram`.

    The spectrum sums over every Xmax bin including the flow bins (showers without or outside
    the Xmax range still count in the spectrum); the Xmax histograms sum the spectrum energy
    bins inside each Xmax energy bin. Equivalent to :meth:`Observation.from_showers` except for
    values exactly on the last edge of an axis (numpy's histograms include it, boost-histogram
    puts it in the overflow bin).
    """
    b = _binning(binning)
    _check_nested(b)
    lg_e_axis, xmax_axis = h.axes
    if not (
        lg_e_axis.edges.shape == b.spectrum_edges.shape
        and xmax_axis.edges.shape == b.xmax_edges.shape
        and np.allclose(lg_e_axis.edges, b.spectrum_edges, atol=_TOL)
        and np.allclose(xmax_axis.edges, b.xmax_edges, atol=_TOL)
    ):
        raise InputError(
            "the shower histogram does not have the binning of the observation: lg E edges "
            f"{lg_e_axis.edges}, Xmax edges from {xmax_axis.edges[0]} to {xmax_axis.edges[-1]}"
        )
    values = np.asarray(h.values(flow=True), dtype=float)[1:-1]  # drop the lg E flow bins
    spectrum = values.sum(axis=1)
    inner = values[:, 1:-1]
    idx = _nested_index(b)
    xmax = np.stack([inner[lo:hi].sum(axis=0) for lo, hi in itertools.pairwise(idx)])
    return spectrum, xmax


def histogram_observation(
    h: hist.Hist, *, binning: Binning | None = None, source: str = "shower histogram"
) -> Observation:
    """The :class:`~hepflow.cosmic.Observation` of a filled :func:`shower_histogram` (read from
    ``source``, for error messages)."""
    b = _binning(binning)
    spectrum, xmax = histogram_counts(h, binning=b)
    return Observation(b, spectrum, xmax, source=source)


def _nested_index(b: Binning) -> np.ndarray:
    """Indices of the Xmax energy edges among the spectrum edges."""
    idx = np.searchsorted(b.spectrum_edges, b.xmax_energy_edges - _TOL)
    return np.minimum(idx, b.spectrum_edges.size - 1)


def _check_nested(b: Binning) -> None:
    idx = _nested_index(b)
    if not np.allclose(b.spectrum_edges[idx], b.xmax_energy_edges, atol=_TOL):
        raise InputError(
            "the Xmax energy edges must be spectrum edges for a single lg E x Xmax histogram; got "
            f"spectrum edges {b.spectrum_edges} and Xmax energy edges {b.xmax_energy_edges}"
        )


def feature_spec(binning: Binning) -> dict[str, Any]:
    """What the context of a model is: feature names and the binning they are computed in."""
    return {
        "names": list(feature_names(binning)),
        "spectrum_edges": [round(float(e), 6) for e in binning.spectrum_edges],
        "xmax_energy_edges": [round(float(e), 6) for e in binning.xmax_energy_edges],
        "xmax_edges": [
            float(binning.xmax_edges[0]),
            float(binning.xmax_edges[-1]),
            binning.xmax_edges.size - 1,
        ],
    }


def scalar_columns(binning: Binning) -> np.ndarray:
    names = feature_names(binning)
    return np.array([i for i, n in enumerate(names) if not n.startswith("xmax_p")])


def context_from_features(features: np.ndarray, binning: Binning, summary: str) -> dict[str, np.ndarray]:
    """The model context of feature rows (n, 943): ``{"flat", "xmax"}`` (cnn) or ``{"features"}`` (mlp)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    _, n_m, n_x = binning.shape
    if x.shape[1] != len(feature_names(binning)):
        raise InputError(f"features have {x.shape[1]} columns, the binning has {len(feature_names(binning))}")
    if summary == "mlp":
        return {"features": np.ascontiguousarray(x)}
    scalars = scalar_columns(binning)
    hist = x[:, scalars.size :].reshape(-1, n_m, n_x)
    return {"flat": np.ascontiguousarray(x[:, scalars]), "xmax": np.ascontiguousarray(hist)}


#: what :func:`observations_context` takes: one observation, several, or rows of features
Observations = Observation | Sequence[Observation] | np.ndarray


def observations_context(x: Observations, *, binning: Binning, summary: str) -> dict[str, np.ndarray]:
    """The model context of observations (or of rows of features)."""
    if isinstance(x, Observation):
        x = [x]
    if isinstance(x, np.ndarray):
        feats = x
    else:
        obs = list(x)
        feats = observation_features(
            np.stack([o.spectrum for o in obs]), np.stack([o.xmax for o in obs]), binning=binning
        )
    return context_from_features(feats, binning, summary)
