"""Coffea processor: one row per simulated ttbar event with its particle and detector levels.

For unfolding, every generated event counts: those passing only the particle-level (fiducial)
selection measure the inefficiency, those passing only the detector-level selection are fakes.
The processor writes, per event:

=========================  ==============================================================
column                     meaning
=========================  ==============================================================
``run``, ``luminosityBlock``, ``event``  event identifiers
``weight``                 ``genWeight`` (1 when the file has none)
``gen_valid``              the event has one t, one tbar and one e/mu from a W
``gen_top_pt``, ``gen_mtt``  particle-level observables (None when not ``gen_valid``)
``gen_lep_pt``, ``gen_lep_eta``  the particle-level charged lepton (None when not ``gen_valid``)
``gen_fiducial``           passes the particle-level selection (:class:`ParticleSelection`)
``reco_selected``          passes the detector-level selection (the neutrino analysis's)
``reco_top_pt``, ``reco_mtt``  detector-level observables (None when not selected)
``met_px`` ... ``nbjet``   the neutrino-analysis features (None, jet lists empty, if not selected)
``nu_px_true`` ...         the neutrino analysis's truth neutrino and parton truth columns
                           (None if not selected or without a W -> e nu / mu nu), for a
                           neutrino flow trained on these events
=========================  ==============================================================

Definitions are in :mod:`hepflow.unfolding.observables`. The detector-level selection and
features are exactly those of :class:`hepflow.neutrino.processor.NeutrinoFeatureProcessor` (run on the
same chunk and matched back by event id). Like every processor here it does no I/O: run it
through :func:`hepflow.processing.run_processor`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import awkward as ak
import numpy as np

from hepflow.config import load
from hepflow.errors import InputError
from hepflow.inputs import check_branches, nanoaod_branches
from hepflow.neutrino.processor import GENPART_BRANCHES, NeutrinoFeatureProcessor
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.processing import (
    ChunkColumns,
    ColumnProcessor,
    Cutflow,
    event_weights,
    per_partition,
    source_file,
)
from hepflow.unfolding.observables import OBSERVABLES, detector_level, particle_level

#: Cutflow steps added after the neutrino processor's detector-level steps.
CUTFLOW_STEPS = ("particle level", "particle fiducial", "both levels")
_IDS = ("run", "luminosityBlock", "event")


@dataclass(frozen=True)
class ParticleSelection:
    """Particle-level (fiducial) selection: the charged lepton from the W in the acceptance."""

    lepton_pt_min: float = 30.0
    lepton_eta_max: float = 2.4

    def __post_init__(self) -> None:
        if self.lepton_pt_min < 0 or self.lepton_eta_max <= 0:
            raise ValueError(
                f"invalid particle-level cuts lepton_pt_min={self.lepton_pt_min}, "
                f"lepton_eta_max={self.lepton_eta_max}"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ParticleSelection:
        """Read the ``[particle]`` table of a TOML config (unknown keys are refused)."""
        return load(cls, path, section="particle")


class UnfoldingProcessor(ColumnProcessor):
    """Particle- and detector-level observables of every event, with the cINN context features.

    :meth:`columns` gives one row per input event (with its generator weight ``weight``) and the
    cutflows (events, and sum of weights and of squared weights): the neutrino selection's steps
    followed by :data:`CUTFLOW_STEPS`. In a coffea ``Runner`` the output is per dataset
    (:class:`~hepflow.processing.ColumnProcessor`).
    """

    def __init__(
        self, selection: NeutrinoSelection | None = None, particle: ParticleSelection | None = None
    ) -> None:
        self.selection = selection or NeutrinoSelection()
        self.particle = particle or ParticleSelection()

    def columns(self, events: Any) -> ChunkColumns:
        name = source_file(events)
        if "GenPart" not in events.fields:
            raise InputError(f"{name}: no GenPart branches; unfolding needs simulated events with truth")
        check_branches(events, nanoaod_branches({"GenPart": GENPART_BRANCHES}))
        detector = NeutrinoFeatureProcessor(self.selection).columns(events)
        ids = ak.zip({k: events[k] for k in _IDS}, depth_limit=1)
        weight = event_weights(events)
        genpart = events.GenPart
        # the GenPart branches, without NanoEvents' derived (global index) fields
        branches = ak.zip({f: genpart[f] for f in genpart.fields if not f.endswith("G")}, depth_limit=2)
        # particle_level (GenPart cross-references), matching the two levels by event id and the
        # detector-level kinematics are numpy code: in coffea's dask mode they run per partition
        # (the selected rows of a partition are among its events)
        columns = per_partition(
            partial(self._levels, where=name),
            ids,
            branches,
            weight,
            detector.columns,
            label="unfolding-levels",
        )
        cutflow = Cutflow(detector)
        cutflow.add("particle level", weight[columns.gen_valid])
        cutflow.add("particle fiducial", weight[columns.gen_fiducial])
        cutflow.add("both levels", weight[columns.gen_fiducial & columns.reco_selected])
        return cutflow.chunk(columns)

    def _levels(
        self, ids: ak.Array, genpart: ak.Array, weight: ak.Array, selected: ak.Array, *, where: str
    ) -> ak.Array:
        """One row per event (eager arrays): both levels, the selected rows placed at their events.

        ``genpart`` holds the ``GenPart`` branches (pt, eta, phi, mass, pdgId, statusFlags,
        genPartIdxMother, ...) as a plain record; they become NanoEvents again here, so that
        :func:`particle_level` finds the cross-references (``distinctParent``) within the chunk or
        partition.
        """
        n = len(ids)
        part = particle_level(_genpart_events(ids, genpart).GenPart)
        cuts = self.particle
        with np.errstate(invalid="ignore"):
            fiducial = (
                part.valid & (part.lep_pt > cuts.lepton_pt_min) & (np.abs(part.lep_eta) < cuts.lepton_eta_max)
            )
        event_ids = {k: np.asarray(ak.to_numpy(ids[k])) for k in _IDS}
        rows = match_rows(event_ids, {k: np.asarray(ak.to_numpy(selected[k])) for k in _IDS}, where=where)
        reco = np.zeros(n, dtype=bool)
        reco[rows] = True
        position = np.full(n, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        det = detector_level(selected)
        columns: dict[str, Any] = {
            **event_ids,
            "weight": np.asarray(ak.to_numpy(weight), np.float32),
            "gen_valid": part.valid,
        }
        for key in ("top_pt", "mtt", "lep_pt", "lep_eta"):
            columns[f"gen_{key}"] = _optional(getattr(part, key).astype(np.float32), part.valid)
        columns["gen_fiducial"] = fiducial
        columns["reco_selected"] = reco
        for key in OBSERVABLES:
            columns[f"reco_{key}"] = _scatter(ak.Array(det[key].astype(np.float32)), position)
        for field in selected.fields:
            if field not in _IDS and field != "weight":
                columns[field] = _scatter(selected[field], position)
        return ak.zip(columns, depth_limit=1)


class _Branches(dict):
    """The branches of a chunk by name, with the ``metadata`` coffea's ``from_preloaded`` reads."""

    metadata: dict[str, Any]


