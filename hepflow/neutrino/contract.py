"""The neutrino model's input contract: the context from your own lepton, jet and MET arrays.

:func:`neutrino_context` turns the objects of a user's own coffea processor (one selected lepton
per event, its selected jets, MET) into exactly the context ``{"flat", "jets", "mask"}`` that the
trained models were fitted on: the same as :func:`hepflow.neutrino.features.context_arrays` of the
columns :class:`hepflow.neutrino.processor.NeutrinoFeatureProcessor` writes for the same objects
(it reuses :func:`~hepflow.neutrino.features.build_columns`). Every input is checked, and a wrong
one is refused with an :class:`~hepflow.errors.InputError` that names it.

The function needs eager (in-memory) awkward or numpy arrays; for coffea's dask mode call it
inside ``dask_awkward.map_partitions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np

from hepflow.errors import InputError
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES, MAX_JETS, build_columns, context_arrays

__all__ = ["neutrino_context"]

_FLOAT = ("float16", "float32", "float64")
_INT = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_LEPTON_FIELDS = ("pt", "eta", "phi", "mass")
_JET_FIELDS = ("pt", "eta", "phi", "mass")


def neutrino_context(
    *,
    met_pt: Any,
    met_phi: Any,
    lepton: Any,
    jets: Any,
    jet_btag: Any,
    btag_wp: float | None = None,
    max_jets: int = MAX_JETS,
) -> dict[str, np.ndarray]:
    """The model context ``{"flat", "jets", "mask"}`` of selected events from your own objects.

    All arguments are keywords; every array has one entry per selected event (``n`` events), in
    the same event order. Momenta and masses are in GeV, angles in radians.

    * ``met_pt``, ``met_phi``: missing transverse momentum, one float per event (flat).
    * ``lepton``: the one selected lepton per event, an awkward record array (or a mapping of
      arrays) with float fields ``pt``, ``eta``, ``phi``, ``mass`` and an integer flavour: either
      ``flavor`` (11 electron, 13 muon) or the NanoAOD ``pdgId`` (±11, ±13). One record per
      event, not a list (take ``leptons[:, 0]`` of events with exactly one lepton). Its charge
      is not a model input and is not read.
    * ``jets``: the selected jets of each event, a jagged record array with float fields
      ``pt``, ``eta``, ``phi``, ``mass`` (any order: they are sorted by decreasing pT here).
    * ``jet_btag``: per jet (same lists as ``jets``), the b-tag decision as integers 0/1 (or
      booleans), or, with ``btag_wp``, the b-tag score: a jet is b-tagged when
      ``score > btag_wp``. The shipped models use DeepJet ``btagDeepFlavB > 0.2783``
      (:class:`~hepflow.neutrino.selection.NeutrinoSelection` ``.btag_wp``).
    * ``btag_wp``: the working point when ``jet_btag`` holds scores; None for decisions.
    * ``max_jets``: the number of leading jets (by pT) in the jet set (the models: 10).

    The selection is yours: the function builds features, it does not cut. To match the trained
    models select as the shipped ``[selection]`` does (``hepflow config show neutrino``: exactly
    one tight isolated e or μ; jets with pT > 25 GeV, |η| < 2.5, ΔR(jet, lepton) > 0.4; events
    with ≥ 4 such jets, ≥ 1 of them b-tagged). ``njet`` and ``nbjet`` count all jets passed,
    also beyond the ``max_jets`` leading ones.

    Returns ``flat`` ``(n, 9)`` float32 with the columns
    :data:`~hepflow.neutrino.features.FLAT_FEATURES` (``met_px, met_py, lep_px, lep_py,
    lep_eta, lep_loge, lep_flavor, njet, nbjet``), ``jets`` ``(n, max_jets, 5)`` float32 with
    :data:`~hepflow.neutrino.features.JET_FEATURES` (``jet_px, jet_py, jet_eta, jet_loge,
    jet_btag``), zero-padded, and ``mask`` ``(n, max_jets)`` bool, True for a real jet: the
    inputs of the exported sampler, in the order ``flat, jets, mask``.

    Refused with :class:`~hepflow.errors.InputError`: a missing field; a wrong type (an integer
    or boolean where a float momentum is expected, a float flavour or decision, lists where one
    value per event is expected, one value where a list per jet is expected); missing values
    (None); a flavour other than 11/13 or a decision other than 0/1; different event counts, or
    a different number of b-tag entries than jets in an event; NaN or infinite inputs, or
    features that overflow (a massless lepton or jet with zero momentum).

    Example:
        >>> import awkward as ak, numpy as np
        >>> lepton = ak.zip({"pt": [40.0, 35.0], "eta": [0.1, -1.2], "phi": [0.5, 2.0],
        ...                  "mass": [0.0, 0.106], "flavor": [11, 13]})
        >>> jets = ak.zip({"pt": [[30.0, 80.0, 50.0, 26.0], [60.0, 45.0, 40.0, 30.0, 28.0]],
        ...                "eta": [[0.0, 1.0, -1.0, 2.0], [0.5, 0.2, -0.3, 1.1, -2.0]],
        ...                "phi": [[0.0, 1.0, 2.0, 3.0], [-1.0, 0.0, 1.0, 2.0, -2.5]],
        ...                "mass": [[5.0, 10.0, 8.0, 4.0], [9.0, 7.0, 6.0, 5.0, 4.0]]})
        >>> score = ak.Array([[0.9, 0.1, 0.05, 0.5], [0.01, 0.99, 0.3, 0.2, 0.1]])
        >>> ctx = neutrino_context(met_pt=np.array([50.0, 20.0]), met_phi=np.array([0.0, 1.0]),
        ...                        lepton=lepton, jets=jets, jet_btag=score, btag_wp=0.2783)
        >>> ctx["flat"].shape, ctx["jets"].shape, ctx["mask"].sum(axis=1).tolist()
        ((2, 9), (2, 10, 5), [4, 5])
        >>> ctx["flat"][:, -3:].tolist()  # lep_flavor, njet, nbjet
        [[11.0, 4.0, 2.0], [13.0, 5.0, 2.0]]
        >>> ctx["jets"][0, :4, -1].tolist()  # b-tag of the jets by decreasing pT: 80, 50, 30, 26
        [0.0, 0.0, 1.0, 1.0]
        >>> neutrino_context(met_pt=np.array([50, 20]), met_phi=np.array([0.0, 1.0]),
        ...                  lepton=lepton, jets=jets, jet_btag=score, btag_wp=0.2783)
        Traceback (most recent call last):
        ...
        hepflow.errors.InputError: met_pt must hold floating-point values (GeV or radians), got int64
    """
    n = len(_as_array("met_pt", met_pt))
    met_pt_v = _flat("met_pt", met_pt, n, _FLOAT)
    met_phi_v = _flat("met_phi", met_phi, n, _FLOAT)

    lep = _records("lepton", lepton, n)
    lep_values = {f: _flat(f"lepton.{f}", _field("lepton", lep, f), n, _FLOAT) for f in _LEPTON_FIELDS}
    lep_values["flavor"] = _flavor(lep, n)

    jet_rec = _records("jets", jets, n)
    jet_values = {f: _jagged(f"jets.{f}", _field("jets", jet_rec, f), n, _FLOAT) for f in _JET_FIELDS}
    counts = ak.num(jet_values["pt"], axis=1)
    for f in _JET_FIELDS[1:]:
        _same_counts(f"jets.{f}", jet_values[f], "jets.pt", counts)
    btag = _btag(jet_btag, btag_wp, n, counts)
    if isinstance(max_jets, bool) or not isinstance(max_jets, int | np.integer) or max_jets < 1:
        raise InputError(f"max_jets must be a positive integer, got {max_jets!r}")

    order = ak.argsort(jet_values["pt"], axis=1, ascending=False, stable=True)
    sorted_jets = ak.zip({f: jet_values[f][order] for f in _JET_FIELDS})
    zeros = np.zeros(n, np.int64)
    with np.errstate(all="ignore"):  # an overflow is reported below, naming the feature
        columns = build_columns(
            event_ids={"run": zeros, "luminosityBlock": zeros, "event": zeros},
            met_pt=ak.Array(met_pt_v),
            met_phi=ak.Array(met_phi_v),
            lepton=ak.zip({**lep_values, "charge": np.zeros(n, np.int32)}),
            jets=sorted_jets,
            jet_btag=btag[order],
            neutrino=None,
            max_jets=int(max_jets),
        )
        context = context_arrays(columns, max_jets=int(max_jets))
    _finite_features(context)
    return context


def _as_array(name: str, value: Any) -> ak.Array:
    if isinstance(value, ak.Array):
        return value
    if type(value).__module__.startswith("dask"):
        raise InputError(
            f"{name} is a {type(value).__name__}: neutrino_context needs eager arrays "
            "(call it inside dask_awkward.map_partitions)"
        )
    if isinstance(value, np.ndarray | Mapping | list | tuple):
        try:
            return ak.Array(value)
        except Exception as err:
            raise InputError(f"{name} is not an array: {err}") from err
    raise InputError(f"{name} must be an awkward or numpy array, got {type(value).__name__}")


def _no_missing(name: str, arr: ak.Array, jagged: bool) -> ak.Array:
    clean = ak.drop_none(arr)
    missing = len(clean) != len(arr)
    if not missing and jagged and arr.ndim > 1:
        missing = bool(ak.any(ak.num(clean, axis=1) != ak.num(arr, axis=1)))
    if missing:
        raise InputError(f"{name} has missing values (None)")
    return clean


def _primitive(name: str, arr: ak.Array, depth: int, what: str) -> str:
    """The dtype of ``arr``'s values after ``depth`` list levels (refusing other nesting)."""
    t = ak.type(arr).content
    for _ in range(depth):
        if isinstance(t, ak.types.UnknownType):
            return "unknown"
        if not isinstance(t, ak.types.ListType | ak.types.RegularType):
            raise InputError(f"{name} must be {what}, got one value per event (type {ak.type(arr)})")
        t = t.content
    if isinstance(t, ak.types.UnknownType):
        return "unknown"
    if isinstance(t, ak.types.ListType | ak.types.RegularType):
        got = "a list per event" if depth == 0 else "nested lists"
        raise InputError(f"{name} must be {what}, got {got} (type {ak.type(arr)})")
    if not isinstance(t, ak.types.NumpyType):
        raise InputError(f"{name} must be {what} of numbers, got type {ak.type(arr)}")
    return str(t.primitive)


