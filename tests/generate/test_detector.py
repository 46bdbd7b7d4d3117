"""The detector parametrisations against hand-computed values, and the reconstruction on toy events."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.generate import detector
from hepflow.generate.detector import (
    BTAG_MEDIUM_WP,
    Ghosts,
    Particles,
    btag_efficiency,
    btag_score,
    ecal_resolution,
    electron_efficiency,
    hcal_resolution,
    jet_energy_scale,
    lognormal,
    missing_et,
    muon_efficiency,
    pseudorapidity,
    track_resolution,
    tracking_efficiency,
)
from tests.generate.toys import no_ghosts, toy_event


def test_ecal_resolution_is_the_delphes_cms_card_with_the_ecal_noise_term() -> None:
    # sqrt(0.008^2 100^2 + 0.11^2 100 + 0.15^2) = sqrt(1.8725), times the eta factor; the card's
    # forward formula beyond |eta| 2.5
    eta = np.array([0.0, 1.0, -2.0, 3.0, 5.5])
    got = ecal_resolution(np.full(5, 100.0), eta)
    root = np.sqrt(1.8725)
    np.testing.assert_allclose(got, [root, 1.64 * root, 2.16 * root, 23.39081, 0.0], rtol=1e-5)


def test_hcal_resolution_is_the_cms_test_beam_within_eta_3_and_the_card_in_hf() -> None:
    # 0.074^2 100^2 + 0.847^2 100 = 126.5009 (EPJC 60 (2009) 359); HF: the card's 898
    got = hcal_resolution(np.full(3, 100.0), np.array([0.0, -4.0, 6.0]))
    np.testing.assert_allclose(got, [np.sqrt(126.5009), np.sqrt(898.0), 0.0], rtol=1e-12)


def test_track_resolution_per_eta_bin() -> None:
    pt = np.full(4, 50.0)
    eta = np.array([0.2, 1.0, -2.0, 2.7])
    np.testing.assert_allclose(
        track_resolution(pt, eta, kind="muon"), [0.0111803, 0.0167705, 0.0305164, 0.0], rtol=1e-5
    )
    # charged hadrons: sqrt(0.01^2 + (1.5e-4 * 50)^2)
    assert track_resolution(np.array([50.0]), np.array([0.0]), kind="hadron")[0] == pytest.approx(0.0125)


def test_efficiencies() -> None:
    np.testing.assert_allclose(
        tracking_efficiency(
            np.array([0.05, 0.5, 5.0, 5.0, 5.0]), np.array([0.0, 0.0, 0.0, 2.0, 2.6]), kind="hadron"
        ),
        [0.0, 0.70, 0.95, 0.85, 0.0],
    )
    assert tracking_efficiency(np.array([200.0]), np.array([0.0]), kind="electron")[0] == 0.99
    np.testing.assert_allclose(
        electron_efficiency(np.array([9.0, 30.0, 30.0, 30.0]), np.array([0.0, 0.0, 2.0, 2.6])),
        [0, 0.95, 0.85, 0],
    )
    np.testing.assert_allclose(
        muon_efficiency(np.array([30.0, 2000.0, 30.0]), np.array([0.0, 0.0, 2.45])),
        [0.95, 0.5762041, 0.0],
        rtol=1e-6,
    )


def test_jet_energy_scale() -> None:
    got = jet_energy_scale(np.array([30.0, 30.0, 1.0e9]), np.array([0.0, 2.0, 0.0]))
    np.testing.assert_allclose(got, [1.0992422, 1.0776518, 1.0], rtol=1e-6)


def test_btag_efficiency_values() -> None:
    pt = np.array([100.0, 100.0, 100.0, 30.0])
    flavour = np.array([5, 4, 0, 5])
    np.testing.assert_allclose(btag_efficiency(pt, flavour), [0.8650548, 0.21, 0.0138, 0.7886776], rtol=1e-6)


def test_jet_residual_scale_values() -> None:
    # 1 / (c0 - c1 / pT): barrel (1.002, 1.4 GeV), endcap (0.976, 0), forward (0.92, 0)
    got = detector.jet_residual_scale(np.array([60.0, 60.0, 60.0, 5.0]), np.array([1.0, 1.5, -4.0, 0.0]))
    want = [1 / (1.002 - 1.4 / 60), 1 / 0.976, 1 / 0.92, 1 / (1.002 - 1.4 / 10)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_jet_extra_resolution_values() -> None:
    # sqrt(S^2 / pT + C^2): barrel (0.55, 0.092), endcap (1.16, 0.076), 0.25 from the tracker's
    # edge to |eta| 3, nothing beyond
    pt = np.full(6, 100.0)
    got = detector.jet_extra_resolution(pt, np.array([0.5, -2.0, 2.5, -2.99, 3.0, 4.0]))
    want = [np.sqrt(0.55**2 / 100 + 0.092**2), np.sqrt(1.16**2 / 100 + 0.076**2), 0.25, 0.25, 0.0, 0.0]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_btag_score_respects_the_working_point() -> None:
    rng = np.random.default_rng(1)
    tagged = rng.random(10_000) < 0.3
    score = btag_score(tagged, rng).astype(np.float32)
    assert np.all(score[tagged] > BTAG_MEDIUM_WP)
    assert np.all(score[~tagged] < np.float32(BTAG_MEDIUM_WP))
    assert np.all((score >= 0) & (score <= 1))


def test_lognormal_has_the_requested_mean_and_width() -> None:
    rng = np.random.default_rng(3)
    draw = lognormal(np.full(200_000, 50.0), np.full(200_000, 10.0), rng)
    assert draw.mean() == pytest.approx(50.0, rel=5e-3)
    assert draw.std() == pytest.approx(10.0, rel=1e-2)
    assert np.all(draw > 0)
    np.testing.assert_array_equal(lognormal(np.array([0.0, 7.0]), np.array([1.0, 0.0]), rng), [0.0, 7.0])


def test_missing_et_is_the_negative_vector_sum() -> None:
    px, py = np.array([10.0, -4.0, 3.0]), np.array([0.0, 3.0, 4.0])
    pt, phi = missing_et(px, py, np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(pt, [np.hypot(6.0, 3.0), 5.0, 0.0])
    np.testing.assert_allclose(phi[:2], [np.arctan2(-3.0, -6.0), np.arctan2(-4.0, -3.0)])


def test_pseudorapidity_is_finite_along_the_beam() -> None:
    eta = pseudorapidity(np.array([0.0, 1.0]), np.array([0.0, 0.0]), np.array([-5.0, 0.0]))
    assert np.all(np.isfinite(eta))
    assert eta[0] < -1e5
    assert eta[1] == 0.0


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_met_balances_the_visible_particles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector, "jet_energy_scale", lambda pt, eta: np.ones_like(pt))
    event = toy_event(
        [
            (60.0, 0.3, 0.1, 211, 1),  # charged pion
            (40.0, -1.0, 2.5, 22, 0),  # photon
            (25.0, 1.5, -2.0, 130, 0),  # neutral hadron
            (30.0, 0.5, 1.0, 12, 0),  # neutrino: invisible
        ]
    )
    reco = detector.simulate(event, no_ghosts(), np.random.default_rng(0))
    visible_px = event.px[:3].sum()
    visible_py = event.py[:3].sum()
    assert reco["MET_pt"][0] == pytest.approx(np.hypot(visible_px, visible_py), rel=1e-5)
    assert reco["MET_phi"][0] == pytest.approx(np.arctan2(-visible_py, -visible_px), abs=1e-5)
    assert reco["MET_sumEt"][0] == pytest.approx(125.0, rel=1e-5)


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_met_carries_the_jet_energy_correction() -> None:
    event = toy_event([(100.0, 0.0, 0.0, 211, 1), (100.0, 0.0, np.pi, 12, 0)])
    reco = detector.simulate(event, no_ghosts(), np.random.default_rng(0))
    scale = jet_energy_scale(np.array([100.0]), np.array([0.0]))[0]
    assert reco["Jet"].pt[0, 0] == pytest.approx(100.0 * scale, rel=1e-5)
    # type-1: the corrected jet balances the event
    assert reco["MET_pt"][0] == pytest.approx(100.0 * scale, rel=1e-5)


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_isolated_prompt_lepton_is_reconstructed_and_kept_out_of_jets() -> None:
    event = toy_event(
        [
            (50.0, 0.0, 0.0, -13, 1),  # prompt mu+
            (2.0, 0.2, 0.1, 211, 1),  # inside the 0.4 cone
            (3.0, 0.0, 0.6, 211, 1),  # outside
            (40.0, 1.0, 2.0, 211, 1),
        ]
    )
    event.genpart_idx[0] = 8
    reco = detector.simulate(event, no_ghosts(), np.random.default_rng(0))
    muon = reco["Muon"][0]
    assert muon.pdgId.tolist() == [-13]
    assert muon.charge.tolist() == [1]
    assert muon.tightId.tolist() == [True]
    assert muon.genPartIdx.tolist() == [8]
    assert muon.pfRelIso04_all[0] == pytest.approx(2.0 / 50.0, rel=1e-5)
    # the muon is not a jet: only the 40 GeV pion makes one
    assert reco["Jet"].pt[0].tolist() == pytest.approx([40.0 * jet_energy_scale(40.0, 1.0)], rel=1e-5)


@pytest.mark.generation
def test_cluster_jets_labels_flavour_by_ghosts() -> None:
    event = toy_event([(50.0, 0.0, 0.0, 211, 1), (50.0, 0.0, np.pi, 211, 1), (30.0, 1.5, 1.5, 211, 1)])
    candidates = detector._Candidates(
        np.zeros(3, dtype=np.int64),
        np.arange(3),
        np.ones(3, dtype=bool),
        event.px,
        event.py,
        event.pz,
        event.e,
    )
    # a B- (b quark) and a D0 near jet 0, an anti-strange quark near jet 1, nothing near jet 2
    ghost_phi = np.array([0.1, -0.1, np.pi - 0.05])
    ghosts = Ghosts(
        offsets=np.array([0, 3]),
        px=10 * np.cos(ghost_phi),
        py=10 * np.sin(ghost_phi),
        pz=np.zeros(3),
        e=np.full(3, 10.0),
        hadron_flavour=np.array([5, 4, 0], dtype=np.uint8),
        parton_flavour=np.array([5, 4, -3], dtype=np.int16),
    )
    jets = detector.cluster_jets(candidates, ghosts, 1)
    order = np.argsort(-np.hypot(jets.px, jets.py) - jets.px * 1e-3)  # the jet at phi = 0 first
    assert np.hypot(jets.px, jets.py)[order] == pytest.approx([50.0, 50.0, 30.0])
    assert jets.hadron_flavour[order].tolist() == [5, 0, 0]
    assert jets.parton_flavour[order].tolist() == [5, -3, 21]


def test_tower_grid_follows_the_delphes_cms_card() -> None:
    edges, sectors = detector.TOWER_ETA_EDGES, detector.TOWER_PHI_SECTORS
    assert np.all(np.diff(edges) > 0)
    assert edges[0] == 0.0
    assert edges[-1] == detector.CALO_ETA_MAX
    assert len(sectors) == len(edges) - 1
    # 0.087 x 5 degrees in the barrel, 10 degrees to |eta| 4.525, 20 degrees in the last HF rings
    assert sectors[0] == 72
    assert sectors[np.searchsorted(edges, 1.6) - 1] == 72
    assert sectors[np.searchsorted(edges, 2.0) - 1] == 36
    assert sectors[np.searchsorted(edges, 4.4) - 1] == 36
    assert sectors[np.searchsorted(edges, 4.8) - 1] == 18


@pytest.mark.usefixtures("perfect_detector")
def test_soft_neutrals_count_when_their_tower_passes_the_threshold() -> None:
    """Five 0.3 GeV photons below the 0.5 GeV ECAL threshold, in one 0.087 x 5 degree tower:
    one deposit of their 1.5 GeV along their summed momentum. A lone 0.3 GeV photon elsewhere is lost."""
    soft = [(0.3, 0.01 + 0.01 * k, 0.01 + 0.01 * k, 22, 0) for k in range(5)]
    event = toy_event([*soft, (0.3, -1.0, 2.0, 22, 0)])
    rng = np.random.default_rng(0)
    eta = detector.pseudorapidity(event.px, event.py, event.pz)
    is_photon = np.ones(6, dtype=bool)
    towers = detector.calorimeter_towers(event, eta, ecal=is_photon, hcal=~is_photon, rng=rng)
    assert len(towers.e) == 1
    assert towers.e[0] == pytest.approx(event.e[:5].sum())
    summed = np.array([event.px[:5].sum(), event.py[:5].sum(), event.pz[:5].sum()])
    got = np.array([towers.px[0], towers.py[0], towers.pz[0]])
    np.testing.assert_allclose(got / np.linalg.norm(got), summed / np.linalg.norm(summed), atol=1e-12)
    assert towers.source[0] == np.argmax(event.e[:5])  # its most energetic particle


@pytest.mark.usefixtures("perfect_detector")
def test_ecal_and_hcal_towers_and_neighbouring_sectors_are_separate() -> None:
    event = toy_event(
        [
            (5.0, 0.04, 0.04, 22, 0),  # ECAL
            (5.0, 0.04, 0.04, 130, 0),  # HCAL, same cell
            (5.0, 0.04, 0.04 + 2 * np.pi / 72, 22, 0),  # next phi sector
            (5.0, 0.04 + 0.087, 0.04, 22, 0),  # next eta ring
            (5.0, -0.04, 0.04, 22, 0),  # the other side of eta = 0
        ]
    )
    eta = detector.pseudorapidity(event.px, event.py, event.pz)
    ecal = event.pdg_id == 22
    towers = detector.calorimeter_towers(event, eta, ecal=ecal, hcal=~ecal, rng=np.random.default_rng(1))
    assert len(towers.e) == 5
    assert sorted(towers.source.tolist()) == [0, 1, 2, 3, 4]


def test_towers_smear_their_summed_energy_with_the_calorimeter_resolution() -> None:
    """Many events with one 50 GeV neutral hadron in the barrel: the tower energy has mean 50 and
    the HCAL width sqrt(0.05^2 E^2 + 1.5^2 E) = 10.9 GeV."""
    n = 20_000
    rng = np.random.default_rng(3)
    e = np.full(n, 50.0)
    phi = rng.uniform(-np.pi, np.pi, n)
    particles = Particles(
        offsets=np.arange(n + 1),
        px=e * np.cos(phi),
        py=e * np.sin(phi),
        pz=np.zeros(n),
        e=e,
        pdg_id=np.full(n, 130, dtype=np.int32),
        charge=np.zeros(n),
        genpart_idx=np.full(n, -1, dtype=np.int16),
    )
    none = np.zeros(n, dtype=bool)
    towers = detector.calorimeter_towers(particles, np.zeros(n), ecal=none, hcal=~none, rng=rng)
    assert len(towers.e) == n
    assert towers.e.mean() == pytest.approx(50.0, rel=0.01)
    assert towers.e.std() == pytest.approx(float(hcal_resolution(np.array([50.0]), np.zeros(1))[0]), rel=0.03)
