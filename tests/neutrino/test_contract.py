"""neutrino_context from a user's own objects equals the processor's context on real CMS NanoAOD."""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np
import pytest
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from hepflow.config import shipped_config
from hepflow.errors import InputError
from hepflow.neutrino.contract import neutrino_context
from hepflow.neutrino.features import context_arrays
from hepflow.neutrino.processor import NeutrinoFeatureProcessor, select_leptons
from hepflow.neutrino.selection import NeutrinoSelection

SELECTION = NeutrinoSelection.from_file(shipped_config("neutrino"))


def _events(path, **metadata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cross-references of the trimmed sample
        return NanoEventsFactory.from_root(
            {str(path): "Events"},
            schemaclass=NanoAODSchema,
            mode="eager",
            metadata={"filename": str(path), **metadata},
        ).events()


def select_objects(events, sel: NeutrinoSelection) -> tuple:
    """An analyst's own selection (the shipped one): the events, their lepton and their jets."""
    leptons = select_leptons(events, sel)
    one = ak.num(leptons, axis=1) == 1
    events, lepton = events[one], leptons[one][:, 0]
    jets = events.Jet
    dphi = (jets.phi - lepton.phi + np.pi) % (2 * np.pi) - np.pi
    good = (
        (jets.pt > sel.jet_pt_min)
        & (np.abs(jets.eta) < sel.jet_eta_max)
        & (np.hypot(jets.eta - lepton.eta, dphi) > sel.jet_lepton_dr)
    )
    jets = jets[good]  # not sorted here: neutrino_context orders the jets by pT
    nb = ak.sum(jets[sel.btag_branch] > sel.btag_wp, axis=1)
    keep = (ak.num(jets, axis=1) >= sel.min_jets) & (nb >= sel.min_bjets)
    return events[keep], lepton[keep], jets[keep]


def user_objects(events, sel: NeutrinoSelection) -> dict:
    """The arguments of neutrino_context from the selected objects (b-tag scores + working point)."""
    events, lepton, jets = select_objects(events, sel)
    return {
        "met_pt": events.MET.pt,
        "met_phi": events.MET.phi,
        "lepton": lepton,
        "jets": jets,
        "jet_btag": jets[sel.btag_branch],
        "btag_wp": sel.btag_wp,
        "max_jets": sel.max_jets,
    }


@pytest.fixture(scope="module")
def events(nano_v12):
    return _events(nano_v12)


@pytest.fixture(scope="module")
def objects(events):
    return user_objects(events, SELECTION)


def processor_columns(events) -> ak.Array:
    """The feature processor's columns of one chunk (``columns(events)`` of a ColumnProcessor)."""
    return NeutrinoFeatureProcessor(SELECTION).columns(events).columns


def test_contract_equals_processor_context(events, objects):
    columns = processor_columns(events)
    expected = context_arrays(columns, max_jets=SELECTION.max_jets)
    got = neutrino_context(**objects)
    assert len(objects["met_pt"]) == len(columns) > 20  # no event dropped as non-finite
    assert set(got) == {"flat", "jets", "mask"}
    for key in ("flat", "jets", "mask"):
        assert got[key].dtype == expected[key].dtype
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_decisions_and_pdgid_give_the_same_context(objects):
    """0/1 decisions without btag_wp, and the NanoAOD pdgId as flavour, are the same inputs."""
    ref = neutrino_context(**objects)
    lep = objects["lepton"]
    pdg = ak.zip({f: lep[f] for f in ("pt", "eta", "phi", "mass")} | {"pdgId": -lep.flavor * lep.charge})
    decisions = ak.values_astype(objects["jet_btag"] > objects["btag_wp"], np.int32)
    got = neutrino_context(**(objects | {"lepton": pdg, "jet_btag": decisions, "btag_wp": None}))
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key])


def test_fewer_leading_jets(objects):
    got = neutrino_context(**(objects | {"max_jets": 4}))
    ref = neutrino_context(**objects)
    np.testing.assert_array_equal(got["jets"], ref["jets"][:, :4])
    np.testing.assert_array_equal(got["flat"], ref["flat"])  # njet, nbjet count all jets
    assert got["mask"].all()


def test_zero_events(objects):
    got = neutrino_context(
        **{k: v[:0] if k not in ("btag_wp", "max_jets") else v for k, v in objects.items()}
    )
    assert got["flat"].shape == (0, 9)
    assert got["jets"].shape == (0, 10, 5)
    assert got["mask"].shape == (0, 10)


# -- refusals: one per kind of wrong input, each naming the argument or field --------------------


def _with(objects, **changes):
    return objects | changes


def _lepton(objects, **fields):
    lep = objects["lepton"]
    base = {f: lep[f] for f in lep.fields}
    return ak.zip({k: v for k, v in (base | fields).items() if v is not None})


def _jets(objects, **fields):
    jets = objects["jets"]
    base = {f: jets[f] for f in ("pt", "eta", "phi", "mass")}
    return ak.zip({k: v for k, v in (base | fields).items() if v is not None})


def test_refuses_missing_lepton_field(objects):
    with pytest.raises(InputError, match=r"lepton has no field 'mass'"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, mass=None)))


