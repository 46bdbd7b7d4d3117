"""Pythia event records to CMS NanoAOD columns.

A batch of Pythia event records (the awkward array of ``Pythia.nextBatch``) is flattened into
an :class:`EventRecord`; from it come

* the pruned ``GenPart`` decay tree of semileptonic ttbar (:func:`ttbar_genpart`): ten entries
  per event, in this order::

      0 t      1 tbar    2 W+ (from t)   3 W- (from tbar)   4 b (from t)   5 bbar (from tbar)
      6, 7 the W+ daughters              8, 9 the W- daughters

  with ``genPartIdxMother`` inside the list (-1 for the tops). Tops and Ws are their last copies
  (after radiation, the ones that decay), b quarks and W daughter quarks their first copies (as
  produced in the decay, so that the daughters add up to the mother), charged leptons and
  neutrinos their final copies (status 1, after photon radiation);
* the inputs of the detector simulation: the stable particles (:func:`stable_particles`) and
  the ghosts that label jet flavour (:func:`flavour_ghosts`);
* the generator-level branches that measure the detector response (:func:`generator_columns`):
  ``GenJet`` (anti-kt 0.4 on the visible stable particles), ``Jet_genJetIdx`` and ``GenMET``;
* and, with the reconstructed objects, the NanoAOD branches (:func:`nanoaod_columns`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import awkward as ak
import numpy as np

from hepflow.generate.detector import (
    Ghosts,
    Particles,
    cluster_gen_jets,
    collection,
    delta_phi,
    pseudorapidity,
)

#: GenPart statusFlags bits (CMSSW ``GenStatusFlags``) set by this module.
IS_PROMPT = 1 << 0
IS_HARD_PROCESS = 1 << 7
FROM_HARD_PROCESS = 1 << 8
IS_FIRST_COPY = 1 << 12
IS_LAST_COPY = 1 << 13

#: Mother of each of the ten GenPart entries, as an index into the pruned list.
GENPART_MOTHER = np.array([-1, -1, 0, 1, 0, 1, 2, 2, 3, 3], dtype=np.int16)
GENPART_SIZE = len(GENPART_MOTHER)

_MAX_COPIES = 1000  # longer carbon-copy chains mean a corrupt record

#: Largest Delta R between a jet and its ``GenJet`` (``Jet_genJetIdx``): CMS ``patJetGenJetMatch``
#: (``maxDeltaR = 0.4``, one-to-one, jets taken in pT order). The CMS ttbar samples in
#: ``tests/samples`` have matched pairs up to Delta R = 0.37, 1-2 % of them above 0.2.
GENJET_MATCH_DR = 0.4
_NEUTRINOS = (12, 14, 16)
_GENJET_TYPES = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "hadronFlavour": np.uint8,
    "partonFlavour": np.int16,
}


@dataclass(frozen=True)
class EventRecord:
    """Pythia event records of a batch of events, flattened: one row per record entry.

    Rows ``offsets[k]:offsets[k + 1]`` are event ``k``; daughter indices are local to the event,
    as in Pythia (0 means none).
    """

    offsets: np.ndarray
    pdg_id: np.ndarray
    status: np.ndarray
    daughter1: np.ndarray
    daughter2: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    m: np.ndarray

    @classmethod
    def from_pythia(cls, prt: ak.Array) -> EventRecord:
        """Flatten the ``prt`` field of ``Pythia.nextBatch`` output."""

        def flat(array: ak.Array, dtype: type) -> np.ndarray:
            return ak.to_numpy(ak.flatten(array)).astype(dtype, copy=False)

        return cls(
            offsets=np.r_[0, np.cumsum(ak.to_numpy(ak.num(prt)))].astype(np.int64),
            pdg_id=flat(prt.id, np.int32),
            status=flat(prt.status, np.int32),
            daughter1=flat(prt.daughter1, np.int64),
            daughter2=flat(prt.daughter2, np.int64),
            px=flat(prt.p.px, np.float64),
            py=flat(prt.p.py, np.float64),
            pz=flat(prt.p.pz, np.float64),
            e=flat(prt.p.e, np.float64),
            m=flat(prt.m, np.float64),
        )

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def event(self) -> np.ndarray:
        """Event (0-based, within the batch) of every row."""
        return np.repeat(np.arange(self.n_events), np.diff(self.offsets))

    def last_copy(self, rows: np.ndarray) -> np.ndarray:
        """Follow each row down its chain of copies (a daughter with the same id) to the last one."""
        rows = np.asarray(rows, dtype=np.int64)
        base = self.offsets[self.event[rows]]
        for _ in range(_MAX_COPIES):
            step = rows
            for daughter in (self.daughter2, self.daughter1):  # daughter1 wins
                d = daughter[rows]
                candidate = np.where(d > 0, base + d, rows)
                step = np.where((d > 0) & (self.pdg_id[candidate] == self.pdg_id[rows]), candidate, step)
            if np.array_equal(step, rows):
                return rows
            rows = step
        raise RuntimeError("carbon-copy chain longer than the event record allows")

    def daughter_with(self, rows: np.ndarray, accept: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The first or second daughter of each row, whichever has an id for which ``accept`` holds."""
        base = self.offsets[self.event[rows]]
        first, second = base + self.daughter1[rows], base + self.daughter2[rows]
        ok_first = accept(self.pdg_id[first])
        if not np.all(ok_first | accept(self.pdg_id[second])):
            raise RuntimeError("unexpected decay in the event record")
        return np.where(ok_first, first, second)


