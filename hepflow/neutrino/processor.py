"""Coffea processor: semileptonic ttbar selection and neutrino-regression features.

The processor selects events and builds columns; it does no I/O. Run it through
:func:`hepflow.processing.run_processor` (or ``hepflow process neutrino``), which writes each
chunk's columns atomically, or use it in your own coffea workflow::

    from coffea import processor
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor
    out = processor.Runner(processor.FuturesExecutor(workers=4), chunksize=50_000)(
        fileset, NeutrinoFeatureProcessor(), treename="Events"
    )
    out["ttbar"]["columns"]  # one awkward record array per dataset (see hepflow.neutrino.features)
    out["ttbar"]["cutflow"], out["ttbar"]["cutflow_weighted"], out["ttbar"]["sumw"]
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from hepflow.errors import InputError
from hepflow.inputs import check_branches, nanoaod_branches
from hepflow.neutrino.features import build_columns, finite_events, finite_rows
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.processing import ChunkColumns, ColumnProcessor, Cutflow, event_weights, source_file

__all__ = [
    "CUTFLOW_STEPS",
    "NeutrinoFeatureProcessor",
    "NeutrinoSelection",
    "leptonic_w_neutrino",
    "parton_truth",
    "select_leptons",
]

#: Cutflow steps, in order; the last one counts the rows written.
CUTFLOW_STEPS = ("all", "one lepton", "jets", "b jets", "finite inputs")
#: The neutrinos that are a truth target: those of W -> e nu and W -> mu nu (not nu_tau, 16).
W_NEUTRINO_PDGIDS = (12, 14)
#: Branches of the generator particles read for the truth neutrino (and the unfolding's truth).
GENPART_BRANCHES = ("pt", "eta", "phi", "mass", "pdgId", "statusFlags", "genPartIdxMother")
#: Floating-point branches the selection reads, per collection (MET is added per file).
_FLOAT_INPUTS = {
    "Electron": ("pt", "eta", "phi", "mass", "pfRelIso03_all"),
    "Muon": ("pt", "eta", "phi", "mass", "pfRelIso04_all"),
    "Jet": ("pt", "eta", "phi", "mass"),
}


class NeutrinoFeatureProcessor(ColumnProcessor):
    """Select semileptonic ttbar candidates and build the neutrino features and truth.

    :meth:`columns` builds one chunk's columns (one row per selected event, with its generator
    weight ``weight``: ``genWeight``, or 1 for data) and its cutflows: events and the sum of
    weights and of squared weights per step of :data:`CUTFLOW_STEPS`. In a coffea ``Runner``,
    ``process`` returns them as accumulators per dataset and ``postprocess`` concatenates the
    chunks (:class:`~hepflow.processing.ColumnProcessor`): ``out[dataset]["columns"]``,
    ``out[dataset]["cutflow"]``, ``out[dataset]["cutflow_weighted"]`` and ``out[dataset]["sumw"]``
    (the sum of the generator weights of all processed events). The last step,
    ``"finite inputs"``, drops (and counts, as the difference to ``"b jets"``) selected events in
    which a branch the selection reads is NaN or infinite (MET; pt, eta, phi, mass and isolation
    of any electron or muon; pt, eta, phi, mass and b-tag score of any jet: a NaN fails every
    cut, so it could silently change which objects are selected), or the generator weight, a
    built feature or the truth neutrino is (an overflow of extreme values). No NaN or infinity
    reaches the columns.
    """

    def __init__(self, selection: NeutrinoSelection | None = None) -> None:
        self.selection = selection or NeutrinoSelection()

    def columns(self, events: Any) -> ChunkColumns:
        # NaN and inf inputs are counted and dropped below: no warnings for computing with them
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return self._columns(events)

    def _columns(self, events: Any) -> ChunkColumns:
        sel = self.selection
        met_name = _met_collection(events, sel.met)
        check_branches(
            events,
            nanoaod_branches(
                {
                    "Electron": ("pt", "eta", "phi", "mass", "charge", "cutBased", "pfRelIso03_all"),
                    "Muon": ("pt", "eta", "phi", "mass", "charge", "tightId", "pfRelIso04_all"),
                    "Jet": ("pt", "eta", "phi", "mass", sel.btag_branch),
                    met_name: ("pt", "phi"),
                    "": ("run", "luminosityBlock", "event"),
                }
            ),
            optional=nanoaod_branches({"": ("genWeight",), "GenPart": GENPART_BRANCHES}),
        )
        weight = event_weights(events)
        cutflow = Cutflow()
        cutflow.add("all", weight)
        finite = _finite_inputs(events, met_name, sel.btag_branch) & np.isfinite(weight)

        leptons = select_leptons(events, sel)
        one_lepton = ak.num(leptons, axis=1) == 1
        events, leptons, weight, finite = (a[one_lepton] for a in (events, leptons, weight, finite))
        cutflow.add("one lepton", weight)
        lepton = leptons[:, 0]

        jets = events.Jet
        good = (
            (jets.pt > sel.jet_pt_min)
            & (np.abs(jets.eta) < sel.jet_eta_max)
            & (jets.delta_r(lepton) > sel.jet_lepton_dr)
        )
        jets = jets[good]
        jets = jets[ak.argsort(jets.pt, axis=1, ascending=False)]
        btag = ak.values_astype(jets[sel.btag_branch] > sel.btag_wp, np.int8)
        enough_jets = ak.num(jets, axis=1) >= sel.min_jets
        cutflow.add("jets", weight[enough_jets])
        enough_b = enough_jets & (ak.sum(btag, axis=1) >= sel.min_bjets)
        cutflow.add("b jets", weight[enough_b])
        events, lepton, jets, btag, finite, weight = (
            a[enough_b] for a in (events, lepton, jets, btag, finite, weight)
        )

        neutrino = leptonic_w_neutrino(events.GenPart, lepton.charge) if "GenPart" in events.fields else None
        met = events[met_name]
        columns = build_columns(
            event_ids={k: events[k] for k in ("run", "luminosityBlock", "event")},
            met_pt=met.pt,
            met_phi=met.phi,
            lepton=lepton,
            jets=jets,
            jet_btag=btag,
            neutrino=neutrino,
            max_jets=sel.max_jets,
        )
        if neutrino is not None:  # parton-level targets of the downstream observables
            truth = parton_truth(events.GenPart, lepton.charge)
            for name in truth.fields:
                columns = ak.with_field(columns, ak.values_astype(truth[name], np.float32), f"{name}_true")
        finite = finite & finite_rows(columns)  # truth: None (no W neutrino) is fine, NaN is not
        columns = ak.with_field(columns, ak.values_astype(weight, np.float32), "weight")
        cutflow.add("finite inputs", weight[finite])
        # every step is an awkward (or, in coffea's dask mode, a lazy dask-awkward) operation:
        # the same code builds eager columns and dask task graphs
        return cutflow.chunk(columns[finite])


def select_leptons(events: Any, sel: NeutrinoSelection) -> ak.Array:
    """Tight isolated electrons and muons merged into one pt-sorted collection with ``flavor``
    (11 or 13), as NanoEvents candidates (``delta_r``, ``+`` and ``.mass`` work on them)."""
    ele = events.Electron
    ele = ele[
        (ele.pt > sel.electron_pt_min)
        & (np.abs(ele.eta) < sel.electron_eta_max)
        & (ele.cutBased >= sel.electron_cutbased_min)
        & (ele.pfRelIso03_all < sel.electron_iso_max)
    ]
    mu = events.Muon
    mu = mu[
        (mu.pt > sel.muon_pt_min)
        & (np.abs(mu.eta) < sel.muon_eta_max)
        & mu.tightId
        & (mu.pfRelIso04_all < sel.muon_iso_max)
    ]
    from coffea.nanoevents.methods import candidate

    fields = ("pt", "eta", "phi", "mass", "charge")

    def leptons(coll: Any, flavor: int) -> ak.Array:
        return ak.zip(
            {**{f: coll[f] for f in fields}, "flavor": ak.values_astype(coll.pt * 0 + flavor, np.int8)},
            with_name="PtEtaPhiMCandidate",
            behavior=candidate.behavior,
        )

    merged = ak.concatenate([leptons(ele, 11), leptons(mu, 13)], axis=1)
    return merged[ak.argsort(merged.pt, axis=1, ascending=False)]


def _w_neutrinos(genpart: Any, lepton_charge: ak.Array) -> ak.Array:
    """The W -> e nu / mu nu neutrinos of each event as GenPart records, the one whose W has the
    selected lepton's charge first (see :func:`leptonic_w_neutrino`)."""
    abs_id = np.abs(genpart.pdgId)
    is_nu = (abs_id == W_NEUTRINO_PDGIDS[0]) | (abs_id == W_NEUTRINO_PDGIDS[1])
    parent = genpart.distinctParent
    hard = genpart.hasFlags(["fromHardProcess", "isLastCopy"])
    from_w = is_nu & hard & ak.fill_none(np.abs(parent.pdgId) == 24, False)
    nus = genpart[from_w]
    w_charge = np.sign(ak.fill_none(parent.pdgId[from_w], 0))
    same = w_charge == np.sign(lepton_charge)
    # prefer the W of the same charge as the selected lepton, else the first W neutrino
    order = ak.argsort(~same, axis=1, stable=True)
    return nus[order]


