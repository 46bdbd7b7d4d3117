"""Detector response measured on NanoAOD-like events: hepflow's fast detector or CMS simulation.

The same measurements run on a file written by ``hepflow generate ttbar`` and on CMS NanoAOD
simulation, so the two can be compared side by side (``benchmarks/detector_response.py``,
``docs/detector.md``, section "Compared with CMS simulation"). Every number comes with its
statistical uncertainty.

* :func:`met_resolution`: MET minus ``GenMET`` (the neutrinos) per component, core width
  (IQR / 1.349, the standard deviation for a Gaussian core) and RMS (about the mean), and the
  core width of both components together in bins of ``MET_sumEt``, with a fit of
  ``sigma^2 = a^2 + b^2 sumEt`` to that trend;
* :func:`jet_response`: median of ``Jet_pt / GenJet_pt`` (the response) and IQR / 1.349 of it
  (the resolution) in bins of GenJet pT (per |eta| region) and of GenJet |eta|;
* :func:`lepton_resolution`: median and IQR / 1.349 of ``pt / GenPart pt`` for identified
  electrons or muons matched to a prompt generator lepton (``genPartIdx``), in bins of its pT;
* :func:`btag_efficiency`: fraction of jets of a hadron flavour (5 b, 4 c, 0 light) above the
  DeepJet medium working point, in bins of jet pT;
* :func:`pileup`: mean ``Pileup_nPU`` and ``fixedGridRhoFastjetAll`` (None where absent);
* :func:`measure` runs them all, :func:`read_events` reads the branches they need from one or
  more files (``MET_*`` or, NanoAOD v15, ``PFMET_*``), :func:`compare` lines two measurements up
  with the pull of each number.

Uncertainties: medians, quantile widths and RMS by bootstrap (``n_boot`` resamples of the
objects, of events for the MET), efficiencies as binomial (Agresti-Coull), means as standard
errors. A bin with fewer than :data:`MIN_ENTRIES` entries gives NaN rather than a number
without meaning.

Example (a synthetic sample with a known MET resolution of 20 GeV):
    >>> import awkward as ak
    >>> rng = np.random.default_rng(1)
    >>> nu = rng.normal(0.0, 40.0, (2000, 2))
    >>> met = nu + rng.normal(0.0, 20.0, (2000, 2))
    >>> events = ak.Array({
    ...     "MET": ak.zip({"pt": np.hypot(*met.T), "phi": np.arctan2(met[:, 1], met[:, 0]),
    ...                    "sumEt": rng.uniform(100.0, 900.0, 2000)}),
    ...     "GenMET": ak.zip({"pt": np.hypot(*nu.T), "phi": np.arctan2(nu[:, 1], nu[:, 0])}),
    ... })
    >>> res = met_resolution(events, sumet_edges=(0.0, 1000.0), n_boot=100)
    >>> print(f"{res.core_width['x'].value:.1f} +- {res.core_width['x'].error:.1f}")
    20.2 +- 0.5
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import awkward as ak
import numpy as np

from hepflow.errors import InputError
from hepflow.generate.detector import BTAG_MEDIUM_WP, GENJET_PT_MIN, delta_phi
from hepflow.inputs import Kind, check_branches

__all__ = [
    "BOTH",
    "Binned",
    "Comparison",
    "JetResponse",
    "MetResolution",
    "Response",
    "Value",
    "btag_efficiency",
    "compare",
    "jet_response",
    "lepton_resolution",
    "measure",
    "met_difference",
    "met_resolution",
    "pileup",
    "pool_events",
    "pull_summary",
    "read_events",
]

#: IQR of a unit Gaussian: IQR / 1.349 is the standard deviation of a Gaussian core.
IQR_TO_SIGMA = 1.349
#: Bins with fewer entries (objects; events for the MET) give NaN.
MIN_ENTRIES = 10
#: The key of the MET width of both components of every event together.
BOTH = "x and y"
#: Largest Delta R between a jet and its GenJet in the jet response (on top of ``Jet_genJetIdx``,
#: which CMS and the fast detector match within 0.4): the usual choice of jet resolution
#: studies, R / 2.
JET_MATCH_DR = 0.2
#: GenJets within this Delta R of a prompt generator electron or muon are left out of the jet
#: response: in CMS NanoAOD the lepton is also a ``Jet``, in the fast detector it is not.
LEPTON_VETO_DR = 0.4

#: Default binnings.
SUMET_EDGES = (0.0, 300.0, 400.0, 500.0, 650.0, 900.0, 1300.0, 1700.0, 2100.0, 2500.0, 3000.0, 4000.0)
JET_PT_EDGES = (20.0, 30.0, 50.0, 80.0, 150.0, 400.0)
JET_ETA_REGIONS = ((0.0, 1.3), (1.3, 2.5), (2.5, 4.7))
JET_ETA_EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.7)
#: GenJet pT above which the response is measured in bins of |eta|, GeV.
JET_ETA_PT_MIN = 30.0
LEPTON_PT_EDGES = (10.0, 30.0, 50.0, 100.0, 500.0)
BTAG_PT_EDGES = (20.0, 30.0, 50.0, 80.0, 150.0, 400.0)
#: b-tagging acceptance |eta| (the tracker).
BTAG_ETA_MAX = 2.5

_PROMPT = 1  # GenPart statusFlags bit 0, isPrompt
# GenPart branches of the prompt-lepton veto of the jet response
_GENPART_VETO: dict[str, Kind] = {
    "pt": "float",
    "eta": "float",
    "phi": "float",
    "pdgId": "integer",
    "status": "integer",
    "statusFlags": "integer",
}

# branches every measurement needs, per collection (MET is MET_* or PFMET_*)
_COLLECTIONS: dict[str, tuple[str, ...]] = {
    "GenMET": ("pt", "phi"),
    "Jet": ("pt", "eta", "phi", "genJetIdx", "hadronFlavour", "btagDeepFlavB"),
    "GenJet": ("pt", "eta", "phi"),
    "Electron": ("pt", "eta", "phi", "genPartIdx", "cutBased"),
    "Muon": ("pt", "eta", "phi", "genPartIdx", "tightId"),
    "GenPart": ("pt", "eta", "phi", "pdgId", "status", "statusFlags"),
}
_MET_FIELDS = ("pt", "phi", "sumEt")
_RHO_BRANCHES = ("Rho_fixedGridRhoFastjetAll", "fixedGridRhoFastjetAll")  # NanoAOD >= v10, older
_INTEGER_FIELDS = {"genJetIdx", "hadronFlavour", "genPartIdx", "cutBased", "pdgId", "status", "statusFlags"}


@dataclass(frozen=True)
class Value:
    """A measured number, its statistical uncertainty and the entries it comes from."""

    value: float
    error: float
    count: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "value": _finite_or_none(self.value),
            "error": _finite_or_none(self.error),
            "count": self.count,
        }


@dataclass(frozen=True)
class Binned:
    """One observable in bins of ``variable``: value +- error from ``count`` entries per bin.

    ``centre`` is the mean of the binning variable over the entries of each bin (NaN if empty).
    """

    variable: str
    edges: np.ndarray
    value: np.ndarray
    error: np.ndarray
    count: np.ndarray
    centre: np.ndarray

    def bin(self, i: int) -> Value:
        return Value(float(self.value[i]), float(self.error[i]), int(self.count[i]))

    def labels(self) -> list[str]:
        """``"lo-hi"`` for every bin, e.g. ``"20-30"``."""
        return [f"{_g(lo)}-{_g(hi)}" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "edges": [float(e) for e in self.edges],
            "value": [_finite_or_none(v) for v in self.value],
            "error": [_finite_or_none(v) for v in self.error],
            "count": [int(c) for c in self.count],
            "centre": [_finite_or_none(v) for v in self.centre],
        }


@dataclass(frozen=True)
class MetResolution:
    """MET minus GenMET: per component (``"x"``, ``"y"``), both components together
    (:data:`BOTH`), and, both together, against sumEt.

    ``fit`` holds ``a`` (noise term, GeV) and ``b`` (stochastic term, GeV^1/2) of
    ``sigma^2 = a^2 + b^2 sumEt`` fitted to ``core_vs_sumet``; each a :class:`Value` whose count
    is the number of bins fitted (None when fewer than two bins have a width).
    """

    core_width: dict[str, Value]
    rms: dict[str, Value]
    core_vs_sumet: Binned
    rms_vs_sumet: Binned
    fit: dict[str, Value] | None
    mean_sumet: Value


@dataclass(frozen=True)
class JetResponse:
    """Jet pT response (median of pT / GenJet pT) and resolution (its IQR / 1.349).

    ``*_vs_pt`` are keyed by the |eta| region, ``"0-1.3"``; ``*_vs_eta`` are for GenJet pT
    above ``eta_pt_min``.
    """

    response_vs_pt: dict[str, Binned]
    resolution_vs_pt: dict[str, Binned]
    response_vs_eta: Binned
    resolution_vs_eta: Binned
    eta_pt_min: float


@dataclass(frozen=True)
class Response:
    """Everything :func:`measure` measures on one sample."""

    source: str
    events: int
    met: MetResolution
    jets: JetResponse
    leptons: dict[str, dict[str, Binned]]
    btag: dict[str, Binned]
    pileup: dict[str, Value | None]
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Value]:
        """Every number as ``{name: Value}`` (the rows of a comparison), in a fixed order."""
        out: dict[str, Value] = {}
        for axis in ("x", "y", BOTH):
            out[f"MET core width {axis} [GeV]"] = self.met.core_width[axis]
        for axis in ("x", "y", BOTH):
            out[f"MET RMS {axis} [GeV]"] = self.met.rms[axis]
        for i, label in enumerate(self.met.core_vs_sumet.labels()):
            out[f"MET core width, sumEt {label} GeV"] = self.met.core_vs_sumet.bin(i)
        for kind, by_region in (
            ("response", self.jets.response_vs_pt),
            ("resolution", self.jets.resolution_vs_pt),
        ):
            for region, binned in by_region.items():
                for i, label in enumerate(binned.labels()):
                    out[f"jet {kind}, |eta| {region}, pT {label}"] = binned.bin(i)
        pt_min = _g(self.jets.eta_pt_min)
        for kind, binned in (
            ("response", self.jets.response_vs_eta),
            ("resolution", self.jets.resolution_vs_eta),
        ):
            for i, label in enumerate(binned.labels()):
                out[f"jet {kind}, pT > {pt_min}, |eta| {label}"] = binned.bin(i)
        for flavour, parts in self.leptons.items():
            for kind, binned in parts.items():
                for i, label in enumerate(binned.labels()):
                    out[f"{flavour} pT {kind}, pT {label}"] = binned.bin(i)
        for flavour, binned in self.btag.items():
            for i, label in enumerate(binned.labels()):
                out[f"b-tag rate, {flavour} jets, pT {label}"] = binned.bin(i)
        for name, value in self.pileup.items():
            if value is not None:
                out[f"mean {name}"] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        met = self.met
        return {
            "source": self.source,
            "events": self.events,
            "met": {
                "core_width": {k: v.to_dict() for k, v in met.core_width.items()},
                "rms": {k: v.to_dict() for k, v in met.rms.items()},
                "core_vs_sumet": met.core_vs_sumet.to_dict(),
                "rms_vs_sumet": met.rms_vs_sumet.to_dict(),
                "fit": None if met.fit is None else {k: v.to_dict() for k, v in met.fit.items()},
                "mean_sumet": met.mean_sumet.to_dict(),
            },
            "jets": {
                "response_vs_pt": {k: v.to_dict() for k, v in self.jets.response_vs_pt.items()},
                "resolution_vs_pt": {k: v.to_dict() for k, v in self.jets.resolution_vs_pt.items()},
                "response_vs_eta": self.jets.response_vs_eta.to_dict(),
                "resolution_vs_eta": self.jets.resolution_vs_eta.to_dict(),
                "eta_pt_min": self.jets.eta_pt_min,
            },
            "leptons": {f: {k: v.to_dict() for k, v in p.items()} for f, p in self.leptons.items()},
            "btag": {k: v.to_dict() for k, v in self.btag.items()},
            "pileup": {k: None if v is None else v.to_dict() for k, v in self.pileup.items()},
            **self.extra,
        }


@dataclass(frozen=True)
class Comparison:
    """One number measured on two samples; ``pull = (a - b) / sqrt(error_a^2 + error_b^2)``."""

    name: str
    a: Value
    b: Value

    @property
    def pull(self) -> float:
        scale = math.hypot(self.a.error, self.b.error)
        if not (math.isfinite(self.a.value) and math.isfinite(self.b.value)) or not scale > 0:
            return math.nan
        return (self.a.value - self.b.value) / scale


# --- statistics ------------------------------------------------------------------------------


def core_width(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """IQR / 1.349 along ``axis``: the standard deviation of a Gaussian, insensitive to tails.

    Example:
        >>> x = np.random.default_rng(0).normal(0.0, 3.0, 100_000)
        >>> round(float(core_width(x)), 2)
        3.0
    """
    q25, q75 = np.quantile(values, [0.25, 0.75], axis=axis)
    return (q75 - q25) / IQR_TO_SIGMA


def _median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis)


def _rms(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.std(values, axis=axis)


def bootstrap(
    statistic: Callable[..., np.ndarray],
    *columns: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """``statistic`` of the rows of ``columns`` and its bootstrap standard error.

    ``statistic`` takes the columns and reduces their last axis; the rows are resampled with
    replacement ``n_boot`` times (all columns alike, so pairs stay together).

    Example:
        >>> rng = np.random.default_rng(2)
        >>> x = rng.normal(0.0, 1.0, 2000)
        >>> value, error = bootstrap(_median, x, n_boot=300, rng=rng)
        >>> round(error, 2)  # sqrt(pi / 2) / sqrt(2000) = 0.028 for a Gaussian
        0.03
    """
    n = len(columns[0])
    value = float(statistic(*columns))
    index = rng.integers(0, n, size=(n_boot, n))
    resampled = statistic(*(c[index] for c in columns))
    return value, float(np.std(resampled, ddof=1))


def binomial(passed: int, total: int) -> Value:
    """Efficiency ``passed / total`` with the Agresti-Coull standard error (finite at 0 and 1).

    Example:
        >>> v = binomial(0, 100)
        >>> v.value, round(v.error, 4)
        (0.0, 0.0135)
    """
    if total == 0:
        return Value(math.nan, math.nan, 0)
    shrunk = (passed + 2.0) / (total + 4.0)
    return Value(passed / total, math.sqrt(shrunk * (1.0 - shrunk) / (total + 4.0)), total)


def binned(
    statistic: Callable[..., np.ndarray],
    variable: np.ndarray,
    edges: Sequence[float],
    *columns: np.ndarray,
    name: str,
    n_boot: int,
    rng: np.random.Generator,
    min_entries: int = MIN_ENTRIES,
) -> Binned:
    """``statistic`` of the rows of ``columns`` in bins of ``variable``, with bootstrap errors."""
    edges_arr = np.asarray(edges, dtype=np.float64)
    n_bins = len(edges_arr) - 1
    which = np.digitize(variable, edges_arr) - 1
    value, error = np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    count, centre = np.zeros(n_bins, dtype=np.int64), np.full(n_bins, np.nan)
    for i in range(n_bins):
        rows = which == i
        count[i] = int(rows.sum())
        if count[i]:
            centre[i] = float(np.mean(variable[rows]))
        if count[i] >= min_entries:
            value[i], error[i] = bootstrap(statistic, *(c[rows] for c in columns), n_boot=n_boot, rng=rng)
    return Binned(name, edges_arr, value, error, count, centre)


# --- measurements ----------------------------------------------------------------------------


def met_resolution(
    events: Any,
    *,
    sumet_edges: Sequence[float] = SUMET_EDGES,
    n_boot: int = 200,
    seed: int = 0,
) -> MetResolution:
    """MET minus GenMET per component, and its core width and RMS against ``MET_sumEt``.

    ``events`` has records ``MET`` (``pt``, ``phi``, ``sumEt``) and ``GenMET`` (``pt``, ``phi``),
    one per event (:func:`read_events` maps ``PFMET`` to ``MET``).

    Raises:
        InputError: a branch is missing or of the wrong kind.
    """
    check_branches(
        events,
        {
            "MET_pt": "float",
            "MET_phi": "float",
            "MET_sumEt": "float",
            "GenMET_pt": "float",
            "GenMET_phi": "float",
        },
    )
    rng = np.random.default_rng(seed)
    dx, dy = met_difference(events)
    sumet = ak.to_numpy(events.MET.sumEt).astype(np.float64)
    n = len(dx)
    core, rms = {}, {}

    def pooled(statistic: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
        return lambda x, y: statistic(np.concatenate([x, y], axis=-1))

    # per component, and both components of every event together (the detector is symmetric in
    # phi, so both measure one width; the bootstrap resamples events, keeping an event's x and y)
    for axis, columns in (("x", (dx,)), ("y", (dy,)), (BOTH, (dx, dy))):
        core_stat, rms_stat = (core_width, _rms) if len(columns) == 1 else (pooled(core_width), pooled(_rms))
        if n >= MIN_ENTRIES:
            core[axis] = Value(*bootstrap(core_stat, *columns, n_boot=n_boot, rng=rng), n)
            rms[axis] = Value(*bootstrap(rms_stat, *columns, n_boot=n_boot, rng=rng), n)
        else:
            core[axis] = rms[axis] = Value(math.nan, math.nan, n)

    core_trend = binned(
        pooled(core_width), sumet, sumet_edges, dx, dy, name="MET_sumEt [GeV]", n_boot=n_boot, rng=rng
    )
    rms_trend = binned(
        pooled(_rms), sumet, sumet_edges, dx, dy, name="MET_sumEt [GeV]", n_boot=n_boot, rng=rng
    )
    mean_sumet = (
        Value(float(np.mean(sumet)), float(np.std(sumet) / math.sqrt(n)), n)
        if n
        else Value(math.nan, math.nan, 0)
    )
    return MetResolution(core, rms, core_trend, rms_trend, fit_stochastic(core_trend), mean_sumet)


def met_difference(events: Any) -> tuple[np.ndarray, np.ndarray]:
    """MET minus GenMET, (x, y) components in GeV, one entry per event.

    Example:
        >>> import awkward as ak
        >>> events = ak.Array({"MET": ak.zip({"pt": [10.0], "phi": [0.0]}),
        ...                    "GenMET": ak.zip({"pt": [4.0], "phi": [np.pi / 2]})})
        >>> [np.round(c, 6).tolist() for c in met_difference(events)]
        [[10.0], [-4.0]]
    """
    met, gen = events.MET, events.GenMET
    met_pt, met_phi, gen_pt, gen_phi = (
        ak.to_numpy(x).astype(np.float64) for x in (met.pt, met.phi, gen.pt, gen.phi)
    )
    dx = met_pt * np.cos(met_phi) - gen_pt * np.cos(gen_phi)
    dy = met_pt * np.sin(met_phi) - gen_pt * np.sin(gen_phi)
    return dx, dy


def fit_stochastic(trend: Binned) -> dict[str, Value] | None:
    """Fit ``sigma^2 = a^2 + b^2 sumEt`` to a width-vs-sumEt trend (weighted least squares).

    Linear in (a^2, b^2) at the bins' mean sumEt, weighted by the uncertainty of sigma^2
    (``2 sigma error``). Returns ``{"a": Value, "b": Value, "b (a = 0)": Value}`` (GeV,
    GeV^1/2; a negative fitted square gives a negative value, its sign kept): the two-parameter
    fit and the one with the stochastic term alone, which a narrow sumEt range (one sample with
    pileup) constrains far better. None with fewer than two usable bins.

    Example:
        >>> x = np.array([100.0, 400.0, 900.0])
        >>> sigma = np.sqrt(5.0**2 + 0.7**2 * x)
        >>> t = Binned("sumEt", np.array([0, 200, 600, 1200.0]), sigma, 0.01 * sigma, np.full(3, 50), x)
        >>> fit = fit_stochastic(t)
        >>> round(fit["a"].value, 2), round(fit["b"].value, 3), round(fit["b (a = 0)"].value, 3)
        (5.0, 0.7, 0.759)
    """
    ok = np.isfinite(trend.value) & np.isfinite(trend.error) & (trend.error > 0)
    if ok.sum() < 2:
        return None
    x, sigma, err = trend.centre[ok], trend.value[ok], trend.error[ok]
    weight = 1.0 / (2.0 * sigma * err) ** 2
    design = np.column_stack([np.ones_like(x), x])
    cov = np.linalg.inv(design.T @ (design * weight[:, None]))
    a2, b2 = cov @ design.T @ (weight * sigma**2)
    count = int(ok.sum())

    def root(square: float, variance: float) -> Value:
        value = math.copysign(math.sqrt(abs(square)), square)
        error = math.sqrt(variance) / (2.0 * abs(value)) if value else math.inf
        return Value(value, error, count)

    b2_only = float(np.sum(weight * sigma**2 * x) / np.sum(weight * x**2))
    return {
        "a": root(float(a2), float(cov[0, 0])),
        "b": root(float(b2), float(cov[1, 1])),
        "b (a = 0)": root(b2_only, float(1.0 / np.sum(weight * x**2))),
    }


def jet_response(
    events: Any,
    *,
    pt_edges: Sequence[float] = JET_PT_EDGES,
    eta_regions: Sequence[tuple[float, float]] = JET_ETA_REGIONS,
    eta_edges: Sequence[float] = JET_ETA_EDGES,
    eta_pt_min: float = JET_ETA_PT_MIN,
    match_dr: float = JET_MATCH_DR,
    n_boot: int = 200,
    seed: int = 0,
) -> JetResponse:
    """Jet pT response and resolution against the matched GenJet, in bins of its pT and |eta|.

    A jet counts if ``Jet_genJetIdx`` points at a GenJet of the event within ``match_dr`` and
    that GenJet is not a prompt electron or muon (:data:`LEPTON_VETO_DR`; needs ``GenPart``, else
    no veto: its ``pt``, ``eta``, ``phi``, ``pdgId``, ``status``, ``statusFlags`` are then
    required). Bins are in GenJet pT and |eta|.

    Raises:
        InputError: a branch is missing or of the wrong kind.
    """
    check_branches(
        events,
        {
            "Jet_pt": "float",
            "Jet_eta": "float",
            "Jet_phi": "float",
            "Jet_genJetIdx": "integer",
            "GenJet_pt": "float",
            "GenJet_eta": "float",
            "GenJet_phi": "float",
        },
    )
    rng = np.random.default_rng(seed)
    reco, gen = _matched_jets(events, match_dr=match_dr)
    response = reco["pt"] / gen["pt"]
    aeta = np.abs(gen["eta"])
    resp_pt, reso_pt = {}, {}
    for lo, hi in eta_regions:
        region = (aeta >= lo) & (aeta < hi)
        label = f"{_g(lo)}-{_g(hi)}"
        name = f"GenJet pT [GeV], {label}"
        resp_pt[label] = binned(
            _median, gen["pt"][region], pt_edges, response[region], name=name, n_boot=n_boot, rng=rng
        )
        reso_pt[label] = binned(
            core_width, gen["pt"][region], pt_edges, response[region], name=name, n_boot=n_boot, rng=rng
        )
    hard = gen["pt"] > eta_pt_min
    name = f"GenJet |eta|, pT > {_g(eta_pt_min)} GeV"
    resp_eta = binned(_median, aeta[hard], eta_edges, response[hard], name=name, n_boot=n_boot, rng=rng)
    reso_eta = binned(core_width, aeta[hard], eta_edges, response[hard], name=name, n_boot=n_boot, rng=rng)
    return JetResponse(resp_pt, reso_pt, resp_eta, reso_eta, eta_pt_min)


def _matched_jets(events: Any, *, match_dr: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Flat (reco, gen) pT/eta/phi of the jets with a valid, close, non-lepton GenJet."""
    jets, genjets = events.Jet, events.GenJet
    index = jets.genJetIdx
    valid = (index >= 0) & (index < ak.num(genjets, axis=1))  # CMS: the GenJet may be below 10 GeV
    safe = ak.where(valid, index, 0)
    # an event without GenJets has no valid index; pad so that the take is defined
    padded = ak.pad_none(genjets, 1, axis=1)
    gen = {k: ak.fill_none(padded[k][safe], np.nan) for k in ("pt", "eta", "phi")}
    dr = np.hypot(jets.eta - gen["eta"], delta_phi(jets.phi, gen["phi"]))
    keep = valid & (dr < match_dr)
    if "GenPart" in ak.fields(events):
        check_branches(events, {f"GenPart_{f}": k for f, k in _GENPART_VETO.items()})
        keep = keep & ~_near_prompt_lepton(gen["eta"], gen["phi"], events.GenPart)
    reco_flat = {k: _flat(jets[k][keep]) for k in ("pt", "eta", "phi")}
    gen_flat = {k: _flat(v[keep]) for k, v in gen.items()}
    return reco_flat, gen_flat