@dataclass(frozen=True)
class GenPart:
    """The pruned ttbar decay tree: one row per event, one column per entry (see the module doc).

    ``rows`` are the event-record rows of the entries; ``lepton`` is the position (6 to 9) of the
    charged lepton.
    """

    rows: np.ndarray
    first_rows: np.ndarray
    last_rows: np.ndarray
    lepton: np.ndarray


def ttbar_genpart(record: EventRecord) -> GenPart:
    """Locate the ten entries of the semileptonic ttbar decay tree in every event."""
    tops = np.flatnonzero((np.abs(record.pdg_id) == 6) & (np.abs(record.status) == 22))
    top_event = record.event[tops]
    if not np.array_equal(np.bincount(top_event, minlength=record.n_events), np.full(record.n_events, 2)):
        raise RuntimeError("expected exactly one t and one tbar per event")
    top_first = tops[np.lexsort((-record.pdg_id[tops], top_event))].reshape(-1, 2)  # t before tbar
    top_last = record.last_copy(top_first.ravel())
    w_first = record.daughter_with(top_last, lambda i: np.abs(i) == 24)
    b_first = record.daughter_with(top_last, lambda i: np.abs(i) != 24)
    w_last = record.last_copy(w_first)
    base = record.offsets[record.event[w_last]]
    dau_first = np.stack([base + record.daughter1[w_last], base + record.daughter2[w_last]], axis=1).ravel()
    dau_id = np.abs(record.pdg_id[dau_first])
    is_lepton = (dau_id == 11) | (dau_id == 13)
    # leptons and neutrinos at their final copy, quarks as produced in the W decay
    dau = np.where(dau_id > 10, record.last_copy(dau_first), dau_first)

    n = record.n_events
    is_lepton = is_lepton.reshape(n, 4)
    if np.any(is_lepton.sum(axis=1) != 1):
        raise RuntimeError("expected exactly one W -> e/mu nu per event")
    first = np.column_stack(
        [top_first, w_first.reshape(n, 2), b_first.reshape(n, 2), dau_first.reshape(n, 4)]
    )
    rows = np.column_stack(
        [top_last.reshape(n, 2), w_last.reshape(n, 2), b_first.reshape(n, 2), dau.reshape(n, 4)]
    )
    return GenPart(
        rows=rows,
        first_rows=first,
        last_rows=record.last_copy(rows.ravel()).reshape(n, GENPART_SIZE),
        lepton=6 + np.argmax(is_lepton, axis=1),
    )