def leptonic_w_neutrino(genpart: Any, lepton_charge: ak.Array) -> ak.Array:
    """The neutrino of the W -> e nu or W -> mu nu decay, one optional record per event.

    Read from the NanoAOD ``GenPart`` record: electron and muon neutrinos of the hard process
    (``statusFlags`` ``fromHardProcess`` and ``isLastCopy``) whose first ancestor of a different
    species (``distinctParent``, through the copies of the record) is a W. Events get None
    (no usable truth: ``hepflow train`` refuses and counts their rows) when

    * the leptonic W decays to a tau (W -> tau nu_tau, tau -> e/mu nu nu): the invisible momentum
      is three neutrinos and m(lepton, nu) is not m_W, a different target from the
      W -> e/mu nu events the model learns (3 of the 52 selected events of the CMS NanoAODv12
      ttbar sample in ``tests/samples/``);
    * no W decays leptonically (all-hadronic ttbar; the selected lepton is a fake or comes from
      a hadron decay).

    Neutrinos of tau, hadron or other decays are never taken. With two leptonic Ws (a
    dileptonic event with one lepton lost) the W whose charge equals the selected lepton's wins
    (W+ -> l+ nu), else the other.
    """
    nus = _w_neutrinos(genpart, lepton_charge)
    return ak.firsts(ak.zip({"pt": nus.pt, "eta": nus.eta, "phi": nus.phi}))