def _near_prompt_lepton(eta: ak.Array, phi: ak.Array, genpart: ak.Array) -> ak.Array:
    """Per object: within :data:`LEPTON_VETO_DR` of a prompt final-state electron or muon."""
    aid = np.abs(genpart.pdgId)
    prompt = ((aid == 11) | (aid == 13)) & (genpart.status == 1) & ((genpart.statusFlags & _PROMPT) != 0)
    prompt = prompt & (genpart.pt > GENJET_PT_MIN)  # softer leptons make no GenJet of their own
    leptons = genpart[prompt]
    pairs = ak.cartesian({"obj": ak.zip({"eta": eta, "phi": phi}), "lep": leptons}, axis=1, nested=True)
    dr = np.hypot(pairs.obj.eta - pairs.lep.eta, delta_phi(pairs.obj.phi, pairs.lep.phi))
    return ak.fill_none(ak.any(dr < LEPTON_VETO_DR, axis=2), False)


def lepton_resolution(
    events: Any,
    *,
    flavour: Literal["electron", "muon"],
    pt_edges: Sequence[float] = LEPTON_PT_EDGES,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Binned]:
    """pT scale (median of pT / gen pT) and resolution (IQR / 1.349 of it) of identified leptons.

    Electrons with ``cutBased >= 4`` (tight), muons with ``tightId`` (the leptons the neutrino
    selection uses), matched by ``genPartIdx`` to a prompt generator lepton of the same flavour;
    bins in the generator pT. Returns ``{"scale": Binned, "resolution": Binned}``.

    Raises:
        InputError: a branch is missing or of the wrong kind.
    """
    if flavour not in ("electron", "muon"):
        raise ValueError(f"flavour must be 'electron' or 'muon', got {flavour!r}")
    name = "Electron" if flavour == "electron" else "Muon"
    id_kind: Kind = "integer" if flavour == "electron" else "bool"
    check_branches(
        events,
        {
            f"{name}_pt": "float",
            f"{name}_genPartIdx": "integer",
            f"{name}_{'cutBased' if flavour == 'electron' else 'tightId'}": id_kind,
            "GenPart_pt": "float",
            "GenPart_pdgId": "integer",
            "GenPart_statusFlags": "integer",
        },
    )
    rng = np.random.default_rng(seed)
    leptons, genpart = events[name], events.GenPart
    identified = leptons.cutBased >= 4 if flavour == "electron" else leptons.tightId
    index = leptons.genPartIdx
    valid = identified & (index >= 0) & (index < ak.num(genpart, axis=1))
    padded = ak.pad_none(genpart, 1, axis=1)
    gen = padded[ak.where(valid, index, 0)]
    pdg = 11 if flavour == "electron" else 13
    good = valid & ak.fill_none((np.abs(gen.pdgId) == pdg) & ((gen.statusFlags & _PROMPT) != 0), False)
    reco_pt, gen_pt = _flat(leptons.pt[good]), _flat(gen.pt[good])
    ratio = reco_pt / gen_pt
    label = f"generator {name.lower()} pT [GeV]"
    return {
        "scale": binned(_median, gen_pt, pt_edges, ratio, name=label, n_boot=n_boot, rng=rng),
        "resolution": binned(core_width, gen_pt, pt_edges, ratio, name=label, n_boot=n_boot, rng=rng),
    }