def genpart_columns(record: EventRecord, genpart: GenPart) -> ak.Array:
    """The NanoAOD ``GenPart`` collection (ten entries per event) with NanoAOD dtypes."""
    rows = genpart.rows
    px, py, pz = record.px[rows], record.py[rows], record.pz[rows]
    status = record.status[rows]
    flags = (
        IS_PROMPT
        | FROM_HARD_PROCESS
        | np.where((np.abs(status) >= 21) & (np.abs(status) <= 29), IS_HARD_PROCESS, 0)
        | np.where(rows == genpart.first_rows, IS_FIRST_COPY, 0)
        | np.where(rows == genpart.last_rows, IS_LAST_COPY, 0)
    )
    n = rows.shape[0]
    fields = {
        "pt": np.hypot(px, py).astype(np.float32),
        "eta": pseudorapidity(px, py, pz).astype(np.float32),
        "phi": np.arctan2(py, px).astype(np.float32),
        "mass": record.m[rows].astype(np.float32),
        "pdgId": record.pdg_id[rows].astype(np.int32),
        "status": np.where(status > 0, 1, np.abs(status)).astype(np.int32),
        "statusFlags": flags.astype(np.uint16),
        "genPartIdxMother": np.broadcast_to(GENPART_MOTHER, rows.shape),
    }
    counts = np.full(n, GENPART_SIZE)
    return ak.unflatten(ak.zip({k: v.ravel() for k, v in fields.items()}, depth_limit=1), counts)


def stable_particles(
    record: EventRecord, genpart: GenPart | None, charge: Callable[[np.ndarray], np.ndarray]
) -> Particles:
    """The final-state particles (detector input), the prompt lepton linked to its GenPart entry
    (no link at all without ``genpart``: minimum-bias events).

    ``charge`` maps PDG ids to electric charges (in units of e).
    """
    rows = np.flatnonzero(record.status > 0)
    event = record.event[rows]
    link = np.full(len(record.pdg_id), -1, dtype=np.int16)
    if genpart is not None:
        lepton_rows = genpart.rows[np.arange(len(genpart.lepton)), genpart.lepton]
        link[lepton_rows] = genpart.lepton
    pdg = record.pdg_id[rows]
    return Particles(
        offsets=np.r_[0, np.cumsum(np.bincount(event, minlength=record.n_events))],
        px=record.px[rows],
        py=record.py[rows],
        pz=record.pz[rows],
        e=record.e[rows],
        pdg_id=pdg,
        charge=charge(pdg),
        genpart_idx=link[rows],
    )


def hadron_flavour(pdg_id: np.ndarray) -> np.ndarray:
    """5 for hadrons with a b quark, 4 for hadrons with a c (and no b) quark, 0 for anything else.

    Example:
        >>> hadron_flavour(np.array([511, -5122, 421, 211, 5, 5101])).tolist()
        [5, 5, 4, 0, 0, 0]
    """
    code = np.abs(pdg_id) % 10000
    q1, q2, q3 = code // 1000 % 10, code // 100 % 10, code // 10 % 10
    hadron = (code >= 100) & (q3 != 0)  # excludes quarks, leptons, bosons and diquarks
    heaviest = np.maximum(q1, q2)
    return np.where(hadron & ((heaviest == 5) | (heaviest == 4)), heaviest, 0).astype(np.uint8)


def _heavy_quark_sign(pdg_id: np.ndarray, flavour: np.ndarray) -> np.ndarray:
    """Sign of the heavy quark (+1 quark, -1 antiquark) in a hadron, by the PDG convention.

    Baryons carry quarks for positive ids; mesons carry the heavy quark for positive ids when it
    is up-type (c) and the antiquark when it is down-type (b): B+ = u bbar, D+ = c dbar.
    """
    sign = np.sign(pdg_id)
    meson = (np.abs(pdg_id) % 10000) // 1000 % 10 == 0
    return np.where(meson & (flavour == 5), -sign, sign)


