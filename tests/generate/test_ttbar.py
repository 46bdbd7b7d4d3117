"""``generate_ttbar``: physics of the sample, the NanoAOD layout, determinism and safe writing."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.errors import ConfigError, OutputError
from hepflow.generate import ttbar
from hepflow.generate.detector import BTAG_MEDIUM_WP
from hepflow.generate.ttbar import generate_ttbar
from hepflow.outputs.atomic import TMP_PREFIX
from tests.conftest import TTBAR_HELDOUT
from tests.generate.conftest import SAMPLE_EVENTS

pytestmark = pytest.mark.generation

W_MASS = 80.4
TOP_MASS = 172.5


def _p4(a: ak.Array, prefix: str) -> dict[str, np.ndarray]:
    """(E, px, py, pz) of a regular (events x entries) collection."""
    pt, eta, phi, mass = (ak.to_numpy(a[f"{prefix}_{c}"]).astype(float) for c in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return {"e": np.sqrt(px**2 + py**2 + pz**2 + mass**2), "px": px, "py": py, "pz": pz}


def _mass(p: dict[str, np.ndarray], rows: np.ndarray, cols: list[np.ndarray]) -> np.ndarray:
    total = {k: sum(v[rows, c] for c in cols) for k, v in p.items()}
    return np.sqrt(np.maximum(total["e"] ** 2 - total["px"] ** 2 - total["py"] ** 2 - total["pz"] ** 2, 0))


@pytest.fixture(scope="module")
def truth(ttbar_arrays: ak.Array) -> dict[str, np.ndarray]:
    pdg = ak.to_numpy(ttbar_arrays.GenPart_pdgId)
    rows = np.arange(len(pdg))
    lepton = np.argmax((np.abs(pdg) == 11) | (np.abs(pdg) == 13), axis=1)
    neutrino = np.argmax((np.abs(pdg) == 12) | (np.abs(pdg) == 14), axis=1)
    w = np.array([-1, -1, 0, 1, 0, 1, 2, 2, 3, 3])[lepton]  # the leptonic W
    return {"pdg": pdg, "rows": rows, "lepton": lepton, "neutrino": neutrino, "w": w, "b": w + 2}


def test_lepton_and_neutrino_make_a_w(ttbar_arrays: ak.Array, truth: dict[str, np.ndarray]) -> None:
    p = _p4(ttbar_arrays, "GenPart")
    m_lnu = _mass(p, truth["rows"], [truth["lepton"], truth["neutrino"]])
    assert np.median(m_lnu) == pytest.approx(W_MASS, abs=2.0)


def test_b_and_w_make_a_top(ttbar_arrays: ak.Array, truth: dict[str, np.ndarray]) -> None:
    p = _p4(ttbar_arrays, "GenPart")
    m_bw = _mass(p, truth["rows"], [truth["w"], truth["b"]])
    assert np.median(m_bw) == pytest.approx(TOP_MASS, abs=3.0)
    # and the hadronic side: b + the two W+ or W- daughter quarks
    hadronic_w = 5 - truth["w"]
    first = 2 * hadronic_w + 2
    m_bqq = _mass(p, truth["rows"], [hadronic_w + 2, first, first + 1])
    assert np.median(m_bqq) == pytest.approx(TOP_MASS, abs=3.0)


def test_one_prompt_lepton_of_each_charge_and_flavour(truth: dict[str, np.ndarray]) -> None:
    lepton_id = truth["pdg"][truth["rows"], truth["lepton"]]
    assert set(np.unique(lepton_id).tolist()) == {-13, -11, 11, 13}
    assert 0.35 < np.mean(lepton_id > 0) < 0.65
    assert 0.35 < np.mean(np.abs(lepton_id) == 11) < 0.65


def test_met_follows_the_neutrino(ttbar_arrays: ak.Array, truth: dict[str, np.ndarray]) -> None:
    nu_pt = ak.to_numpy(ttbar_arrays.GenPart_pt)[truth["rows"], truth["neutrino"]]
    nu_phi = ak.to_numpy(ttbar_arrays.GenPart_phi)[truth["rows"], truth["neutrino"]]
    met = ak.to_numpy(ttbar_arrays.MET_pt)
    assert np.corrcoef(nu_pt, met)[0, 1] > 0.6
    # the response along the neutrino: resolution (pileup) noise does not bias it, whereas the
    # magnitude ratio |MET| / pT(nu) rises with it (1.19 here, 1.14 in the CMS v12 sample)
    hard = nu_pt > 30
    parallel = met * np.cos(ak.to_numpy(ttbar_arrays.MET_phi) - nu_phi) / nu_pt
    assert np.median(parallel[hard]) == pytest.approx(1.0, abs=0.12)


def test_jets_and_btagging_are_plausible(ttbar_arrays: ak.Array) -> None:
    a = ttbar_arrays
    central = (a.Jet_pt > 25) & (np.abs(a.Jet_eta) < 2.5)
    assert 3.5 < ak.mean(ak.sum(central, axis=1)) < 6.0
    assert ak.all(a.Jet_pt >= 15)
    assert ak.all(a.Jet_pt[:, :-1] >= a.Jet_pt[:, 1:])  # sorted
    flavour = ak.flatten(a.Jet_hadronFlavour[central])
    tagged = ak.flatten(a.Jet_btagDeepFlavB[central]) > BTAG_MEDIUM_WP
    b_rate = ak.mean(tagged[flavour == 5])
    light_rate = ak.mean(tagged[flavour == 0])
    assert 0.75 < b_rate < 0.92  # CMS NanoAOD at 0.2783: 0.76-0.89 (docs/detector.md)
    assert light_rate < 0.05
    # two b quarks per event, most of them give a central b jet
    assert 1.4 < ak.sum(flavour == 5) / len(a) < 2.2
    parton = ak.flatten(a.Jet_partonFlavour[central])
    assert ak.all(np.abs(parton[flavour == 5]) == 5)


def test_leptons_are_reconstructed(ttbar_arrays: ak.Array, truth: dict[str, np.ndarray]) -> None:
    a = ttbar_arrays
    for name, iso, tight in (
        ("Electron", "pfRelIso03_all", "cutBased"),
        ("Muon", "pfRelIso04_all", "tightId"),
    ):
        idx = a[f"{name}_genPartIdx"]
        prompt = idx >= 0
        gen_pt = a.GenPart_pt[ak.where(prompt, idx, 0)][prompt]
        ratio = ak.flatten(a[f"{name}_pt"][prompt] / gen_pt)
        assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
        assert ak.all(a[f"{name}_pdgId"][prompt] == a.GenPart_pdgId[ak.where(prompt, idx, 0)][prompt])
        assert np.median(ak.flatten(a[f"{name}_{iso}"][prompt])) < 0.1
        expected = 4 if name == "Electron" else True
        assert ak.all(a[f"{name}_{tight}"][prompt] == expected)
        assert ak.all(a[f"{name}_charge"] == -np.sign(a[f"{name}_pdgId"]))
    found = ak.any(a.Electron_genPartIdx >= 0, axis=1) | ak.any(a.Muon_genPartIdx >= 0, axis=1)
    assert 0.65 < ak.mean(found) < 0.95


def test_nanoaod_layout(ttbar_file: Path) -> None:
    with uproot.open(ttbar_file) as f:
        assert f.classnames() == {"Events;1": "TTree"}
        tree = f["Events"]
        interpretations = {name: tree[name].interpretation for name in tree.keys()}
        types = {
            name: getattr(i, "content", i).numpy_dtype.newbyteorder("=")
            for name, i in interpretations.items()
        }
        assert tree.num_entries == SAMPLE_EVENTS
    expected = {
        "run": "u4",
        "luminosityBlock": "u4",
        "event": "u8",
        "genWeight": "f4",
        "nJet": "i4",
        "Jet_pt": "f4",
        "Jet_hadronFlavour": "u1",
        "Jet_partonFlavour": "i2",
        "Jet_jetId": "u1",
        "Jet_btagDeepFlavB": "f4",
        "nElectron": "i4",
        "Electron_charge": "i4",
        "Electron_cutBased": "u1",
        "Electron_genPartIdx": "i2",
        "nMuon": "i4",
        "Muon_tightId": "?",
        "Muon_pfRelIso04_all": "f4",
        "MET_pt": "f4",
        "MET_phi": "f4",
        "MET_sumEt": "f4",
        "nGenPart": "i4",
        "GenPart_pdgId": "i4",
        "GenPart_status": "i4",
        "GenPart_statusFlags": "u2",
        "GenPart_genPartIdxMother": "i2",
    }
    for name, dtype in expected.items():
        assert types[name] == np.dtype(dtype), name
    assert not any(name.startswith("n") and "_" in name for name in types)


def test_event_ids(ttbar_arrays: ak.Array) -> None:
    np.testing.assert_array_equal(ak.to_numpy(ttbar_arrays.event), np.arange(1, SAMPLE_EVENTS + 1))
    assert ak.all(ttbar_arrays.run == 1)
    assert ak.all(ttbar_arrays.luminosityBlock == TTBAR_HELDOUT[1])
    assert ak.all(ttbar_arrays.genWeight == 1.0)


def test_coffea_reads_the_file(ttbar_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    # like any NanoAOD without every collection (the real CMS ones included), the file lacks
    # some cross-reference branches coffea looks for
    monkeypatch.setattr(NanoAODSchema, "warn_missing_crossrefs", False)
    events = NanoEventsFactory.from_root(
        {str(ttbar_file): "Events"}, schemaclass=NanoAODSchema, mode="eager"
    ).events()
    assert len(events) == SAMPLE_EVENTS
    assert ak.all(events.Jet.pt > 0)
    assert ak.all(events.MET.pt >= 0)
    w_parents = events.GenPart[np.abs(events.GenPart.pdgId) == 24].parent.pdgId
    assert ak.all(np.abs(w_parents) == 6)
    lepton = events.GenPart[(np.abs(events.GenPart.pdgId) == 11) | (np.abs(events.GenPart.pdgId) == 13)]
    assert ak.all(ak.num(lepton[lepton.hasFlags(["isPrompt", "isLastCopy"])]) == 1)
    assert ak.all(np.abs(lepton.parent.pdgId) == 24)
    matched = events.Muon.matched_gen
    assert ak.all(ak.is_none(matched, axis=1) | (np.abs(matched.pdgId) == 13))


def _read(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        tree = f["Events"]
        return {name: ak.to_numpy(ak.flatten(tree[name].array(), axis=None)) for name in tree.keys()}


def test_same_seed_same_file(tmp_path: Path, ttbar_file: Path) -> None:
    generate_ttbar(tmp_path / "a.root", events=40, seed=5, progress=False)
    generate_ttbar(tmp_path / "b.root", events=40, seed=5, batch_size=7, progress=False)
    a, b = (_read(tmp_path / name) for name in ("a.root", "b.root"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # another seed (the session's sample, seed 2): other events from the first one on
    with uproot.open(ttbar_file) as f:
        other = f["Events"]["GenPart_pt"].array(entry_stop=1)
    with uproot.open(tmp_path / "a.root") as f:
        first = f["Events"]["GenPart_pt"].array(entry_stop=1)
    assert not ak.array_equal(first, other)


def test_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttbar, "CHUNK_EVENTS", 10)
    calls = []
    original = ttbar._reconstruct

    def fail_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(ttbar, "_reconstruct", fail_second)
    with pytest.raises(RuntimeError, match="boom"):
        generate_ttbar(tmp_path / "x.root", events=30, batch_size=10, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.root"
    path.write_text("keep me")
    with pytest.raises(OutputError, match=r"x\.root exists"):
        generate_ttbar(path, events=5, progress=False)
    assert path.read_text() == "keep me"
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": 0}, "events"),
        ({"events": 5, "seed": -1}, "seed"),
        ({"events": 5, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_ttbar(tmp_path / "x.root", progress=False, **kwargs)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hepflow.cli import main

    out = tmp_path / "cli.root"
    assert (
        main(["generate", "ttbar", "--events", "5", "--seed", "3", "--output", str(out), "--no-progress"])
        == 0
    )
    assert f"wrote 5 events to {out}" in capsys.readouterr().out
    with uproot.open(out) as f:
        assert f["Events"].num_entries == 5