def btag_efficiency(
    events: Any,
    *,
    hadron_flavour: int,
    pt_edges: Sequence[float] = BTAG_PT_EDGES,
    working_point: float = BTAG_MEDIUM_WP,
    eta_max: float = BTAG_ETA_MAX,
) -> Binned:
    """Fraction of jets of ``hadron_flavour`` (5, 4 or 0) with ``btagDeepFlavB > working_point``.

    Jets with |eta| < ``eta_max``, in bins of jet pT; binomial (Agresti-Coull) errors. The default
    working point is the DeepJet medium one of CMS UL 2018 (the fast detector's; Run 3 samples
    have their own, e.g. 0.3086 for 2022).

    Raises:
        InputError: a branch is missing or of the wrong kind.
    """
    check_branches(
        events,
        {"Jet_pt": "float", "Jet_eta": "float", "Jet_hadronFlavour": "integer", "Jet_btagDeepFlavB": "float"},
    )
    jets = events.Jet
    chosen = (jets.hadronFlavour == hadron_flavour) & (np.abs(jets.eta) < eta_max)
    pt = _flat(jets.pt[chosen])
    tagged = _flat(jets.btagDeepFlavB[chosen]) > working_point
    edges = np.asarray(pt_edges, dtype=np.float64)
    which = np.digitize(pt, edges) - 1
    n_bins = len(edges) - 1
    values = [binomial(int(tagged[which == i].sum()), int((which == i).sum())) for i in range(n_bins)]
    centre = np.array([np.mean(pt[which == i]) if v.count else np.nan for i, v in enumerate(values)])
    return Binned(
        "jet pT [GeV]",
        edges,
        np.array([v.value for v in values]),
        np.array([v.error for v in values]),
        np.array([v.count for v in values]),
        centre,
    )


