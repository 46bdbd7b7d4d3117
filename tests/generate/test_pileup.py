"""Pileup: the profile, the overlay, the minimum-bias library and what the detector does with it."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from hepflow.errors import ConfigError
from hepflow.generate import detector
from hepflow.generate.detector import Particles, jet_energy_scale
from hepflow.generate.pileup import MinimumBiasLibrary, PileupProfile, overlay
from tests.generate.toys import no_ghosts, toy_event


def test_profile_draws_the_requested_mean_and_spread() -> None:
    true, n_pu = PileupProfile(mean=40.0, spread=10.0).draw(50_000, np.random.default_rng(3))
    assert true.mean() == pytest.approx(40.0, rel=0.01)
    assert true.std() == pytest.approx(10.0, rel=0.02)
    # Poisson on top of the profile: var(nPU) = mean + spread^2
    assert n_pu.mean() == pytest.approx(40.0, rel=0.01)
    assert n_pu.var() == pytest.approx(40.0 + 100.0, rel=0.05)
    assert n_pu.dtype.kind == "i"


def test_profile_off_and_fixed() -> None:
    true, n_pu = PileupProfile(mean=0.0).draw(5, np.random.default_rng(0))
    assert not PileupProfile(mean=0.0).enabled
    assert true.tolist() == [0.0] * 5
    assert n_pu.tolist() == [0] * 5
    true, _ = PileupProfile(mean=20.0, spread=0.0).draw(5, np.random.default_rng(0))
    assert true.tolist() == [20.0] * 5


@pytest.mark.parametrize(
    ("mean", "spread"), [(-1.0, 9.0), (float("nan"), 9.0), (30.0, -2.0), (30.0, float("inf"))]
)
def test_bad_profile_is_refused(mean: float, spread: float) -> None:
    with pytest.raises(ConfigError, match="pileup"):
        PileupProfile(mean=mean, spread=spread)


def _library() -> MinimumBiasLibrary:
    """Two fake minimum-bias events: a charged pion pair and one neutral hadron."""
    return MinimumBiasLibrary(
        offsets=np.array([0, 2, 3]),
        px=np.array([1.0, -0.5, 0.0]),
        py=np.array([0.0, 0.5, 2.0]),
        pz=np.array([3.0, -1.0, 4.0]),
        e=np.array([4.0, 1.5, 5.0]),
        pdg_id=np.array([211, -211, 130]),
        charge=np.array([1.0, -1.0, 0.0]),
    )


def test_overlay_keeps_the_hard_event_and_adds_rotated_pileup() -> None:
    hard = Particles(
        offsets=np.array([0, 2, 3]),
        px=np.array([10.0, 20.0, 30.0]),
        py=np.zeros(3),
        pz=np.zeros(3),
        e=np.array([10.0, 20.0, 30.0]),
        pdg_id=np.array([13, 211, 11]),
        charge=np.array([-1.0, 1.0, -1.0]),
        genpart_idx=np.array([7, -1, 6], dtype=np.int16),
    )
    library = _library()
    out = overlay(hard, library, np.array([3, 0]), np.random.default_rng(1))
    # event 0: its two hard particles first, then three library events; event 1 untouched
    assert out.n_events == 2
    n0 = out.offsets[1]
    assert out.offsets[2] - n0 == 1
    assert out.px[:2].tolist() == [10.0, 20.0]
    assert out.px[n0] == 30.0
    assert out.pileup[:2].tolist() == [False, False]
    assert not out.pileup[n0]
    assert out.pileup[2:n0].all()
    assert (out.genpart_idx[2:n0] == -1).all()
    assert out.genpart_idx[[0, n0]].tolist() == [7, 6]
    # rotation and mirroring keep pT, |pz| and E of every library particle
    pu_pt = np.hypot(out.px[2:n0], out.py[2:n0])
    lib_pt = np.hypot(library.px, library.py)
    for pt, apz, e in zip(pu_pt, np.abs(out.pz[2:n0]), out.e[2:n0], strict=True):
        match = np.isclose(lib_pt, pt) & np.isclose(np.abs(library.pz), apz) & np.isclose(library.e, e)
        assert match.any()


def test_overlay_rotates_each_pick_independently() -> None:
    hard = toy_event([(50.0, 0.0, 0.0, 211, 1)])
    one = MinimumBiasLibrary(*(np.array(v) for v in ([0, 1], [1.0], [0.0], [0.0], [1.0], [211], [1.0])))
    out = overlay(hard, one, np.array([2000]), np.random.default_rng(2))
    phi = np.arctan2(out.py[1:], out.px[1:])
    # uniform azimuth: the picks' vector sum nearly cancels
    assert abs(np.cos(phi).mean()) < 0.06
    assert abs(np.sin(phi).mean()) < 0.06
    assert np.histogram(phi, bins=4, range=(-np.pi, np.pi))[0].min() > 400


def test_overlay_checks_the_count() -> None:
    with pytest.raises(ValueError, match="n_pileup"):
        overlay(toy_event([(1.0, 0.0, 0.0, 211, 1)]), _library(), np.array([1, 1]), np.random.default_rng(0))


@pytest.mark.generation
def test_minimum_bias_library_is_physical() -> None:
    pytest.importorskip("pythia8mc")
    # (reproducibility is covered by test_same_seed_same_file: Pythia's minimum-bias set-up takes
    # several seconds, so it is initialised once here)
    a = MinimumBiasLibrary.generate(events=150, seed=11)
    assert a.n_events == 150
    pt = np.hypot(a.px, a.py)
    eta = np.arcsinh(a.pz / np.maximum(pt, 1e-12))
    visible = ~np.isin(np.abs(a.pdg_id), (12, 14, 16)) & (np.abs(eta) < 5)
    per_event = np.bincount(np.repeat(np.arange(150), np.diff(a.offsets)), weights=visible)
    # Pythia 8 Monash, 13 TeV inelastic: about 130 visible particles and 55 GeV of scalar pT
    # in |eta| < 5 per interaction (ATLAS/CMS measure dN_ch/deta ~ 6 at eta = 0)
    assert 90 < per_event.mean() < 180
    assert 35 < pt[visible].sum() / 150 < 80
    assert set(np.unique(a.charge)) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert np.all(a.charge[np.abs(a.pdg_id) == 211] != 0)


def _with_pileup(hard: Particles, pileup: list[tuple[float, float, float, int, int]]) -> Particles:
    """``hard`` (one event) followed by ``pileup`` particles flagged as pileup."""
    pu = toy_event(pileup)
    cat = {name: np.r_[getattr(hard, name), getattr(pu, name)] for name in ("px", "py", "pz", "e", "charge")}
    return Particles(
        offsets=np.array([0, len(cat["px"])]),
        pdg_id=np.r_[hard.pdg_id, pu.pdg_id],
        genpart_idx=np.r_[hard.genpart_idx, pu.genpart_idx],
        pileup=np.r_[np.zeros(len(hard.px), dtype=bool), np.ones(len(pu.px), dtype=bool)],
        **cat,
    )


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_charged_pileup_is_removed_from_jets_but_stays_in_met() -> None:
    hard = toy_event([(100.0, 0.0, 0.0, 211, 1), (100.0, 0.0, np.pi, 12, 0)])
    # two charged pileup pions inside the jet, one far away
    event = _with_pileup(
        hard, [(5.0, 0.1, 0.1, 211, 1), (4.0, -0.1, -0.1, -211, -1), (6.0, 2.0, 2.0, 211, 1)]
    )
    reco = detector.simulate(event, no_ghosts(), np.random.default_rng(0))
    scale = jet_energy_scale(np.array([100.0]), np.array([0.0]))[0]
    # charged-hadron subtraction: the jet is the hard pion alone (rho of the CHS inputs is 0)
    assert reco["Jet"].pt[0, 0] == pytest.approx(100.0 * scale, rel=1e-5)
    assert ak.num(reco["Jet"])[0] == 1
    # particle-flow MET keeps every candidate: the pileup pions' pT moves it
    pu_px = event.px[2:].sum()
    pu_py = event.py[2:].sum()
    mex = -(100.0 * scale + pu_px)
    mey = -pu_py
    assert reco["MET_pt"][0] == pytest.approx(np.hypot(mex, mey), rel=1e-5)
    assert reco["MET_sumEt"][0] == pytest.approx(115.0, rel=1e-5)


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_neutral_pileup_offset_is_subtracted_from_jets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector, "jet_energy_scale", lambda pt, eta: np.ones_like(pt))
    hard = toy_event([(100.0, 0.0, 0.0, 211, 1)])
    # a carpet of 3 GeV neutral hadrons at the centre of every cell of the central rho grid
    # (|eta| < 2.5: 4 rows of 0.625 on each side, 11 in phi): rho = 3 GeV / cell area there
    height, width = 2.5 / 4, 2 * np.pi / detector.RHO_PHI_CELLS
    carpet = [
        (3.0, sign * (i + 0.5) * height, -np.pi + (j + 0.5) * width, 130, 0)
        for sign in (-1, 1)
        for i in range(4)
        for j in range(detector.RHO_PHI_CELLS)
    ]
    event = _with_pileup(hard, carpet)
    reco = detector.simulate(event, no_ghosts(), np.random.default_rng(0))
    rho = 3.0 / (height * width)
    # the full-detector median sees mostly empty cells (nothing beyond |eta| = 2.5)
    assert reco["Rho_fixedGridRhoFastjetAll"][0] == 0.0
    jet = reco["Jet"][0][0]
    # the raw jet is the pion plus the carpet particles within R = 0.4 of it; L1 removes rho * A
    inside = [p for p in carpet if p[1] ** 2 + p[2] ** 2 < detector.JET_R**2]
    raw = 100.0 + sum(p[0] * np.cos(p[2]) for p in inside)
    assert jet.pt == pytest.approx(raw - rho * detector.JET_AREA, rel=1e-3)


@pytest.mark.generation
@pytest.mark.usefixtures("perfect_detector")
def test_isolation_ignores_charged_pileup_and_corrects_neutral() -> None:
    hard = toy_event([(50.0, 0.0, 0.0, -13, 1), (2.0, 0.2, 0.1, 211, 1)])
    hard.genpart_idx[0] = 8
    event = _with_pileup(hard, [(10.0, 0.1, -0.1, 211, 1)])  # charged pileup in the cone
    reco = detector.simulate(event, no_ghosts(), np.random.default_rng(0))
    muon = reco["Muon"][0]
    assert muon.pfRelIso04_all[0] == pytest.approx(2.0 / 50.0, rel=1e-5)
    assert muon.tightId.tolist() == [True]


@pytest.mark.generation
def test_generated_file_records_pileup(ttbar_arrays: ak.Array) -> None:
    n_pu = ak.to_numpy(ttbar_arrays.Pileup_nPU)
    true = ak.to_numpy(ttbar_arrays.Pileup_nTrueInt)
    rho = ak.to_numpy(ttbar_arrays.Rho_fixedGridRhoFastjetAll)
    assert n_pu.dtype == np.int32
    assert true.dtype == np.float32
    assert 32 < n_pu.mean() < 40  # the default profile: mean 36, spread 9
    assert 6 < n_pu.std() < 14
    # the density follows the number of interactions: CMS NanoAODv12 ttbar has rho / nTrueInt = 0.70
    assert np.corrcoef(rho, n_pu)[0, 1] > 0.8
    assert 0.35 < rho.sum() / n_pu.sum() < 0.9
    # and so does the scalar sum: about 45 GeV per interaction
    sum_et = ak.to_numpy(ttbar_arrays.MET_sumEt)
    slope = np.polyfit(n_pu, sum_et, 1)[0]
    assert 25 < slope < 70


@pytest.mark.generation
def test_command_line_pileup_option(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    import uproot

    from hepflow.cli import main

    out = tmp_path / "nopu.root"
    argv = ["generate", "ttbar", "--events", "5", "--output", str(out), "--no-progress", "--pileup", "0"]
    assert main(argv) == 0
    with uproot.open(out) as f:
        assert f["Events"]["Pileup_nPU"].array(library="np").tolist() == [0] * 5
    assert main([*argv[:-1], "-3", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hepflow: error: pileup mean must be a finite number >= 0, got -3.0"]