def test_refuses_missing_flavour(objects):
    with pytest.raises(InputError, match=r"lepton has no field 'flavor' \(11/13\) or 'pdgId'"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, flavor=None)))


def test_refuses_missing_jet_field(objects):
    with pytest.raises(InputError, match=r"jets has no field 'phi'"):
        neutrino_context(**_with(objects, jets=_jets(objects, phi=None)))


def test_refuses_integer_momentum(objects):
    pt = ak.values_astype(objects["lepton"].pt, np.int32)
    with pytest.raises(InputError, match=r"lepton.pt must hold floating-point values .* got int32"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, pt=pt)))


def test_refuses_boolean_met(objects):
    with pytest.raises(InputError, match=r"met_pt must hold floating-point values .* got bool"):
        neutrino_context(**_with(objects, met_pt=objects["met_pt"] > 50))


def test_refuses_float_flavour(objects):
    flavor = ak.values_astype(objects["lepton"].flavor, np.float32)
    with pytest.raises(InputError, match=r"lepton.flavor must hold integers, got float32"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, flavor=flavor)))


def test_refuses_unknown_flavour(objects):
    flavor = ak.values_astype(objects["lepton"].pt * 0 + 15, np.int8)
    with pytest.raises(InputError, match=r"lepton.flavor must be 11/13 .* got \[15\]"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, flavor=flavor)))


def test_refuses_jagged_lepton(objects):
    leptons = ak.unflatten(objects["lepton"], 1)  # a list of one lepton per event
    with pytest.raises(InputError, match=r"lepton.pt must be one value per event, got a list per event"):
        neutrino_context(**_with(objects, lepton=leptons))


def test_refuses_flat_jets(objects):
    with pytest.raises(InputError, match=r"jets.pt must be a list per event .* got one value per event"):
        neutrino_context(**_with(objects, jets=objects["lepton"]))


def test_refuses_non_record_jets(objects):
    with pytest.raises(InputError, match=r"jets must be an awkward record array with fields pt, eta"):
        neutrino_context(**_with(objects, jets=objects["jets"].pt))


def test_refuses_mismatched_event_counts(objects):
    with pytest.raises(InputError, match=r"met_phi has \d+ events, met_pt has \d+"):
        neutrino_context(**_with(objects, met_phi=objects["met_phi"][1:]))
    with pytest.raises(InputError, match=r"jets has \d+ events, met_pt has \d+"):
        neutrino_context(**_with(objects, jets=objects["jets"][1:]))


def test_refuses_mismatched_btag_lists(objects):
    btag = objects["jet_btag"][:, 1:]
    with pytest.raises(InputError, match=r"jet_btag has another number of jets than jets in \d+ event"):
        neutrino_context(**_with(objects, jet_btag=btag))


def test_refuses_scores_without_working_point(objects):
    with pytest.raises(InputError, match=r"jet_btag holds floating-point scores: pass btag_wp"):
        neutrino_context(**_with(objects, btag_wp=None))


def test_refuses_decisions_with_working_point(objects):
    decisions = ak.values_astype(objects["jet_btag"] > 0.5, np.int8)
    with pytest.raises(InputError, match=r"btag_wp is given but jet_btag holds int8 decisions"):
        neutrino_context(**_with(objects, jet_btag=decisions))


def test_refuses_decisions_other_than_zero_one(objects):
    decisions = ak.values_astype(objects["jet_btag"] > 0.5, np.int8) * 2
    with pytest.raises(InputError, match=r"jet_btag decisions must be 0 or 1, got \[2\]"):
        neutrino_context(**_with(objects, jet_btag=decisions, btag_wp=None))


def test_refuses_non_finite_values(objects):
    met = ak.to_numpy(objects["met_pt"]).copy()
    met[3] = np.nan
    with pytest.raises(InputError, match=r"met_pt is NaN or infinite in 1 event"):
        neutrino_context(**_with(objects, met_pt=met))
    eta = objects["jets"].eta
    eta = ak.where(ak.local_index(eta) == 0, np.inf, eta)  # the first jet of every event
    with pytest.raises(InputError, match=rf"jets.eta is NaN or infinite in {len(eta)} event"):
        neutrino_context(**_with(objects, jets=_jets(objects, eta=eta)))


def test_refuses_missing_values(objects):
    pt = ak.mask(objects["lepton"].pt, ak.local_index(objects["lepton"].pt, axis=0) != 2)
    with pytest.raises(InputError, match=r"lepton.pt has missing values \(None\)"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, pt=pt)))


def test_refuses_features_that_overflow(objects):
    zero = objects["lepton"].pt * 0
    with pytest.raises(InputError, match=r"features lep_loge are not finite"):
        neutrino_context(**_with(objects, lepton=_lepton(objects, pt=zero, mass=zero)))


def test_refuses_non_arrays_and_bad_max_jets(objects):
    with pytest.raises(InputError, match=r"met_pt must be an awkward or numpy array, got float"):
        neutrino_context(**_with(objects, met_pt=50.0))
    with pytest.raises(InputError, match=r"max_jets must be a positive integer, got 0"):
        neutrino_context(**_with(objects, max_jets=0))
