"""The neutrino feature processor on real CMS NanoAOD (v12 semileptonic, v15 all-hadronic)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from hepflow.errors import ConfigError, InputError
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES, context_arrays, truth_array
from hepflow.neutrino.processor import CUTFLOW_STEPS, NeutrinoFeatureProcessor, NeutrinoSelection
from hepflow.neutrino.quadratic import M_W
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, run_processor
from tests.conftest import write_nanoaod_subset

README_COLUMNS = [
    "met_px",
    "met_py",
    "lep_px",
    "lep_py",
    "lep_pz",
    "lep_e",
    "lep_flavor",
    "jet_px",
    "jet_py",
    "jet_eta",
    "jet_loge",
    "jet_btag",
    "njet",
    "nbjet",
    "weight",
    "nu_px_true",
    "nu_py_true",
    "nu_pz_true",
    "nu_eta_true",
    "run",
    "luminosityBlock",
    "event",
]


def _events(path: Path):
    return NanoEventsFactory.from_root(
        {str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager", metadata={"filename": str(path)}
    ).events()


@pytest.fixture(scope="module")
def v12_output(nano_v12):
    return NeutrinoFeatureProcessor().columns(_events(nano_v12))


def test_cutflow_is_monotone_and_complete(v12_output):
    flow = cutflow_to_dict(v12_output.cutflow)
    assert tuple(flow) == CUTFLOW_STEPS
    counts = list(flow.values())
    assert counts[0] == 200
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert counts[-1] == len(v12_output.columns) > 20


def test_documented_columns_present(v12_output):
    cols = v12_output.columns
    assert set(README_COLUMNS) <= set(cols.fields)
    assert ak.all(ak.num(cols.jet_px, axis=1) <= 10)
    assert ak.all(cols.njet >= 4)
    assert ak.all(cols.nbjet >= 1)
    few = cols.njet <= 10
    assert ak.all(cols.nbjet[few] == ak.sum(cols.jet_btag[few], axis=1))
    assert ak.all(cols.nbjet >= ak.sum(cols.jet_btag, axis=1))
    assert set(np.unique(ak.to_numpy(cols.lep_flavor))) <= {11, 13}


def _w_neutrinos_by_hand(path: Path) -> dict[int, dict[int, list[float]]]:
    """Per event number: {|pdgId| of each hard-process neutrino whose first ancestor of another
    species is a W: [its px]}, found by walking the GenPart mother indices in plain Python."""
    gen = uproot.open(path)["Events"].arrays(
        [
            "event",
            "GenPart_pdgId",
            "GenPart_genPartIdxMother",
            "GenPart_pt",
            "GenPart_phi",
            "GenPart_statusFlags",
        ],
        library="np",
    )
    found: dict[int, dict[int, list[float]]] = {}
    for i, event in enumerate(gen["event"]):
        pdg, mother, flags = (
            gen["GenPart_pdgId"][i],
            gen["GenPart_genPartIdxMother"][i],
            gen["GenPart_statusFlags"][i],
        )
        nus: dict[int, list[float]] = {}
        for k in range(len(pdg)):
            # fromHardProcess (bit 8) and isLastCopy (bit 13)
            if abs(pdg[k]) not in (12, 14, 16) or not (flags[k] >> 8) & 1 or not (flags[k] >> 13) & 1:
                continue
            m = mother[k]
            while m >= 0 and pdg[m] == pdg[k]:
                m = mother[m]
            if m >= 0 and abs(pdg[m]) == 24:
                px = gen["GenPart_pt"][i][k] * np.cos(gen["GenPart_phi"][i][k])
                nus.setdefault(int(abs(pdg[k])), []).append(float(px))
        found[int(event)] = nus
    return found


def test_truth_is_the_neutrino_of_w_to_e_or_mu(v12_output, nano_v12):
    """The truth of each selected CMS event is the nu_e or nu_mu of a W decay (checked by walking
    the GenPart mother indices by hand); the 3 selected events whose leptonic W decays to a tau
    (the selected lepton comes from the tau) get None: no usable truth."""
    cols = v12_output.columns
    by_hand = _w_neutrinos_by_hand(nano_v12)
    no_truth = ak.to_numpy(ak.is_none(cols.nu_px_true))
    for event, nu_px, missing in zip(
        ak.to_numpy(cols.event), ak.to_numpy(ak.fill_none(cols.nu_px_true, np.nan)), no_truth, strict=True
    ):
        nus = by_hand[int(event)]
        candidates = nus.get(12, []) + nus.get(14, [])
        if missing:
            assert not candidates, f"event {event}: {nus}"
            assert nus.get(16), f"event {event}: {nus}"  # W -> tau nu_tau
        else:
            assert np.min(np.abs(np.array(candidates) - nu_px)) < 1e-3
    assert (len(cols), int(no_truth.sum())) == (52, 3)
    # every one of the 200 events is semileptonic: 79 with W -> tau nu, 121 with W -> e/mu nu
    assert sum(bool(n.get(16)) for n in by_hand.values()) == 79
    assert sum(bool(n.get(12) or n.get(14)) for n in by_hand.values()) == 121


def test_neutrino_physics(v12_output):
    cols = v12_output.columns
    cols = cols[~ak.is_none(cols.nu_px_true)]
    nu_px, nu_py = ak.to_numpy(cols.nu_px_true), ak.to_numpy(cols.nu_py_true)
    assert np.corrcoef(ak.to_numpy(cols.met_px), nu_px)[0, 1] > 0.5
    assert np.corrcoef(ak.to_numpy(cols.met_py), nu_py)[0, 1] > 0.5
    # reco lepton + true neutrino: the W mass for most events (mismatched leptons smear it)
    nu_pz = ak.to_numpy(cols.nu_pz_true)
    nu_e = np.sqrt(nu_px**2 + nu_py**2 + nu_pz**2)
    lep = [ak.to_numpy(cols[k]) for k in ("lep_px", "lep_py", "lep_pz", "lep_e")]
    m2 = (lep[3] + nu_e) ** 2 - (lep[0] + nu_px) ** 2 - (lep[1] + nu_py) ** 2 - (lep[2] + nu_pz) ** 2
    mass = np.sqrt(np.clip(m2, 0, None))
    assert np.mean(np.abs(mass - M_W) < 10) > 0.5


def _tops_by_hand(path: Path) -> dict[int, dict[int, float]]:
    """Per event number: {pdgId: mass} of the last-copy hard-process tops (bits 8 and 13)."""
    gen = uproot.open(path)["Events"].arrays(
        ["event", "GenPart_pdgId", "GenPart_mass", "GenPart_statusFlags"], library="np"
    )
    out: dict[int, dict[int, float]] = {}
    for i, event in enumerate(gen["event"]):
        pdg, mass, flags = gen["GenPart_pdgId"][i], gen["GenPart_mass"][i], gen["GenPart_statusFlags"][i]
        last = ((flags >> 8) & 1).astype(bool) & ((flags >> 13) & 1).astype(bool) & (np.abs(pdg) == 6)
        out[int(event)] = {int(p): float(m) for p, m in zip(pdg[last], mass[last], strict=True)}
    return out


def test_parton_truth_masses(v12_output, nano_v12):
    """w_lep_mass_true, top_lep_mass_true, ttbar_mass_true: present exactly where the truth
    neutrino is, near m_W and m_t, the leptonic top is the one whose charge is the lepton's
    (t -> W+ -> l+ nu), and m_ttbar is >= the sum of the two top masses."""
    cols = v12_output.columns
    has_nu = ~ak.to_numpy(ak.is_none(cols.nu_px_true))
    for name in ("w_lep_mass_true", "top_lep_mass_true", "ttbar_mass_true"):
        np.testing.assert_array_equal(~ak.to_numpy(ak.is_none(cols[name])), has_nu)
    sel = cols[has_nu]
    mw, mt, mtt = (
        ak.to_numpy(ak.fill_none(sel[k], np.nan))
        for k in ("w_lep_mass_true", "top_lep_mass_true", "ttbar_mass_true")
    )
    assert np.median(np.abs(mw - M_W)) < 3
    assert np.all(np.abs(mw - M_W) < 30)
    assert np.median(np.abs(mt - 172.5)) < 3
    assert np.all(np.abs(mt - 172.5) < 30)
    tops = _tops_by_hand(nano_v12)
    for event, charge, m_top, m_pair in zip(
        ak.to_numpy(sel.event), ak.to_numpy(sel.lep_charge), mt, mtt, strict=True
    ):
        masses = tops[int(event)]
        assert m_top == pytest.approx(masses[6 if charge > 0 else -6], rel=1e-6)
        assert m_pair >= masses[6] + masses[-6] - 1e-3


def test_context_arrays_shapes(v12_output):
    cols = v12_output.columns
    arrays = context_arrays(cols)
    n = len(cols)
    assert arrays["flat"].shape == (n, len(FLAT_FEATURES))
    assert arrays["jets"].shape == (n, 10, len(JET_FEATURES))
    np.testing.assert_array_equal(arrays["mask"].sum(axis=1), np.minimum(ak.to_numpy(cols.njet), 10))
    assert np.all(arrays["jets"][~arrays["mask"]] == 0)
    truth = truth_array(cols)  # NaN exactly where there is no truth neutrino
    np.testing.assert_array_equal(np.isnan(truth).any(axis=1), ak.to_numpy(ak.is_none(cols.nu_px_true)))
    assert np.isfinite(truth[~np.isnan(truth).any(axis=1)]).all()


def test_all_hadronic_v15_uses_pfmet_and_selects_nothing(nano_v15):
    out = NeutrinoFeatureProcessor().columns(_events(nano_v15))
    flow = cutflow_to_dict(out.cutflow)
    assert flow["all"] == 200
    assert len(out.columns) == flow["b jets"] <= 5
    assert "met_px" in out.columns.fields


def test_missing_truth_is_none_not_zero(nano_v12, tmp_path):
    """Without GenPart (data) the truth columns are absent; with an all-hadronic event they are None."""
    path = write_nanoaod_subset(nano_v12, tmp_path / "data.root", drop=_genpart_branches(nano_v12))
    cols = NeutrinoFeatureProcessor().columns(_events(path)).columns
    assert len(cols) > 0
    assert "nu_px_true" not in cols.fields


def _genpart_branches(path: Path) -> list[str]:
    return [k for k in uproot.open(path)["Events"].keys() if k.startswith("GenPart") or k == "nGenPart"]


def test_missing_branch_is_named(nano_v12, tmp_path):
    path = write_nanoaod_subset(nano_v12, tmp_path / "nobtag.root", drop=["Jet_btagDeepFlavB"])
    with pytest.raises(InputError, match=r"nobtag.root: missing branches Jet_btagDeepFlavB"):
        run_processor(
            NeutrinoFeatureProcessor(), build_fileset([path]), tmp_path / "out", RunConfig(progress=False)
        )
    assert not list((tmp_path / "out").glob("*.parquet"))


def test_runner_writes_chunks_atomically_and_resumes(nano_v12, tmp_path):
    out = tmp_path / "out"
    cfg = RunConfig(chunksize=70, formats=("parquet", "root"), progress=False)
    result = run_processor(NeutrinoFeatureProcessor(), build_fileset([nano_v12], dataset="tt"), out, cfg)
    assert len(result["chunks"]) == 3
    first = read_parquet_dir(out)
    assert len(first) == cutflow_to_dict(result["cutflow"])["b jets"]
    assert not list(out.glob(".hepflow-tmp-*"))
    cutflows = json.loads((out / "cutflow.json").read_text())
    assert cutflows["total"] == cutflow_to_dict(result["cutflow"])
    assert cutflows["by_dataset"] == {"tt": cutflows["total"]}
    # ROOT output: same rows, optional truth as value + validity flag, one jet counter
    root_rows = 0
    for f in sorted(out.glob("*.root")):
        tree = uproot.open(f)["Events"]
        root_rows += tree.num_entries
        assert {"nu_pz_true", "nu_pz_true_valid", "n_jet", "jet_px"} <= set(tree.keys())
    assert root_rows == len(first)

    # simulate a job killed after two chunks: remove one chunk's marker and data
    victim = sorted(out.glob("tt__*.json"))[0]
    victim.with_suffix(".parquet").unlink()
    victim.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("tt__*.parquet")}
    again = run_processor(NeutrinoFeatureProcessor(), build_fileset([nano_v12], dataset="tt"), out, cfg)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("tt__*.parquet")}
    assert all(after[name] == t for name, t in before.items())  # complete chunks were skipped
    assert len(after) == 3
    second = read_parquet_dir(out)
    assert sorted(ak.to_numpy(second.event)) == sorted(ak.to_numpy(first.event))
    assert cutflow_to_dict(again["cutflow"]) == cutflow_to_dict(result["cutflow"])


def test_fileset_json(nano_v12, tmp_path):
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"ttbar_v12": {"files": {str(nano_v12): "Events"}}}))
    result = run_processor(
        NeutrinoFeatureProcessor(), build_fileset([fileset]), tmp_path / "out", RunConfig(progress=False)
    )
    assert next(iter(result["chunks"].values()))["dataset"] == "ttbar_v12"
    assert set(result["cutflow_by_dataset"]) == {"ttbar_v12"}


def test_missing_input_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.root does not exist"):
        build_fileset([tmp_path / "nope.root"])


def test_corrupt_file_names_the_file(nano_v12, tmp_path):
    bad = tmp_path / "truncated.root"
    bad.write_bytes(nano_v12.read_bytes()[:300_000])
    with pytest.raises(InputError, match=r"truncated\.root"):
        run_processor(
            NeutrinoFeatureProcessor(), build_fileset([bad]), tmp_path / "out", RunConfig(progress=False)
        )


def test_selection_config_is_strict(tmp_path):
    cfg = tmp_path / "sel.toml"
    cfg.write_text("[selection]\njet_pt_min = 30\nmin_jets = 3\n")
    sel = NeutrinoSelection.from_file(cfg)
    assert sel.jet_pt_min == 30.0
    assert sel.min_jets == 3
    cfg.write_text("[selection]\njet_pt_mni = 30\n")
    with pytest.raises(ConfigError, match="unknown key 'jet_pt_mni'"):
        NeutrinoSelection.from_file(cfg)
    cfg.write_text('[selection]\nmin_jets = "four"\n')
    with pytest.raises(ConfigError, match=r"min_jets: expected an integer"):
        NeutrinoSelection.from_file(cfg)


def test_tighter_selection_selects_fewer(nano_v12):
    loose = NeutrinoFeatureProcessor().columns(_events(nano_v12)).columns
    tight = NeutrinoFeatureProcessor(NeutrinoSelection(min_jets=6, min_bjets=2)).columns(_events(nano_v12))
    tight = tight.columns
    assert 0 < len(tight) < len(loose)
    assert ak.all(tight.njet >= 6)
    assert ak.all(tight.nbjet >= 2)


@pytest.mark.parametrize("executor", ["iterative", "futures", "dask"])
def test_executors_give_identical_rows(nano_v12, tmp_path, executor):
    if executor == "dask":
        pytest.importorskip("distributed")
    cfg = RunConfig(executor=executor, workers=2, chunksize=50, progress=False)
    result = run_processor(NeutrinoFeatureProcessor(), build_fileset([nano_v12]), tmp_path / executor, cfg)
    assert len(result["chunks"]) == 4
    rows = read_parquet_dir(tmp_path / executor)
    reference = NeutrinoFeatureProcessor().columns(_events(nano_v12)).columns
    order = np.argsort(ak.to_numpy(rows.event))
    ref_order = np.argsort(ak.to_numpy(reference.event))
    assert rows[order].to_list() == reference[ref_order].to_list()


def test_skip_bad_files_lists_them(nano_v12, tmp_path):
    bad = tmp_path / "truncated.root"
    bad.write_bytes(nano_v12.read_bytes()[:300_000])
    cfg = RunConfig(progress=False, skip_bad_files=True)
    with pytest.warns(UserWarning, match="attempt|truncated") as record:  # coffea retries, then skips
        result = run_processor(
            NeutrinoFeatureProcessor(), build_fileset([nano_v12, bad]), tmp_path / "out", cfg
        )
    assert any("truncated.root" in str(w.message) for w in record)
    assert result["skipped_files"] == [str(bad)]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["skipped_files"] == [str(bad)]
    assert len(read_parquet_dir(tmp_path / "out")) == cutflow_to_dict(result["cutflow"])["b jets"] > 0