def _genpart_events(ids: ak.Array, genpart: ak.Array) -> Any:
    """Eager NanoEvents (NanoAOD schema) of the event ids and ``GenPart`` branches of a chunk."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    source = _Branches({k: ids[k] for k in _IDS})
    source["nGenPart"] = ak.num(genpart, axis=1)
    source.update({f"GenPart_{f}": genpart[f] for f in genpart.fields})
    source.metadata = {"uuid": "hepflow-genpart", "num_rows": len(ids), "path": "", "object_path": "Events"}
    return NanoEventsFactory.from_preloaded(source, schemaclass=NanoAODSchema).events()


def match_rows(
    all_ids: dict[str, np.ndarray], subset_ids: dict[str, np.ndarray], *, where: str
) -> np.ndarray:
    """Index into the events of every row of a subset, matched by (run, luminosityBlock, event)."""
    keys = _keys(all_ids)
    order = np.argsort(keys, kind="stable")
    if len(keys) > 1 and np.any(keys[order][1:] == keys[order][:-1]):
        raise InputError(f"{where}: duplicate (run, luminosityBlock, event) ids; cannot match the levels")
    wanted = _keys(subset_ids)
    pos = np.searchsorted(keys[order], wanted)
    pos = np.clip(pos, 0, max(len(keys) - 1, 0))
    if len(wanted) and (len(keys) == 0 or np.any(keys[order][pos] != wanted)):
        raise InputError(f"{where}: selected events not found among the input events")
    return order[pos] if len(wanted) else np.zeros(0, dtype=np.int64)


def _keys(ids: dict[str, np.ndarray]) -> np.ndarray:
    n = len(ids["event"])
    keys = np.empty(n, dtype=[(k, np.uint64) for k in _IDS])
    for k in _IDS:
        keys[k] = ids[k]
    return keys


def _optional(values: np.ndarray, valid: np.ndarray) -> ak.Array:
    """``values`` as an option-type array, None where not ``valid``."""
    return ak.mask(ak.Array(values), ak.Array(valid))


def _scatter(values: ak.Array, position: np.ndarray) -> ak.Array:
    """Rows of ``values`` placed at the events where ``position >= 0``.

    Elsewhere None for one value per event, an empty list for a list per event (jet features),
    so that the columns also go to ROOT (values with ``_valid`` flags, jagged with counters).
    """
    out = ak.Array(
        ak.contents.IndexedOptionArray.simplified(ak.index.Index64(position), ak.to_layout(values))
    )
    return ak.fill_none(out, [], axis=0) if values.ndim > 1 else out
