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


def test_ecal_resolution_matches_delphes_cms_card() -> None:
    # sqrt(0.008^2 100^2 + 0.11^2 100 + 0.40^2) = sqrt(2.01), times the eta factor
    eta = np.array([0.0, 1.0, -2.0, 3.0, 5.5])
    got = ecal_resolution(np.full(5, 100.0), eta)
    np.testing.assert_allclose(got, [1.41774, 2.32510, 3.06233, 23.39081, 0.0], rtol=1e-5)


def test_hcal_resolution_matches_delphes_cms_card() -> None:
    got = hcal_resolution(np.full(3, 100.0), np.array([0.0, -4.0, 6.0]))
    np.testing.assert_allclose(got, [np.sqrt(250.0), np.sqrt(898.0), 0.0], rtol=1e-12)


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
    # 1 / (c0 - c1 / pT): barrel (0.984, 1.2 GeV), endcap (0.976, 0), forward (0.92, 0)
    got = detector.jet_residual_scale(np.array([60.0, 60.0, 60.0, 5.0]), np.array([1.0, 1.5, -4.0, 0.0]))
    want = [1 / (0.984 - 1.2 / 60), 1 / 0.976, 1 / 0.92, 1 / (0.984 - 1.2 / 10)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_jet_extra_resolution_values() -> None:
    # sqrt(S^2 / pT + C^2): barrel (0.24, 0.088), endcap (1.16, 0.076), nothing outside the tracker
    got = detector.jet_extra_resolution(np.array([100.0, 100.0, 100.0]), np.array([0.5, -2.0, 3.0]))
    want = [np.sqrt(0.24**2 / 100 + 0.088**2), np.sqrt(1.16**2 / 100 + 0.076**2), 0.0]
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


def _toy_event(particles: list[tuple[float, float, float, int, int]]) -> Particles:
    """One event from (pt, eta, phi, pdgId, charge); massless four-momenta."""
    pt, eta, phi, pdg, charge = (np.array(column) for column in zip(*particles, strict=True))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return Particles(
        offsets=np.array([0, len(pt)]),
        px=px,
        py=py,
        pz=pz,
        e=np.sqrt(px**2 + py**2 + pz**2),
        pdg_id=pdg.astype(np.int32),
        charge=charge.astype(float),
        genpart_idx=np.full(len(pt), -1, dtype=np.int16),
    )


def _no_ghosts() -> Ghosts:
    empty = np.zeros(0)
    return Ghosts(
        np.zeros(2, dtype=np.int64),
        empty,
        empty,
        empty,
        empty,
        empty.astype(np.uint8),
        empty.astype(np.int16),
    )


@pytest.fixture
def perfect_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full efficiency and no smearing."""

    def one(pt: np.ndarray, eta: np.ndarray, kind: str) -> np.ndarray:
        return np.ones_like(pt)

    def zero(value: np.ndarray, eta: np.ndarray, kind: str | None = None) -> np.ndarray:
        return np.zeros_like(value)

    def certain(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
        return np.ones_like(pt)

    monkeypatch.setattr(detector, "tracking_efficiency", one)
    monkeypatch.setattr(detector, "electron_efficiency", certain)
    monkeypatch.setattr(detector, "muon_efficiency", certain)
    monkeypatch.setattr(detector, "track_resolution", zero)
    monkeypatch.setattr(detector, "ecal_resolution", zero)
    monkeypatch.setattr(detector, "hcal_resolution", zero)
    monkeypatch.setattr(detector, "jet_extra_resolution", zero)
    monkeypatch.setattr(detector, "jet_residual_scale", lambda pt, eta: np.ones_like(pt))


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_met_balances_the_visible_particles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector, "jet_energy_scale", lambda pt, eta: np.ones_like(pt))
    event = _toy_event(
        [
            (60.0, 0.3, 0.1, 211, 1),  # charged pion
            (40.0, -1.0, 2.5, 22, 0),  # photon
            (25.0, 1.5, -2.0, 130, 0),  # neutral hadron
            (30.0, 0.5, 1.0, 12, 0),  # neutrino: invisible
        ]
    )
    reco = detector.simulate(event, _no_ghosts(), np.random.default_rng(0))
    visible_px = event.px[:3].sum()
    visible_py = event.py[:3].sum()
    assert reco["MET_pt"][0] == pytest.approx(np.hypot(visible_px, visible_py), rel=1e-5)
    assert reco["MET_phi"][0] == pytest.approx(np.arctan2(-visible_py, -visible_px), abs=1e-5)
    assert reco["MET_sumEt"][0] == pytest.approx(125.0, rel=1e-5)


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_met_carries_the_jet_energy_correction() -> None:
    event = _toy_event([(100.0, 0.0, 0.0, 211, 1), (100.0, 0.0, np.pi, 12, 0)])
    reco = detector.simulate(event, _no_ghosts(), np.random.default_rng(0))
    scale = jet_energy_scale(np.array([100.0]), np.array([0.0]))[0]
    assert reco["Jet"].pt[0, 0] == pytest.approx(100.0 * scale, rel=1e-5)
    # type-1: the corrected jet balances the event
    assert reco["MET_pt"][0] == pytest.approx(100.0 * scale, rel=1e-5)


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_isolated_prompt_lepton_is_reconstructed_and_kept_out_of_jets() -> None:
    event = _toy_event(
        [
            (50.0, 0.0, 0.0, -13, 1),  # prompt mu+
            (2.0, 0.2, 0.1, 211, 1),  # inside the 0.4 cone
            (3.0, 0.0, 0.6, 211, 1),  # outside
            (40.0, 1.0, 2.0, 211, 1),
        ]
    )
    event.genpart_idx[0] = 8
    reco = detector.simulate(event, _no_ghosts(), np.random.default_rng(0))
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
    event = _toy_event([(50.0, 0.0, 0.0, 211, 1), (50.0, 0.0, np.pi, 211, 1), (30.0, 1.5, 1.5, 211, 1)])
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