def pileup(events: Any) -> dict[str, Value | None]:
    """Mean number of pileup interactions (``Pileup_nPU``) and of rho, or None where absent.

    ``events`` has ``Pileup.nPU`` and ``rho`` (:func:`read_events` maps the NanoAOD names).
    """
    out: dict[str, Value | None] = {}
    fields = ak.fields(events)
    for key, present, get in (
        ("Pileup_nPU", "Pileup" in fields, lambda: events.Pileup.nPU),
        ("fixedGridRhoFastjetAll [GeV]", "rho" in fields, lambda: events.rho),
    ):
        if not present:
            out[key] = None
            continue
        x = ak.to_numpy(get()).astype(np.float64)
        n = len(x)
        out[key] = Value(float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(n)), n) if n > 1 else None
    return out


def measure(events: Any, *, source: str = "input", n_boot: int = 200, seed: int = 0) -> Response:
    """All measurements of this module on ``events`` (as :func:`read_events` returns them).

    Example:
        >>> resp = measure(read_events("tests/samples/nano_tt_v12.root"), n_boot=50)  # doctest: +SKIP
        >>> resp.values()["MET core width x [GeV]"]  # doctest: +SKIP
        Value(value=23.3, error=2.3, count=200)
    """
    options = {"n_boot": n_boot, "seed": seed}
    return Response(
        source=source,
        events=len(events),
        met=met_resolution(events, **options),
        jets=jet_response(events, **options),
        leptons={f: lepton_resolution(events, flavour=f, **options) for f in ("electron", "muon")},
        btag={
            label: btag_efficiency(events, hadron_flavour=hf)
            for label, hf in (("b", 5), ("c", 4), ("light", 0))
        },
        pileup=pileup(events),
    )