def _check_kind(name: str, primitive: str, kinds: tuple[str, ...]) -> None:
    if primitive == "unknown" or primitive in kinds:
        return
    want = "floating-point values (GeV or radians)" if kinds is _FLOAT else "integers"
    raise InputError(f"{name} must hold {want}, got {primitive}")


def _flat(name: str, value: Any, n: int, kinds: tuple[str, ...]) -> np.ndarray:
    arr = _no_missing(name, _as_array(name, value), jagged=False)
    primitive = _primitive(name, arr, 0, "one value per event")
    _check_kind(name, primitive, kinds)
    if len(arr) != n:
        raise InputError(f"{name} has {len(arr)} events, met_pt has {n}")
    values = ak.to_numpy(ak.without_parameters(arr))
    if primitive == "unknown":
        values = values.astype(np.float32 if kinds is _FLOAT else np.int32)
    if kinds is _FLOAT:
        _finite(name, values)
    return values


def _jagged(name: str, value: Any, n: int, kinds: tuple[str, ...]) -> ak.Array:
    arr = _no_missing(name, _as_array(name, value), jagged=True)
    primitive = _primitive(name, arr, 1, "a list per event (one value per jet)")
    _check_kind(name, primitive, kinds)
    if len(arr) != n:
        raise InputError(f"{name} has {len(arr)} events, met_pt has {n}")
    arr = ak.without_parameters(arr)
    if primitive == "unknown":
        arr = ak.values_astype(arr, np.float32 if kinds is _FLOAT else np.int8)
    if kinds is _FLOAT:
        _finite(name, ak.to_numpy(ak.flatten(arr, axis=1)), per=ak.to_numpy(ak.num(arr, axis=1)))
    return arr


