"""Generator-level branches of the fast detector (GenJet, Jet_genJetIdx, GenMET) and the
detector-response measurement of :mod:`hepflow.generate.response`."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from hepflow.errors import InputError
from hepflow.generate.detector import GENJET_PT_MIN, cluster_gen_jets, delta_phi
from hepflow.generate.nanoaod import GENJET_MATCH_DR, generator_columns, match_in_order
from hepflow.generate.response import (
    BOTH,
    Comparison,
    Value,
    bootstrap,
    btag_efficiency,
    compare,
    core_width,
    jet_response,
    lepton_resolution,
    measure,
    met_resolution,
    read_events,
)
from tests.conftest import load_benchmark
from tests.generate.conftest import SAMPLE_EVENTS
from tests.generate.toys import no_ghosts, toy_event

# --- generator-level branches ----------------------------------------------------------------


def test_gen_jets_exclude_neutrinos_and_keep_leptons() -> None:
    event = toy_event(
        [
            (50.0, 0.0, 0.0, 211, 1),  # a jet on its own
            (40.0, 1.0, 2.0, 12, 0),  # a neutrino: no jet
            (30.0, -1.0, -2.0, 13, -1),  # a muon: a jet, as in CMS genParticlesForJetsNoNu
            (9.0, 2.0, 1.0, 22, 0),  # below the GenJet threshold
        ]
    )
    jets = cluster_gen_jets(event, no_ghosts())
    pt = np.sort(np.hypot(jets.px, jets.py))[::-1]
    np.testing.assert_allclose(pt, [50.0, 30.0])
    assert GENJET_PT_MIN == 10.0


def test_generator_columns_genmet_is_the_neutrino_sum() -> None:
    event = toy_event(
        [(60.0, 0.0, 0.0, 211, 1), (40.0, 1.0, 2.0, 12, 0), (30.0, -3.0, -2.0, -14, 0), (25.0, 0, 3.0, 22, 0)]
    )
    jet = ak.Array([[{"pt": 61.0, "eta": 0.05, "phi": 0.02}, {"pt": 20.0, "eta": -2.0, "phi": 1.0}]])
    out = generator_columns(event, no_ghosts(), jet)
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
    # hard jets inside the tracker all come from the hard scatter (CMS v12: 99.8 %); softer and
    # forward ones include pileup jets, which have no GenJet (CMS, with PUPPI: 89 % matched)
    hard = (a.Jet_pt > 30) & (abs(a.Jet_eta) < 2.5)
    assert float(ak.sum(matched & hard) / ak.sum(hard)) > 0.95
    assert float(ak.mean(matched)) > 0.55
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


# --- the response measurement ------------------------------------------------------------------

SAMPLES = Path(__file__).parents[1] / "samples"
CMS_FILES = ("nano_tt_v12.root", "nano_tt_v15.root", "nano_dy.root")


def _met_events(rng: np.random.Generator, sigma: np.ndarray, sumet: np.ndarray) -> ak.Array:
    """GenMET from a broad distribution, MET = GenMET + Gaussian(sigma) per component."""
    n = len(sumet)
    nu = rng.normal(0.0, 50.0, (n, 2))
    met = nu + rng.normal(0.0, 1.0, (n, 2)) * np.asarray(sigma)[..., None]
    return ak.Array(
        {
            "MET": ak.zip({"pt": np.hypot(*met.T), "phi": np.arctan2(met[:, 1], met[:, 0]), "sumEt": sumet}),
            "GenMET": ak.zip({"pt": np.hypot(*nu.T), "phi": np.arctan2(nu[:, 1], nu[:, 0])}),
        }
    )


def test_met_resolution_recovers_a_known_sigma() -> None:
    rng = np.random.default_rng(5)
    events = _met_events(rng, np.full(3000, 18.0), rng.uniform(100.0, 900.0, 3000))
    res = met_resolution(events, sumet_edges=(0.0, 500.0, 1000.0), n_boot=200)
    for axis, values in (("x", 3000), ("y", 3000), (BOTH, 6000)):
        core, rms = res.core_width[axis], res.rms[axis]
        assert core.count == 3000  # events
        # the expected errors: 1.166 sigma / sqrt(n) for IQR / 1.349, sigma / sqrt(2n) for the RMS,
        # n the number of values: both components together halve the variance
        assert core.error == pytest.approx(1.166 * 18.0 / np.sqrt(values), rel=0.25)
        assert rms.error == pytest.approx(18.0 / np.sqrt(2 * values), rel=0.25)
        assert abs(core.value - 18.0) < 3 * core.error
        assert abs(rms.value - 18.0) < 3 * rms.error
    trend = res.core_vs_sumet
    assert trend.count.tolist() == [pytest.approx(1500, abs=120), pytest.approx(1500, abs=120)]
    assert np.all(np.abs(trend.value - 18.0) < 3 * trend.error)


def test_met_resolution_trend_and_fit_recover_the_stochastic_term() -> None:
    rng = np.random.default_rng(6)
    sumet = rng.uniform(100.0, 3000.0, 20000)
    a, b = 8.0, 0.6
    events = _met_events(rng, np.sqrt(a**2 + b**2 * sumet), sumet)
    edges = np.linspace(100.0, 3000.0, 11)
    res = met_resolution(events, sumet_edges=edges, n_boot=100)
    truth = np.sqrt(a**2 + b**2 * res.core_vs_sumet.centre)
    pulls = (res.core_vs_sumet.value - truth) / res.core_vs_sumet.error
    assert np.all(np.abs(pulls) < 3.5)
    assert res.fit is not None
    assert abs(res.fit["a"].value - a) < 3 * res.fit["a"].error
    assert abs(res.fit["b"].value - b) < 3 * res.fit["b"].error
    assert res.fit["b"].error < 0.05


def test_bootstrap_errors_match_the_spread_of_repeated_samples() -> None:
    rng = np.random.default_rng(7)
    estimates, errors = [], []
    for _ in range(100):
        value, error = bootstrap(core_width, rng.normal(0.0, 2.0, 300), n_boot=150, rng=rng)
        estimates.append(value)
        errors.append(error)
    assert np.mean(errors) / np.std(estimates) == pytest.approx(1.0, abs=0.2)


def _jet_events(rng: np.random.Generator, n: int) -> tuple[ak.Array, dict[str, float]]:
    """Three GenJets per event; jet i measures GenJet (2 - i) with a known scale and resolution
    (barrel 0.95 and 10 %, endcap 1.02 and 20 %); a fourth jet is unmatched (-1), a fifth points
    past the GenJets (as CMS does for GenJets below 10 GeV), a sixth is 0.3 away from its GenJet."""
    gen_pt = 20.0 + rng.exponential(60.0, (n, 3))
    gen_eta = rng.uniform(-2.5, 2.5, (n, 3))
    gen_phi = rng.uniform(-np.pi, np.pi, (n, 3))
    barrel = np.abs(gen_eta) < 1.3
    scale = np.where(barrel, 0.95, 1.02) * (1.0 + np.where(barrel, 0.10, 0.20) * rng.normal(size=(n, 3)))
    order = [2, 1, 0]
    pt = np.column_stack([(gen_pt * scale)[:, order], np.full((n, 3), 40.0)])
    eta = np.column_stack([gen_eta[:, order], np.zeros((n, 2)), gen_eta[:, :1] + 0.3])
    phi = np.column_stack([gen_phi[:, order], np.zeros((n, 2)), gen_phi[:, :1]])
    idx = np.column_stack([np.array([order] * n), np.full(n, -1), np.full(n, 3), np.zeros(n, int)])
    jets = ak.zip({"pt": pt, "eta": eta, "phi": phi, "genJetIdx": idx})
    genjets = ak.zip({"pt": gen_pt, "eta": gen_eta, "phi": gen_phi})
    events = ak.Array({"Jet": ak.from_regular(jets), "GenJet": ak.from_regular(genjets)})
    return events, {"barrel": float(barrel.mean())}


def test_jet_response_recovers_a_known_scale_and_resolution() -> None:
    rng = np.random.default_rng(8)
    events, _ = _jet_events(rng, 4000)
    res = jet_response(events, eta_regions=((0.0, 1.3), (1.3, 2.5)), n_boot=100)
    for region, scale, width in (("0-1.3", 0.95, 0.10), ("1.3-2.5", 1.02, 0.20)):
        resp, reso = res.response_vs_pt[region], res.resolution_vs_pt[region]
        assert np.all(resp.count > 100)
        assert np.all(np.abs(resp.value - scale) < 3.5 * resp.error)
        # IQR / 1.349 of (scale * (1 + width N)) is scale * width
        assert np.all(np.abs(reso.value - scale * width) < 3.5 * reso.error)
    # only the three matched jets per event count: the unmatched, out-of-range and far ones do not
    total = sum(int(b.count.sum()) for b in res.response_vs_pt.values())
    in_range = (ak.to_numpy(events.GenJet.pt).ravel() >= 20) & (ak.to_numpy(events.GenJet.pt).ravel() < 400)
    assert total == int(in_range.sum())
    eta = res.resolution_vs_eta
    assert eta.value[0] == pytest.approx(0.095, abs=4 * eta.error[0])
    assert np.isnan(eta.value[-1])  # no jets beyond |eta| 2.5: NaN, not a number
    assert eta.count[-1] == 0


def test_jet_response_leaves_out_genjets_of_prompt_leptons() -> None:
    jets = ak.Array([[{"pt": 50.0, "eta": 0.0, "phi": 0.0, "genJetIdx": 0}] * 1] * 20)
    genjets = ak.Array([[{"pt": 50.0, "eta": 0.0, "phi": 0.0}]] * 20)
    lepton = {"pt": 50.0, "eta": 0.05, "phi": 0.0, "pdgId": 11, "status": 1, "statusFlags": 1}
    events = ak.Array({"Jet": jets, "GenJet": genjets, "GenPart": [[lepton]] * 20})
    assert jet_response(events, n_boot=10).response_vs_pt["0-1.3"].count.sum() == 0
    non_prompt = [[{**lepton, "statusFlags": 0}]] * 20
    events = ak.Array({"Jet": jets, "GenJet": genjets, "GenPart": non_prompt})
    assert jet_response(events, n_boot=10).response_vs_pt["0-1.3"].count.sum() == 20
    without_status = [[{k: v for k, v in lepton.items() if k != "status"}]] * 20
    events = ak.Array({"Jet": jets, "GenJet": genjets, "GenPart": without_status})
    with pytest.raises(InputError, match="missing branches GenPart_status"):
        jet_response(events, n_boot=10)


def test_lepton_resolution_uses_identified_prompt_matched_leptons() -> None:
    rng = np.random.default_rng(9)
    n = 2000
    gen_pt = rng.uniform(15.0, 90.0, n)
    reco_pt = gen_pt * (1.0 + 0.02 * rng.normal(size=n))
    genpart = ak.zip(
        {
            "pt": np.column_stack([gen_pt, np.full(n, 30.0)]),
            "pdgId": np.column_stack([np.full(n, 11), np.full(n, 11)]),
            "statusFlags": np.column_stack([np.ones(n, int), np.zeros(n, int)]),  # second: non-prompt
        }
    )
    electrons = ak.zip(
        {
            "pt": np.column_stack([reco_pt, np.full(n, 60.0), np.full(n, 60.0)]),
            "genPartIdx": np.column_stack([np.zeros(n, int), np.ones(n, int), np.zeros(n, int)]),
            "cutBased": np.column_stack([np.full(n, 4), np.full(n, 4), np.full(n, 2)]),  # third: loose
        }
    )
    events = ak.Array({"Electron": ak.from_regular(electrons), "GenPart": ak.from_regular(genpart)})
    res = lepton_resolution(events, flavour="electron", pt_edges=(10.0, 50.0, 100.0), n_boot=100)
    assert int(res["scale"].count.sum()) == n
    assert np.all(np.abs(res["scale"].value - 1.0) < 3.5 * res["scale"].error)
    assert np.all(np.abs(res["resolution"].value - 0.02) < 3.5 * res["resolution"].error)
    with pytest.raises(InputError, match="missing branches Muon_pt"):
        lepton_resolution(events, flavour="muon")
    with pytest.raises(ValueError, match="'tau'"):
        lepton_resolution(events, flavour="tau")  # type: ignore[arg-type]


def test_btag_efficiency_recovers_known_rates() -> None:
    rng = np.random.default_rng(10)
    n = 30000
    flavour = rng.choice([0, 4, 5], n)
    rate = np.select([flavour == 5, flavour == 4], [0.7, 0.15], 0.01)
    score = np.where(rng.random(n) < rate, 0.9, 0.1)
    jets = ak.zip(
        {"pt": rng.uniform(20.0, 200.0, n), "eta": rng.uniform(-3.0, 3.0, n), "hadronFlavour": flavour}
    )
    jets = ak.with_field(jets, score, "btagDeepFlavB")
    events = ak.Array({"Jet": ak.unflatten(jets, np.full(n // 3, 3))})
    for hf, expected in ((5, 0.7), (4, 0.15), (0, 0.01)):
        eff = btag_efficiency(events, hadron_flavour=hf, pt_edges=(20.0, 100.0, 200.0))
        assert np.all(np.abs(eff.value - expected) < 3.5 * eff.error)
        # binomial errors, and |eta| > 2.5 left out
        np.testing.assert_allclose(eff.error, np.sqrt(expected * (1 - expected) / eff.count), rtol=0.2)
        assert eff.count.sum() == pytest.approx(n / 3 * 5 / 6, rel=0.05)


def test_comparison_pull() -> None:
    row = Comparison("x", Value(10.0, 3.0, 100), Value(14.0, 4.0, 50))
    assert row.pull == pytest.approx(-0.8)
    assert np.isnan(Comparison("x", Value(1.0, 0.0, 1), Value(1.0, 0.0, 1)).pull)


@pytest.mark.parametrize("name", CMS_FILES)
def test_measure_on_cms_simulation_gives_finite_numbers_with_errors(name: str) -> None:
    events = read_events(SAMPLES / name)
    resp = measure(events, source=name, n_boot=50)
    values = resp.values()
    for key in ("MET core width x [GeV]", "MET core width y [GeV]", "MET RMS x [GeV]", "MET RMS y [GeV]"):
        v = values[key]
        assert 10.0 < v.value < 60.0, key
        assert 0.0 < v.error < 0.5 * v.value, key
    central = resp.jets.resolution_vs_pt["0-1.3"]
    if name.startswith("nano_tt"):
        assert np.isfinite(central.value[1])
        assert 0.03 < central.value[1] < 0.4
        assert 0.0 < central.error[1] < central.value[1]
        assert 0.85 < resp.jets.response_vs_pt["0-1.3"].value[1] < 1.15
    else:  # 40 Drell-Yan events: too few jets per bin, and no number is made up
        assert central.count.sum() > 0
        assert np.all(np.isnan(central.value[central.count < 10]))
    pu = resp.pileup["Pileup_nPU"]
    rho = resp.pileup["fixedGridRhoFastjetAll [GeV]"]
    assert pu is not None
    assert 20.0 < pu.value < 70.0
    assert pu.error > 0
    assert rho is not None
    assert 10.0 < rho.value < 50.0
    if name.startswith("nano_tt"):
        b = resp.btag["b"]
        assert np.all(np.isfinite(b.value[1:]))
        assert np.all((b.error[1:] > 0) & (b.error[1:] < 0.15))
    muon = resp.leptons["muon"]["resolution"]
    if name == "nano_tt_v12.root":  # semileptonic; v15 is all-hadronic, DY has 11 prompt muons
        assert np.isfinite(muon.value[1])
        assert 0.0 < muon.value[1] < 0.1
    else:
        assert np.all(np.isnan(muon.value[muon.count < 10]))
    json.dumps(resp.to_dict(), allow_nan=False)


def test_read_events_pools_nanoaod_versions() -> None:
    events = read_events([SAMPLES / "nano_tt_v12.root", SAMPLES / "nano_tt_v15.root"])
    assert len(events) == 400
    assert set(events.fields) >= {"MET", "GenMET", "Jet", "GenJet", "Pileup", "rho"}
    # v15's PFMET became MET
    v15 = read_events(SAMPLES / "nano_tt_v15.root")
    np.testing.assert_array_equal(ak.to_numpy(events.MET.sumEt[200:]), ak.to_numpy(v15.MET.sumEt))


def test_read_events_refuses_bad_input(tmp_path: Path) -> None:
    import uproot

    with pytest.raises(InputError, match=r"cannot read .*nowhere\.root"):
        read_events(tmp_path / "nowhere.root")
    text = tmp_path / "text.root"
    text.write_text("not ROOT")
    with pytest.raises(InputError, match=r"cannot read .*text\.root"):
        read_events(text)
    old = tmp_path / "old.root"
    with uproot.recreate(old) as f:
        f["Events"] = {"MET_pt": np.ones(3, np.float32), "MET_phi": np.zeros(3, np.float32)}
    with pytest.raises(
        InputError, match=r"old\.root: missing branches MET_sumEt, GenMET_pt.*generate it again"
    ):
        read_events(old)
    with uproot.recreate(tmp_path / "other.root") as f:
        f["tree"] = {"x": np.ones(3)}
    with pytest.raises(InputError, match=r"other\.root: no Events tree"):
        read_events(tmp_path / "other.root")


@pytest.mark.generation
def test_measure_on_the_fast_detector(ttbar_file: Path) -> None:
    resp = measure(read_events(ttbar_file), source="fast", n_boot=50)
    # the default pileup profile: mean 36; rho about 0.58 GeV per interaction
    assert resp.pileup["Pileup_nPU"].value == pytest.approx(36.0, abs=2.5)
    assert 15.0 < resp.pileup["fixedGridRhoFastjetAll [GeV]"].value < 28.0
    v = resp.values()
    assert 22.0 < v["MET core width x [GeV]"].value < 42.0
    assert v["jet response, |eta| 0-1.3, pT 50-80"].value == pytest.approx(1.0, abs=0.05)
    assert 0.03 < v["jet resolution, |eta| 0-1.3, pT 50-80"].value < 0.2
    assert 0.0 < v["muon pT resolution, pT 30-50"].value < 0.05
    # b-tag rates fitted to CMS (0.83 at 50-80 GeV)
    assert 0.7 < v["b-tag rate, b jets, pT 50-80"].value < 0.95
    rows = compare(resp, measure(read_events(SAMPLES / "nano_tt_v12.root"), n_boot=50))
    names = [r.name for r in rows]
    assert "MET core width x [GeV]" in names
    assert "mean Pileup_nPU" in names  # both sides have pileup


@pytest.mark.generation
def test_benchmark_writes_table_json_report_and_plots(
    ttbar_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uproot

    bench = load_benchmark("detector_response")
    out = tmp_path / "response"
    argv = ["detector_response.py", "--fast", str(ttbar_file), "--out", str(out), "--n-boot", "20"]
    monkeypatch.setattr("sys.argv", argv)
    bench.main()
    printed = capsys.readouterr().out
    assert "| MET core width x [GeV] |" in printed
    assert "| MET core width x and y [GeV] |" in printed
    # the like-for-like MET table: the fast sample against each CMS sample, with its pileup
    like = printed.split("against each CMS sample")[1]
    assert like.count("| nano_tt_v12.root (200) | ") == 1
    assert "| nano_tt_v15.root (200) | " in like
    result = json.loads((out / "response.json").read_text())
    assert result["fast"]["events"] == SAMPLE_EVENTS
    assert set(result["cms"]) == {"nano_tt_v12.root", "nano_tt_v15.root", "nano_dy.root"}
    assert result["cms_pooled"]["events"] == 440
    rows = {r["name"]: r for r in result["comparison"]}
    met = rows["MET core width x [GeV]"]
    assert met["pull"] == pytest.approx(
        (met["fast"]["value"] - met["cms"]["value"]) / np.hypot(met["fast"]["error"], met["cms"]["error"])
    )
    assert all(r["pull"] is not None for r in result["comparison"])
    per = {r["name"]: r for r in result["met_per_sample"]["nano_tt_v15.root"]}
    assert per["mean Pileup_nPU"]["cms"]["value"] == pytest.approx(45.9, abs=0.1)
    core = per["MET core width x and y [GeV]"]
    assert core["cms"] == result["cms"]["nano_tt_v15.root"]["met"]["core_width"]["x and y"]
    assert "## MET against each CMS sample" in (out / "report.md").read_text()
    report = (out / "report.md").read_text()
    assert "## Comparison" in report
    assert "nano_tt_v15.root: <nPU> = 45.9" in report
    # the detector rows judged as a family: the pileup-profile rows left out
    together = result["judged_together"]
    counted = [
        r for r in result["comparison"] if "x and y" not in r["name"] and not r["name"].startswith("mean ")
    ]
    assert together["n"] == len(counted)
    assert together["beyond"] == sum(abs(r["pull"]) > 2 for r in counted)
    assert together["max_pull"] == pytest.approx(max(abs(r["pull"]) for r in counted))
    assert f"Judged together: of the {together['n']} numbers that compare the detector" in report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "btag_rates.png",
        "jet_response_eta.png",
        "jet_response_pt.png",
        "lepton_resolution.png",
        "met_difference.png",
        "met_vs_sumet.png",
    ]
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)

    # a file without the generator-level branches: one line, exit status 2
    old = tmp_path / "old.root"
    with uproot.recreate(old) as f:
        f["Events"] = {"MET_pt": np.ones(3, np.float32)}
    monkeypatch.setattr("sys.argv", ["detector_response.py", "--fast", str(old), "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "old.root: missing branches" in err


def test_pull_summary_judges_pulls_as_a_family() -> None:
    from scipy import stats

    from hepflow.generate.response import pull_summary

    # 77 pulls, 5 beyond 2: the binomial tail; the largest 3.3 among 77
    pulls = [0.5] * 72 + [2.1, -2.4, 2.2, -3.3, 2.05]
    s = pull_summary(pulls)
    tail = 2 * stats.norm.sf(2.0)
    assert (s["n"], s["beyond"], s["max_pull"]) == (77, 5, 3.3)
    assert s["expected"] == pytest.approx(77 * tail)
    assert s["p_count"] == pytest.approx(1 - stats.binom.cdf(4, 77, tail))
    assert s["p_max"] == pytest.approx(1 - (1 - 2 * stats.norm.sf(3.3)) ** 77)
    assert 0.05 < s["p_max"] < 0.1
    # NaN pulls (a bin without entries) are not counted; none at all is refused
    assert pull_summary([*pulls, float("nan")])["n"] == 77
    with pytest.raises(ValueError, match="at least one finite pull"):
        pull_summary([float("nan")])
    # standard-normal pulls: no alarm on average
    rng = np.random.default_rng(0)
    p = [pull_summary(rng.normal(size=77))["p_max"] for _ in range(200)]
    assert 0.35 < np.mean(p) < 0.65
