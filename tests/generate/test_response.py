"""Generator-level branches of the fast detector (GenJet, Jet_genJetIdx, GenMET) and the
detector-response measurement of :mod:`hepflow.generate.response`."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from hepflow.generate.detector import GENJET_PT_MIN, cluster_gen_jets, delta_phi
from hepflow.generate.nanoaod import GENJET_MATCH_DR, generator_columns, match_in_order
from tests.generate.test_detector import _no_ghosts, _toy_event

# --- generator-level branches ----------------------------------------------------------------


def test_gen_jets_exclude_neutrinos_and_keep_leptons() -> None:
    event = _toy_event(
        [
            (50.0, 0.0, 0.0, 211, 1),  # a jet on its own
            (40.0, 1.0, 2.0, 12, 0),  # a neutrino: no jet
            (30.0, -1.0, -2.0, 13, -1),  # a muon: a jet, as in CMS genParticlesForJetsNoNu
            (9.0, 2.0, 1.0, 22, 0),  # below the GenJet threshold
        ]
    )
    jets = cluster_gen_jets(event, _no_ghosts())
    pt = np.sort(np.hypot(jets.px, jets.py))[::-1]
    np.testing.assert_allclose(pt, [50.0, 30.0])
    assert GENJET_PT_MIN == 10.0


def test_generator_columns_genmet_is_the_neutrino_sum() -> None:
    event = _toy_event(
        [(60.0, 0.0, 0.0, 211, 1), (40.0, 1.0, 2.0, 12, 0), (30.0, -3.0, -2.0, -14, 0), (25.0, 0, 3.0, 22, 0)]
    )
    jet = ak.Array([[{"pt": 61.0, "eta": 0.05, "phi": 0.02}, {"pt": 20.0, "eta": -2.0, "phi": 1.0}]])
    out = generator_columns(event, _no_ghosts(), jet)
    px = 40.0 * np.cos(2.0) + 30.0 * np.cos(-2.0)
    py = 40.0 * np.sin(2.0) + 30.0 * np.sin(-2.0)
    assert out["GenMET_pt"][0] == pytest.approx(np.hypot(px, py), rel=1e-6)
    assert out["GenMET_phi"][0] == pytest.approx(np.arctan2(py, px), rel=1e-6)
    # GenJets sorted by pT: the pion (60) and the photon (25); the first jet matches the pion
    assert ak.to_list(out["GenJet"].pt[0]) == pytest.approx([60.0, 25.0])
    assert ak.to_list(out["Jet"].genJetIdx[0]) == [0, -1]
    assert out["Jet"].genJetIdx.type.content.content.primitive == "int16"


def test_match_in_order_is_one_to_one_in_jet_order() -> None:
    # jet 0 takes gen 0 although jet 1 is closer to it; jet 1 then takes gen 1 (Delta R 0.3)
    reco = (np.array([0.15, 0.02, 3.0]), np.zeros(3))
    gen = (np.array([0.0, 0.32]), np.zeros(2))
    got = match_in_order(reco, np.array([3]), gen, np.array([2]), max_dr=0.4)
    assert got.tolist() == [0, 1, -1]
    # across events, with an event without gen objects and phi wrapping around pi
    reco = (np.array([0.0, 1.0, 0.0]), np.array([3.1, 0.0, -3.1]))
    gen = (np.array([0.0]), np.array([-3.1]))
    got = match_in_order(reco, np.array([1, 1, 1]), gen, np.array([0, 0, 1]), max_dr=0.2)
    assert got.tolist() == [-1, -1, 0]


@pytest.mark.generation
def test_generated_file_has_genjets_genmet_and_matching(ttbar_arrays: ak.Array) -> None:
    a = ttbar_arrays
    for branch in ("GenJet_pt", "GenJet_eta", "GenJet_phi", "GenJet_hadronFlavour", "Jet_genJetIdx"):
        assert branch in a.fields
    assert ak.all(a.GenJet_pt > GENJET_PT_MIN)
    assert ak.all(a.GenJet_pt[:, :-1] >= a.GenJet_pt[:, 1:])

    idx = a.Jet_genJetIdx
    matched = idx >= 0
    assert ak.all(idx < ak.num(a.GenJet_pt))
    assert float(ak.mean(matched)) > 0.9
    e = a[ak.any(matched, axis=1)]
    keep = e.Jet_genJetIdx >= 0
    gen_index = e.Jet_genJetIdx[keep]
    pt_gen, eta_gen, phi_gen = (e[f"GenJet_{f}"][gen_index] for f in ("pt", "eta", "phi"))
    jet_pt, jet_eta, jet_phi = (e[f"Jet_{f}"][keep] for f in ("pt", "eta", "phi"))
    dr = np.hypot(jet_eta - eta_gen, delta_phi(jet_phi, phi_gen))
    assert float(ak.max(dr)) < GENJET_MATCH_DR
    # one-to-one
    sorted_idx = ak.sort(idx[matched], axis=1)
    assert not ak.any(sorted_idx[:, 1:] == sorted_idx[:, :-1])
    # matched central jets above 30 GeV measure the GenJet pT without bias
    central = (pt_gen > 30) & (np.abs(eta_gen) < 2.5) & (dr < 0.2)
    response = ak.to_numpy(ak.flatten((jet_pt / pt_gen)[central]))
    assert len(response) > 500
    assert np.median(response) == pytest.approx(1.0, abs=0.03)

    # GenMET: the W neutrino plus those from hadron decays; where no hadron decay gave one it
    # is the GenPart neutrino exactly (float32)
    nu = (np.abs(a.GenPart_pdgId) == 12) | (np.abs(a.GenPart_pdgId) == 14)
    nu_pt, nu_phi = ak.to_numpy(ak.flatten(a.GenPart_pt[nu])), ak.to_numpy(ak.flatten(a.GenPart_phi[nu]))
    met_pt, met_phi = ak.to_numpy(a.GenMET_pt), ak.to_numpy(a.GenMET_phi)
    dx = met_pt * np.cos(met_phi) - nu_pt * np.cos(nu_phi)
    dy = met_pt * np.sin(met_phi) - nu_pt * np.sin(nu_phi)
    same = np.hypot(dx, dy) < 1e-3 * np.maximum(nu_pt, 1.0)
    assert 0.1 < same.mean() < 0.6
    # the extra neutrinos are soft: the W neutrino carries most of GenMET
    assert np.median(np.hypot(dx, dy)) < 0.2 * np.median(nu_pt)


@pytest.mark.generation
def test_genmet_equals_the_neutrinos_of_the_event_record() -> None:
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from hepflow.generate.nanoaod import flavour_ghosts, stable_particles, ttbar_genpart
    from hepflow.generate.ttbar import _Pythia

    pythia = _Pythia(11)
    record, _ = pythia.next(20)
    genpart = ttbar_genpart(record)
    particles = stable_particles(record, genpart, pythia.charge)
    empty_jets = ak.unflatten(ak.zip({"pt": [], "eta": [], "phi": []}), np.zeros(20, dtype=int))
    out = generator_columns(particles, flavour_ghosts(record, genpart), empty_jets)
    final = record.status > 0
    nu = final & np.isin(np.abs(record.pdg_id), (12, 14, 16))
    px = np.bincount(record.event[nu], weights=record.px[nu], minlength=20)
    py = np.bincount(record.event[nu], weights=record.py[nu], minlength=20)
    np.testing.assert_allclose(out["GenMET_pt"], np.hypot(px, py), rtol=1e-5)
    # every event has its W neutrino, some have more
    per_event = np.bincount(record.event[nu], minlength=20)
    assert per_event.min() >= 1