def _finite(name: str, values: np.ndarray, per: np.ndarray | None = None) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        if per is not None:  # count events, not jets
            starts = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.intp)
            n_bad = int(np.count_nonzero(np.add.reduceat(bad, starts)[per > 0]))
        else:
            n_bad = int(bad.sum())
        raise InputError(f"{name} is NaN or infinite in {n_bad} event(s)")


def _records(name: str, value: Any, n: int) -> ak.Array:
    arr = _as_array(name, value)
    if not arr.fields:
        fields = ", ".join(_LEPTON_FIELDS if name == "lepton" else _JET_FIELDS)
        raise InputError(f"{name} must be an awkward record array with fields {fields}, got {ak.type(arr)}")
    if len(arr) != n:
        raise InputError(f"{name} has {len(arr)} events, met_pt has {n}")
    return arr


def _field(name: str, records: ak.Array, field: str) -> ak.Array:
    if field not in records.fields:
        raise InputError(f"{name} has no field {field!r} (fields: {', '.join(records.fields)})")
    return records[field]


def _flavor(lep: ak.Array, n: int) -> np.ndarray:
    if "flavor" in lep.fields:
        name, values = "lepton.flavor", _flat("lepton.flavor", lep["flavor"], n, _INT)
    elif "pdgId" in lep.fields:
        name, values = "lepton.pdgId", np.abs(_flat("lepton.pdgId", lep["pdgId"], n, _INT))
    else:
        raise InputError(f"lepton has no field 'flavor' (11/13) or 'pdgId' (fields: {', '.join(lep.fields)})")
    wrong = (values != 11) & (values != 13)
    if wrong.any():
        raise InputError(f"{name} must be 11/13 (electron/muon), got {sorted(set(values[wrong].tolist()))}")
    return values.astype(np.int8)