def compare(a: Response, b: Response) -> list[Comparison]:
    """The numbers of two measurements side by side (those both have), with pulls."""
    values_a, values_b = a.values(), b.values()
    return [Comparison(name, values_a[name], values_b[name]) for name in values_a if name in values_b]


def pull_summary(pulls: Sequence[float], *, limit: float = 2.0) -> dict[str, float]:
    """How unusual a set of pulls is for two samples that agree: the count beyond ``limit`` and
    the largest ``|pull|``, each with its probability for independent standard-normal pulls.

    With many numbers compared, some lie beyond two standard deviations by chance (4.6 % of
    them), so a count or a largest pull is judged against that expectation: ``p_count`` is the
    binomial probability of at least ``beyond`` of ``n`` beyond ``limit``, ``p_max`` the
    probability that the largest of ``n`` is at least ``max_pull``.

    Example:
        >>> s = pull_summary([0.3, -2.4, 1.1, 0.8] * 20)
        >>> s["n"], s["beyond"], round(s["expected"], 1), round(s["p_max"], 2)
        (80, 20, 3.6, 0.73)
    """
    from scipy import stats

    z = np.abs(np.asarray([p for p in pulls if math.isfinite(p)], dtype=np.float64))
    n = len(z)
    if n == 0:
        raise ValueError("pull_summary needs at least one finite pull")
    tail = 2.0 * stats.norm.sf(limit)
    beyond = int(np.count_nonzero(z > limit))
    largest = float(z.max())
    return {
        "n": n,
        "beyond": beyond,
        "expected": float(n * tail),
        "p_count": float(stats.binom.sf(beyond - 1, n, tail)),
        "max_pull": largest,
        "p_max": float(-np.expm1(n * np.log1p(-2.0 * stats.norm.sf(largest)))),
    }


