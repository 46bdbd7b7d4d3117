"""Neutrino-regression features: columns from selected objects, tensors from columns.

The column names are the stable interface between processing, training and inference (see
the README). Per selected event:

===================  ================================================================
column               meaning
===================  ================================================================
``run``, ``luminosityBlock``, ``event``  event identifiers
``met_px/py``        missing transverse momentum [GeV]
``lep_px/py/pz/e``   the selected lepton's momentum and energy [GeV]
``lep_eta``, ``lep_loge``, ``lep_charge``  its pseudorapidity, ln(E/GeV) and charge
``lep_flavor``       11 (electron) or 13 (muon)
``jet_px/py/eta/loge/btag``  up to ten leading selected jets (jagged); btag is 0/1
``njet``, ``nbjet``  multiplicities of all selected jets and b-tagged jets
``nu_px/py/pz/eta_true``  the nu of W -> e nu or mu nu (None when there is none, e.g. W -> tau nu)
``w_lep_mass_true``, ``top_lep_mass_true``, ``ttbar_mass_true``  parton masses of its W, its top,
                     and t + tbar (:func:`hepflow.neutrino.processor.parton_truth`)
===================  ================================================================

The conditioning input of the flow is built from these columns by :func:`context_arrays`:
flat features (MET, lepton, multiplicities) and a padded jet set with a mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np

#: Flat conditioning features, in the order :func:`context_arrays` stacks them.
FLAT_FEATURES: tuple[str, ...] = (
    "met_px",
    "met_py",
    "lep_px",
    "lep_py",
    "lep_eta",
    "lep_loge",
    "lep_flavor",
    "njet",
    "nbjet",
)
#: Per-jet features, in the order of the last axis of the jet tensor.
JET_FEATURES: tuple[str, ...] = ("jet_px", "jet_py", "jet_eta", "jet_loge", "jet_btag")
#: Truth columns (targets of the regression).
TRUTH_COLUMNS: tuple[str, ...] = ("nu_px_true", "nu_py_true", "nu_pz_true", "nu_eta_true")
#: Discrete flat features (dequantized in training).
DISCRETE_FEATURES: tuple[str, ...] = ("lep_flavor", "njet", "nbjet")
MAX_JETS = 10


def build_columns(
    *,
    event_ids: dict[str, Any],
    met_pt: ak.Array,
    met_phi: ak.Array,
    lepton: ak.Array,
    jets: ak.Array,
    jet_btag: ak.Array,
    neutrino: ak.Array | None,
    max_jets: int = MAX_JETS,
) -> ak.Array:
    """Assemble the flat record array of features (and truth) for selected events.

    Args:
        event_ids: ``run``, ``luminosityBlock`` and ``event`` arrays.
        met_pt, met_phi: MET per event.
        lepton: one lepton per event with ``pt, eta, phi, mass, charge`` and ``flavor`` (11/13).
        jets: selected jets per event (jagged) with ``pt, eta, phi, mass``, sorted by pt.
        jet_btag: 0/1 b-tag decision per selected jet (same structure as ``jets``).
        neutrino: one optional truth neutrino per event (``pt, eta, phi``), or None for data.
        max_jets: keep this many leading jets.
    """
    met = momenta(pt=met_pt, phi=met_phi)
    lep = momenta(pt=lepton.pt, eta=lepton.eta, phi=lepton.phi, mass=lepton.mass)
    lead = jets[:, :max_jets]
    btag = jet_btag[:, :max_jets]
    jet = momenta(pt=lead.pt, eta=lead.eta, phi=lead.phi, mass=lead.mass)
    columns: dict[str, Any] = {
        "run": event_ids["run"],
        "luminosityBlock": event_ids["luminosityBlock"],
        "event": event_ids["event"],
        "met_px": met.x,
        "met_py": met.y,
        "lep_px": lep.px,
        "lep_py": lep.py,
        "lep_pz": lep.pz,
        "lep_e": lep.energy,
        "lep_eta": lepton.eta,
        "lep_loge": np.log(lep.energy),
        "lep_charge": lepton.charge,
        "lep_flavor": lepton.flavor,
        "jet_px": jet.px,
        "jet_py": jet.py,
        "jet_eta": lead.eta,
        "jet_loge": np.log(jet.energy),
        "jet_btag": btag,
        "njet": ak.values_astype(ak.num(jets, axis=1), np.int32),
        "nbjet": ak.values_astype(ak.sum(jet_btag, axis=1), np.int32),
    }
    if neutrino is not None:
        nu = momenta(pt=neutrino.pt, eta=neutrino.eta, phi=neutrino.phi, mass=neutrino.pt * 0)
        columns["nu_px_true"] = nu.px
        columns["nu_py_true"] = nu.py
        columns["nu_pz_true"] = nu.pz
        columns["nu_eta_true"] = neutrino.eta
    return ak.zip({k: _as_float32(k, v) for k, v in columns.items()}, depth_limit=1)


def momenta(**components: Any) -> ak.Array:
    """Momenta with coffea's NanoEvents vector behaviour from one complete set of components.

    Two components (``pt, phi`` or ``x, y``) give transverse vectors (``TwoVector``: ``.x``,
    ``.y``); four (``pt, eta, phi, mass``, ``px, py, pz, E``, ``px, py, eta, E``, ...) give
    Lorentz vectors (``.px``, ``.pz``, ``.energy``, ``a + b``, ``.mass``, ``.sum(axis=1)``). The
    components keep their precision and structure (flat, jagged or optional).

    Example:
        >>> lep = momenta(pt=ak.Array([40.0]), eta=ak.Array([0.0]), phi=ak.Array([0.0]), mass=ak.Array([0.0]))
        >>> nu = momenta(px=ak.Array([-40.0]), py=ak.Array([0.0]), pz=ak.Array([0.0]), mass=ak.Array([0.0]))
        >>> met = momenta(pt=ak.Array([30.0]), phi=ak.Array([np.pi / 2]))
        >>> float(lep.px[0]), round(float(met.y[0]), 9), round(float((lep + nu).mass[0]), 9)
        (40.0, 30.0, 80.0)
    """
    from coffea.nanoevents.methods import vector

    name = "TwoVector" if len(components) == 2 else "LorentzVector"
    return ak.zip(components, with_name=name, behavior=vector.behavior)


_INT_COLUMNS = {"run", "luminosityBlock", "event", "njet", "nbjet", "lep_flavor", "lep_charge", "jet_btag"}


def _as_float32(name: str, values: Any) -> Any:
    if name in _INT_COLUMNS:
        return values
    return ak.values_astype(values, np.float32)


def finite_events(*values: Any) -> Any:
    """Per event, whether every given value is finite: a bool numpy array (for dask-awkward
    values, coffea's dask mode, a lazy dask-awkward array).

    Each argument holds one value per event (flat), an optional value (None counts as finite:
    a missing value is not a NaN) or a list per event (jagged; an empty list counts as finite).

    Example:
        >>> import awkward as ak
        >>> finite_events(ak.Array([1.0, np.nan, 2.0]), ak.Array([[1.0], [], [np.inf, 0.0]])).tolist()
        [True, False, False]
        >>> finite_events(ak.Array([1.0, None])).tolist()
        [True, True]
    """
    if not values:
        raise ValueError("finite_events needs at least one array")
    ok: Any = None
    for value in values:
        fin = np.isfinite(value)
        while not isinstance(fin, np.ndarray) and fin.ndim > 1:
            fin = ak.all(fin, axis=-1)
        if isinstance(fin, ak.Array):
            fin = np.asarray(ak.to_numpy(ak.fill_none(fin, True)), bool)
        elif not isinstance(fin, np.ndarray):  # dask-awkward: stays lazy
            fin = ak.fill_none(fin, True)
        ok = fin if ok is None else ok & fin
    assert ok is not None
    return ok


def finite_rows(columns: ak.Array, fields: Sequence[str] | None = None) -> Any:
    """Rows of a feature table whose ``fields`` (default: all) are finite (see :func:`finite_events`)."""
    names = columns.fields if fields is None else fields
    if not names or (isinstance(columns, ak.Array) and len(columns) == 0):
        return np.ones(len(columns), bool)
    return finite_events(*(columns[name] for name in names))


def context_arrays(columns: ak.Array, *, max_jets: int = MAX_JETS) -> dict[str, np.ndarray]:
    """Conditioning arrays for the flow from feature columns.

    Returns ``flat`` (n, len(FLAT_FEATURES)) float32, ``jets`` (n, max_jets,
    len(JET_FEATURES)) float32 zero-padded, and ``mask`` (n, max_jets) bool (True for a real
    jet).

    Example:
        >>> import awkward as ak
        >>> cols = ak.Array([{**{k: 1.0 for k in FLAT_FEATURES},
        ...                   **{k: [1.0, 2.0] for k in JET_FEATURES}}])
        >>> arrays = context_arrays(cols)
        >>> arrays["flat"].shape, arrays["jets"].shape, int(arrays["mask"].sum())
        ((1, 9), (1, 10, 5), 2)
    """
    flat = np.stack([ak.to_numpy(columns[k]).astype(np.float32) for k in FLAT_FEATURES], axis=1)
    counts = np.minimum(ak.to_numpy(ak.num(columns[JET_FEATURES[0]], axis=1)), max_jets)
    mask = np.arange(max_jets)[None, :] < counts[:, None]
    jets = np.zeros((len(columns), max_jets, len(JET_FEATURES)), dtype=np.float32)
    for i, k in enumerate(JET_FEATURES):
        padded = ak.fill_none(ak.pad_none(columns[k][:, :max_jets], max_jets, axis=1, clip=True), 0.0)
        jets[:, :, i] = ak.to_numpy(padded).astype(np.float32)
    return {"flat": flat, "jets": jets, "mask": mask}


def truth_array(columns: ak.Array) -> np.ndarray:
    """The regression target (nu px, py, eta) as an (n, 3) float32 array; NaN where missing."""
    return np.stack(
        [
            ak.to_numpy(ak.fill_none(columns[k], np.nan)).astype(np.float32)
            for k in ("nu_px_true", "nu_py_true", "nu_eta_true")
        ],
        axis=1,
    )