def parton_truth(genpart: Any, lepton_charge: ak.Array) -> ak.Array:
    """Parton-level masses of the event whose truth neutrino :func:`leptonic_w_neutrino` finds.

    One optional record per event with ``w_lep_mass``: the mass of the W that decays to that
    neutrino (its ``distinctParent``, the last copy), ``top_lep_mass``: the mass of the top
    quark that W comes from (the W's ``distinctParent``; None if it is not a top), and
    ``ttbar_mass``: the invariant mass of the last copies of the hard-process t and tbar (None
    unless there is exactly one of each). Events without a truth neutrino get None throughout.
    These are the targets of the downstream observables of ``hepflow report neutrino``.
    """
    nu = ak.firsts(_w_neutrinos(genpart, lepton_charge))
    w = nu.distinctParent
    top = w.distinctParent
    has_top = ak.fill_none(np.abs(top.pdgId) == 6, False)
    tops = genpart[(np.abs(genpart.pdgId) == 6) & genpart.hasFlags(["fromHardProcess", "isLastCopy"])]
    pair = (ak.sum(tops.pdgId == 6, axis=1) == 1) & (ak.sum(tops.pdgId == -6, axis=1) == 1)
    tt = ak.mask(tops, pair)
    m_tt = (ak.firsts(tt[tt.pdgId == 6]) + ak.firsts(tt[tt.pdgId == -6])).mass
    has_nu = ~ak.is_none(nu)
    return ak.zip(
        {
            "w_lep_mass": w.mass,
            "top_lep_mass": ak.mask(top.mass, has_top),
            "ttbar_mass": ak.mask(m_tt, has_nu),
        }
    )


def _met_collection(events: Any, choice: str) -> str:
    fields = events.fields
    if choice != "auto":
        if choice not in fields:
            raise InputError(
                f"{source_file(events)}: no {choice}_pt/{choice}_phi branches (selection.met={choice!r})"
            )
        return choice
    for name in ("MET", "PFMET"):  # NanoAOD <= v14 stores PF MET as MET, v15 as PFMET
        if name in fields:
            return name
    raise InputError(f"{source_file(events)}: neither MET_pt/MET_phi nor PFMET_pt/PFMET_phi branches found")


def _finite_inputs(events: Any, met_name: str, btag_branch: str) -> Any:
    """Per event: every floating-point branch the selection reads is finite (see
    :func:`~hepflow.neutrino.features.finite_events`)."""
    values = [events[met_name].pt, events[met_name].phi, events.Jet[btag_branch]]
    for collection, names in _FLOAT_INPUTS.items():
        values += [events[collection][name] for name in names]
    return finite_events(*values)