def flavour_ghosts(record: EventRecord, genpart: GenPart) -> Ghosts:
    """Weakly decaying B and C hadrons and the W-daughter quarks (at their last copy), per event.

    A heavy-flavour hadron is kept when none of its daughters carries the same heavy flavour.
    """
    flavour = hadron_flavour(record.pdg_id)
    base = record.offsets[record.event]
    d1, d2 = record.daughter1, record.daughter2
    lo = np.where(d1 > 0, base + d1, 0)
    hi = np.where(d1 > 0, base + np.maximum(d1, d2), -1)  # empty range without daughters
    last = np.zeros(len(flavour), dtype=bool)
    for fl in (5, 4):
        carries = flavour == fl
        cumulative = np.r_[0, np.cumsum(carries)]
        inside = cumulative[hi + 1] - cumulative[lo]
        # daughter2 < daughter1 means two separate daughters, not a range
        separate = (d2 > 0) & (d2 < d1)
        inside = np.where(separate, carries[lo] + carries[np.where(separate, base + d2, 0)], inside)
        last |= carries & (inside == 0)
    hadrons = np.flatnonzero(last)

    quark_slots = genpart.rows[:, 6:]
    quark_first = genpart.first_rows[:, 6:][np.abs(record.pdg_id[quark_slots]) <= 5]
    quarks = record.last_copy(quark_first)

    rows = np.r_[hadrons, quarks]
    hf = np.r_[flavour[hadrons], np.zeros(len(quarks), dtype=np.uint8)]
    pf = np.r_[
        _heavy_quark_sign(record.pdg_id[hadrons], flavour[hadrons]) * flavour[hadrons].astype(np.int16),
        record.pdg_id[quarks],
    ].astype(np.int16)
    order = np.argsort(record.event[rows], kind="stable")
    rows, hf, pf = rows[order], hf[order], pf[order]
    event = record.event[rows]
    return Ghosts(
        offsets=np.r_[0, np.cumsum(np.bincount(event, minlength=record.n_events))],
        px=record.px[rows],
        py=record.py[rows],
        pz=record.pz[rows],
        e=record.e[rows],
        hadron_flavour=hf,
        parton_flavour=pf,
    )


def nanoaod_columns(
    *,
    run: np.ndarray,
    luminosity_block: np.ndarray,
    event: np.ndarray,
    gen_weight: np.ndarray,
    genpart: ak.Array,
    reco: dict[str, ak.Array | np.ndarray],
) -> dict[str, ak.Array | np.ndarray]:
    """The branches of one batch for ``TTree.extend``: event ids, ``GenPart`` and the reconstruction.

    Collections are jagged record arrays; uproot writes them as ``<Name>_<field>`` branches with
    an ``n<Name>`` counter, the NanoAOD layout.
    """
    return {
        "run": np.asarray(run, dtype=np.uint32),
        "luminosityBlock": np.asarray(luminosity_block, dtype=np.uint32),
        "event": np.asarray(event, dtype=np.uint64),
        "genWeight": np.asarray(gen_weight, dtype=np.float32),
        "GenPart": genpart,
        **reco,
    }


def branch_types(columns: dict[str, ak.Array | np.ndarray]) -> dict[str, object]:
    """``mktree`` branch types of :func:`nanoaod_columns` output (dtypes, or the list-of-record type)."""
    return {
        name: value.dtype if isinstance(value, np.ndarray) else value.type.content
        for name, value in columns.items()
    }


def generator_columns(
    particles: Particles, ghosts: Ghosts, jet: ak.Array
) -> dict[str, ak.Array | np.ndarray]:
    """``GenJet``, ``GenMET_pt``/``GenMET_phi`` and the ``Jet`` collection with ``genJetIdx``.

    * ``GenJet``: anti-kt R = 0.4 jets of the stable particles without neutrinos, pT > 10 GeV
      (:func:`~hepflow.generate.detector.cluster_gen_jets`), sorted by pT, with the flavour
      labels of the reconstructed jets (``hadronFlavour``, ``partonFlavour``);
    * ``GenMET``: the vector sum of the transverse momenta of all neutrinos (the W's and those
      from hadron decays), CMS ``genMetTrue``;
    * ``Jet.genJetIdx``: index of the matched ``GenJet`` (:func:`match_in_order`, Delta R <
      :data:`GENJET_MATCH_DR`), -1 if none.

    ``jet`` is the ``Jet`` collection of :func:`~hepflow.generate.detector.simulate`, sorted by pT.
    """
    n_events = particles.n_events
    gen = cluster_gen_jets(particles, ghosts)
    fields = {
        "pt": np.hypot(gen.px, gen.py),
        "eta": pseudorapidity(gen.px, gen.py, gen.pz),
        "phi": np.arctan2(gen.py, gen.px),
        "mass": np.sqrt(np.maximum(gen.e**2 - gen.px**2 - gen.py**2 - gen.pz**2, 0.0)),
        "hadronFlavour": gen.hadron_flavour,
        "partonFlavour": gen.parton_flavour,
    }
    genjet = collection(fields, gen.event, np.ones(len(gen.event), dtype=bool), n_events, _GENJET_TYPES)

    index = match_in_order(
        (ak.to_numpy(ak.flatten(jet.eta)), ak.to_numpy(ak.flatten(jet.phi))),
        ak.to_numpy(ak.num(jet)),
        (ak.to_numpy(ak.flatten(genjet.eta)), ak.to_numpy(ak.flatten(genjet.phi))),
        ak.to_numpy(ak.num(genjet)),
        max_dr=GENJET_MATCH_DR,
    )
    jet = ak.with_field(jet, ak.unflatten(index.astype(np.int16), ak.num(jet)), "genJetIdx")

    neutrino = np.isin(np.abs(particles.pdg_id), _NEUTRINOS)
    nu_px = np.bincount(particles.event, weights=np.where(neutrino, particles.px, 0.0), minlength=n_events)
    nu_py = np.bincount(particles.event, weights=np.where(neutrino, particles.py, 0.0), minlength=n_events)
    return {
        "Jet": jet,
        "GenJet": genjet,
        "GenMET_pt": np.hypot(nu_px, nu_py).astype(np.float32),
        "GenMET_phi": np.arctan2(nu_py, nu_px).astype(np.float32),
    }