def _same_counts(name: str, arr: ak.Array, ref_name: str, counts: ak.Array) -> None:
    differ = ak.to_numpy(ak.num(arr, axis=1) != counts)
    if differ.any():
        raise InputError(f"{name} has another number of jets than {ref_name} in {int(differ.sum())} event(s)")


def _btag(jet_btag: Any, btag_wp: float | None, n: int, counts: ak.Array) -> ak.Array:
    arr = _no_missing("jet_btag", _as_array("jet_btag", jet_btag), jagged=True)
    primitive = _primitive("jet_btag", arr, 1, "a list per event (one value per jet)")
    if btag_wp is None:
        if primitive in _FLOAT:
            raise InputError(
                "jet_btag holds floating-point scores: pass btag_wp (the shipped models use "
                "btagDeepFlavB > 0.2783), or 0/1 decisions"
            )
        _check_kind("jet_btag", primitive, (*_INT, "bool"))
    else:
        if isinstance(btag_wp, bool) or not isinstance(btag_wp, float | int) or not np.isfinite(btag_wp):
            raise InputError(f"btag_wp must be a finite number, got {btag_wp!r}")
        if primitive not in (*_FLOAT, "unknown"):
            raise InputError(
                f"btag_wp is given but jet_btag holds {primitive} decisions: pass the scores, or "
                "the 0/1 decisions without btag_wp"
            )
    if len(arr) != n:
        raise InputError(f"jet_btag has {len(arr)} events, met_pt has {n}")
    arr = ak.without_parameters(arr)
    _same_counts("jet_btag", arr, "jets", counts)
    flat = ak.to_numpy(ak.flatten(arr, axis=1))
    if btag_wp is None:
        wrong = (flat != 0) & (flat != 1)
        if wrong.any():
            raise InputError(f"jet_btag decisions must be 0 or 1, got {sorted(set(flat[wrong].tolist()))}")
        return ak.values_astype(arr, np.int8)
    _finite("jet_btag", flat.astype(np.float64), per=ak.to_numpy(ak.num(arr, axis=1)))
    return ak.values_astype(arr > btag_wp, np.int8)


def _finite_features(context: dict[str, np.ndarray]) -> None:
    for key, names in (("flat", FLAT_FEATURES), ("jets", JET_FEATURES)):
        values = context[key]
        bad = ~np.isfinite(values)
        if bad.any():
            axes = tuple(range(values.ndim - 1))
            which = [names[i] for i in np.flatnonzero(bad.any(axis=axes))]
            n_bad = int(bad.reshape(len(values), -1).any(axis=1).sum())
            raise InputError(
                f"the features {', '.join(which)} are not finite in {n_bad} event(s) "
                "(a lepton or jet with zero energy?)"
            )
