"""Input branches checked against their declared types, before any value is read.

A processor declares the branches it reads and the kind of value each must hold (a
floating-point number for kinematics and scores, an integer for ids and counters, a boolean for
flags, a number for counts); :func:`check_branches` refuses a chunk whose branches are missing or
of another kind with one line naming the file, the branch and its type. A boolean ``MET_pt`` or
an integer b-tag score would otherwise be used as numbers (MET of 0 or 1 GeV, every jet
b-tagged), and a float ``Muon_tightId`` would fail deep inside numpy.

The check reads the *types* of the events (their awkward form), never their values, so it costs
nothing and works the same on eager, virtual and lazy (dask-awkward) coffea events.

Example:
    >>> import awkward as ak
    >>> events = ak.Array({"MET_pt": [True, False], "run": [1, 1]})
    >>> check_branches(events, {"run": "integer"})
    >>> check_branches(events, {"MET_pt": "float"})
    Traceback (most recent call last):
    ...
    hepflow.errors.InputError: input: branch MET_pt has type bool, expected a floating-point number
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import awkward as ak

from hepflow.errors import InputError
from hepflow.processing import source_file

__all__ = ["NANOAOD_KINDS", "Kind", "check_branches", "nanoaod_branches"]

#: What a branch holds: ``"float"`` (a floating-point number), ``"integer"`` (signed or
#: unsigned, not boolean), ``"bool"`` or ``"number"`` (integer or floating-point, not boolean).
Kind = Literal["float", "integer", "bool", "number"]

_EXPECTED: dict[str, str] = {
    "float": "a floating-point number",
    "integer": "an integer",
    "bool": "a boolean",
    "number": "a number (integer or floating-point)",
}
_FLOATS = ("float16", "float32", "float64")
_INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "float": _FLOATS,
    "integer": _INTEGERS,
    "bool": ("bool",),
    "number": _FLOATS + _INTEGERS,
}

#: The declared kind of the NanoAOD branches hepflow reads, by the name of the branch within its
#: collection (``Jet_pt`` -> ``pt``) or of an event-level branch (NanoAOD stores ``Float_t``,
#: ``Int_t``/``UChar_t``/``ULong64_t`` and ``Bool_t``). Scores named ``btag*`` are floating-point.
NANOAOD_KINDS: dict[str, Kind] = {
    "pt": "float",
    "eta": "float",
    "phi": "float",
    "mass": "float",
    "pfRelIso03_all": "float",
    "pfRelIso04_all": "float",
    "charge": "integer",
    "cutBased": "integer",
    "tightId": "bool",
    "pdgId": "integer",
    "statusFlags": "integer",
    "genPartIdxMother": "integer",
    "run": "integer",
    "luminosityBlock": "integer",
    "event": "integer",
    "genWeight": "float",
}


def nanoaod_branches(collections: Mapping[str, Iterable[str]]) -> dict[str, Kind]:
    """The NanoAOD branches ``{collection: names}`` with their declared kinds (:data:`NANOAOD_KINDS`).

    The collection ``""`` holds event-level branches (``run``, ``genWeight``).

    Example:
        >>> nanoaod_branches({"MET": ("pt",), "Jet": ("btagDeepFlavB",), "": ("event",)})
        {'MET_pt': 'float', 'Jet_btagDeepFlavB': 'float', 'event': 'integer'}
    """
    out: dict[str, Kind] = {}
    for collection, names in collections.items():
        for name in names:
            kind = "float" if name.startswith("btag") else NANOAOD_KINDS.get(name)
            if kind is None:
                raise KeyError(f"no declared NanoAOD type for branch {name!r}; add it to NANOAOD_KINDS")
            out[f"{collection}_{name}" if collection else name] = kind
    return out


def check_branches(
    events: Any, required: Mapping[str, Kind], *, optional: Mapping[str, Kind] | None = None
) -> None:
    """Refuse ``events`` if a ``required`` branch is missing, or a present branch has another kind.

    Args:
        events: coffea events (eager, virtual or dask-awkward) or any awkward record array; only
            their form (types) is read.
        required: branch name -> :data:`Kind`. A NanoAOD branch ``Coll_name`` is looked up as the
            field ``name`` of the collection ``Coll`` (how coffea's NanoAOD schema groups them),
            unless the events have a field of the full name (flat trees, event-level branches).
        optional: branches checked only when present (``genWeight``, generator particles).

    Raises:
        InputError: ``<file>: missing branches A, B`` (every missing one), else
            ``<file>: branch B has type T, expected ...`` (every mistyped one, separated by ``;``).
    """
    form = _form(events)
    missing, wrong = [], []
    for names, needed in ((required, True), (optional or {}, False)):
        for name, kind in names.items():
            leaf = _leaf(form, name)
            if leaf is None:
                if needed:
                    missing.append(name)
                continue
            primitive = getattr(leaf, "primitive", None)
            if primitive not in _ACCEPTS[kind]:
                found = primitive or str(leaf.type)
                wrong.append(f"branch {name} has type {found}, expected {_EXPECTED[kind]}")
    if missing:
        raise InputError(f"{source_file(events)}: missing branches {', '.join(missing)}")
    if wrong:
        raise InputError(f"{source_file(events)}: {'; '.join(wrong)}")


def _form(events: Any) -> ak.forms.Form:
    """The form of eager/virtual events (their layout's) or of dask-awkward ones (``.form``)."""
    if isinstance(events, ak.Array):
        return events.layout.form
    return events.form


def _unwrap(form: ak.forms.Form) -> ak.forms.Form:
    """The content under lists, regular dimensions, options and indices."""
    while not isinstance(form, ak.forms.RecordForm | ak.forms.NumpyForm) and hasattr(form, "content"):
        form = form.content
    return form


def _leaf(form: ak.forms.Form, name: str) -> ak.forms.Form | None:
    """The content form of branch ``name`` (unwrapped), or None when the events lack it."""
    record = _unwrap(form)
    if not isinstance(record, ak.forms.RecordForm):
        return None
    if name in record.fields:
        return _unwrap(record.content(name))
    collection, _, field = name.partition("_")
    if not field or collection not in record.fields:
        return None
    inner = _unwrap(record.content(collection))
    if not isinstance(inner, ak.forms.RecordForm) or field not in inner.fields:
        return None
    return _unwrap(inner.content(field))