def match_in_order(
    reco: tuple[np.ndarray, np.ndarray],
    reco_counts: np.ndarray,
    gen: tuple[np.ndarray, np.ndarray],
    gen_counts: np.ndarray,
    *,
    max_dr: float,
) -> np.ndarray:
    """One-to-one Delta R matching per event, objects taken in their order (CMS ``PhysObjectMatcher``).

    ``reco`` and ``gen`` are flat (eta, phi) arrays, ``*_counts`` the objects per event. The
    first reco object of an event takes the closest gen object within ``max_dr``, the second the
    closest of those left, and so on. Returns, per reco object, the index of its gen object
    within the event, or -1.

    Example:
        >>> reco = (np.array([0.0, 0.1, 2.0]), np.zeros(3))
        >>> gen = (np.array([0.05, 2.5]), np.zeros(2))
        >>> match_in_order(reco, np.array([3]), gen, np.array([2]), max_dr=0.4).tolist()
        [0, -1, -1]
    """
    reco_counts, gen_counts = np.asarray(reco_counts), np.asarray(gen_counts)
    n_reco = int(reco_counts.sum())
    reco_offsets = np.r_[0, np.cumsum(reco_counts)]
    gen_offsets = np.r_[0, np.cumsum(gen_counts)]
    event = np.repeat(np.arange(len(reco_counts)), reco_counts)
    rank = np.arange(n_reco) - reco_offsets[event]
    # every (reco, gen) pair of an event
    per_reco = gen_counts[event]
    pair_reco = np.repeat(np.arange(n_reco), per_reco)
    pair_gen = np.arange(per_reco.sum()) - np.repeat(np.cumsum(per_reco) - per_reco, per_reco)
    pair_gen += np.repeat(gen_offsets[event], per_reco)
    dr2 = (reco[0][pair_reco] - gen[0][pair_gen]) ** 2 + delta_phi(reco[1][pair_reco], gen[1][pair_gen]) ** 2
    close = dr2 < max_dr**2
    pair_reco, pair_gen, dr2 = pair_reco[close], pair_gen[close], dr2[close]

    match = np.full(n_reco, -1, dtype=np.int64)
    taken = np.zeros(int(gen_counts.sum()), dtype=bool)
    pair_rank = rank[pair_reco]
    for r in range(int(reco_counts.max(initial=0))):
        at = np.flatnonzero((pair_rank == r) & ~taken[pair_gen])
        if len(at) == 0:
            continue
        order = at[np.lexsort((dr2[at], pair_reco[at]))]
        first = np.r_[True, pair_reco[order][1:] != pair_reco[order][:-1]]
        best = order[first]
        match[pair_reco[best]] = pair_gen[best]
        taken[pair_gen[best]] = True
    local = match - gen_offsets[event]
    return np.where(match >= 0, local, -1)