# --- reading ---------------------------------------------------------------------------------


def read_events(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> ak.Array:
    """The branches the measurements need, from one or more NanoAOD files, as one array.

    Collections become records (``MET``, ``GenMET``, ``Jet``, ``GenJet``, ``Electron``, ``Muon``,
    ``GenPart``), with floats as float64 and integers as int64 whatever the NanoAOD version
    stored. MET is ``MET_*`` or, where absent (NanoAOD v15), ``PFMET_*``; ``Pileup`` (``nPU``)
    and ``rho`` (``Rho_fixedGridRhoFastjetAll`` or ``fixedGridRhoFastjetAll``) are read where
    present (in all files).

    Raises:
        InputError: a file cannot be read, has no ``Events`` tree or lacks a needed branch
            (all missing ones are named, with the file).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    parts = [_read_one(os.fspath(p)) for p in paths]
    if not parts:
        raise InputError("read_events: no input files")
    return pool_events(parts)


def pool_events(parts: Sequence[ak.Array]) -> ak.Array:
    """Concatenate samples read by :func:`read_events`, keeping the fields all of them have.

    Example:
        >>> a = ak.Array({"MET": [{"pt": 1.0}], "rho": [20.0]})
        >>> b = ak.Array({"MET": [{"pt": 2.0}]})
        >>> pooled = pool_events([a, b])
        >>> pooled.fields, pooled.MET.pt.tolist()
        (['MET'], [1.0, 2.0])
    """
    if len(parts) == 1:
        return parts[0]
    common = [f for f in ak.fields(parts[0]) if all(f in ak.fields(p) for p in parts)]
    return ak.concatenate([p[common] for p in parts])


def _read_one(path: str) -> ak.Array:
    import uproot

    try:
        file = uproot.open(path)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from err
    with file:
        if "Events" not in file:
            raise InputError(f"{path}: no Events tree")
        tree = file["Events"]
        keys = set(tree.keys())
        met = next((m for m in ("MET", "PFMET") if f"{m}_pt" in keys), "MET")
        wanted = {"MET": [f"{met}_{f}" for f in _MET_FIELDS]}
        wanted |= {c: [f"{c}_{f}" for f in fields] for c, fields in _COLLECTIONS.items()}
        missing = [b for branches in wanted.values() for b in branches if b not in keys]
        if missing:
            hint = (
                " (generated before hepflow wrote them: generate it again)" if "GenJet_pt" in missing else ""
            )
            raise InputError(f"{path}: missing branches {', '.join(missing)}{hint}")
        optional = [b for b in ("Pileup_nPU", *_RHO_BRANCHES) if b in keys]
        try:
            arrays = tree.arrays([b for bs in wanted.values() for b in bs] + optional, how=dict)
        except Exception as err:  # uproot raises many kinds on corrupt baskets
            raise InputError(f"cannot read {path}: {err}") from err

    columns: dict[str, ak.Array] = {}
    for collection, branches in wanted.items():
        source = met if collection == "MET" else collection
        columns[collection] = ak.zip(
            {b[len(source) + 1 :]: _normalise(b[len(source) + 1 :], arrays[b]) for b in branches}
        )
    if "Pileup_nPU" in arrays:
        columns["Pileup"] = ak.zip({"nPU": ak.values_astype(arrays["Pileup_nPU"], np.float64)})
    rho = next((b for b in _RHO_BRANCHES if b in arrays), None)
    if rho is not None:
        columns["rho"] = ak.values_astype(arrays[rho], np.float64)
    return ak.Array(columns)


def _normalise(name: str, array: ak.Array) -> ak.Array:
    if name in _INTEGER_FIELDS:
        return ak.values_astype(array, np.int64)
    if name == "tightId":
        return ak.values_astype(array, bool)
    return ak.values_astype(array, np.float64)


def _flat(array: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=None)).astype(np.float64)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _g(x: float) -> str:
    return f"{float(x):g}"
