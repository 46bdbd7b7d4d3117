"""NaN and infinite inputs are counted and excluded; nothing non-finite reaches a flow or an output.

Inputs are the real CMS v12 sample with single values replaced (MET, jet and lepton kinematics,
b-tag score, the truth neutrino) and small cosmic pseudo-experiment ntuples with NaN, infinite or
negative counts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

import hepflow
from hepflow.cosmic import PARAMETER_NAMES, Binning
from hepflow.errors import InputError
from hepflow.neutrino.data import load_training_data
from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor
from hepflow.neutrino.processor import NeutrinoFeatureProcessor, NeutrinoSelection
from hepflow.outputs import read_parquet_dir, write_parquet
from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, run_processor
from tests.conftest import write_nanoaod

from .conftest import set_field, set_value

BTAG_WP = NeutrinoSelection().btag_wp


def _float_columns(cols: ak.Array) -> list[str]:
    return [f for f in cols.fields if ak.flatten(cols[f], axis=None).to_numpy().dtype.kind == "f"]


def _all_finite(cols: ak.Array) -> bool:
    return all(np.isfinite(ak.flatten(cols[f], axis=None).to_numpy()).all() for f in _float_columns(cols))


@pytest.fixture(scope="module")
def clean(nano_v12: Path) -> ak.Array:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    events = NanoEventsFactory.from_root(
        {str(nano_v12): "Events"}, schemaclass=NanoAODSchema, mode="eager"
    ).events()
    return NeutrinoFeatureProcessor().columns(events).columns


@pytest.fixture(scope="module")
def patched(tmp_path_factory, v12_branches, clean) -> tuple[Path, set[int]]:
    """The v12 sample with one NaN or inf in each of seven selected events; their event numbers."""
    b = dict(v12_branches)
    row = {int(e): i for i, e in enumerate(ak.to_numpy(b["event"]))}
    selected = [int(e) for e in ak.to_numpy(clean.event)]
    rows = [row[e] for e in selected]
    jets, gen = b["Jet"], b["GenPart"]
    b["MET_pt"] = set_value(b["MET_pt"], rows[0], np.nan)
    b["MET_phi"] = set_value(b["MET_phi"], rows[1], np.inf)
    jets = set_field(jets, "mass", set_value(jets.mass, rows[2], np.nan, index=0))
    jets = set_field(jets, "pt", set_value(jets.pt, rows[3], np.inf, index=0))
    # an untagged jet: NaN compares False, so it stays untagged and the selection is unchanged
    e, j = next((r, j) for r in rows[4:] for j, s in enumerate(jets.btagDeepFlavB[r]) if s < BTAG_WP)
    jets = set_field(jets, "btagDeepFlavB", set_value(jets.btagDeepFlavB, e, np.nan, index=j))
    b["Jet"] = jets
    # the selected lepton's mass (does not enter the selection); 13 = muon
    r = next(r for r, s in zip(rows, selected, strict=True) if r not in (*rows[:4], e) and _is_muon(clean, s))
    muons = b["Muon"]
    for k in range(len(muons.mass[r])):
        muons = set_field(muons, "mass", set_value(muons.mass, r, np.inf, index=k))
    b["Muon"] = muons
    # the truth: every neutrino of one event that has a truth neutrino (not W -> tau nu)
    with_truth = {row[int(ev)] for ev in ak.to_numpy(clean.event[~ak.is_none(clean.nu_px_true)])}
    t = next(x for x in rows[4:] if x not in (e, r) and x in with_truth)
    pdg = ak.to_numpy(np.abs(gen.pdgId[t]))
    for k in np.flatnonzero(np.isin(pdg, (12, 14, 16))):
        gen = set_field(gen, "pt", set_value(gen.pt, t, np.nan, index=int(k)))
    b["GenPart"] = gen
    bad_rows = {rows[0], rows[1], rows[2], rows[3], e, r, t}
    assert len(bad_rows) == 7
    inverse = {i: ev for ev, i in row.items()}
    path = write_nanoaod(tmp_path_factory.mktemp("nan") / "nan.root", b)
    return path, {inverse[i] for i in bad_rows}


def _is_muon(clean: ak.Array, event: int) -> bool:
    return int(clean.lep_flavor[ak.to_numpy(clean.event) == event][0]) == 13


def test_feature_processor_counts_and_excludes_non_finite_events(patched, clean, tmp_path):
    path, bad = patched
    out = tmp_path / "features"
    result = run_processor(NeutrinoFeatureProcessor(), build_fileset([path]), out, RunConfig(progress=False))
    flow = cutflow_to_dict(result["cutflow"])
    assert flow["b jets"] == len(clean)  # the selection is unchanged by the patched values
    assert flow["finite inputs"] == len(clean) - len(bad)
    assert json.loads((out / "cutflow.json").read_text())["total"]["finite inputs"] == len(clean) - len(bad)
    rows = read_parquet_dir(out)
    assert len(rows) == len(clean) - len(bad)
    assert set(ak.to_numpy(rows.event).tolist()) == set(ak.to_numpy(clean.event).tolist()) - bad
    assert _all_finite(rows)
    # every other event is exactly as in the clean file
    keep = ~np.isin(ak.to_numpy(clean.event), list(bad))
    assert rows.to_list() == ak.to_packed(clean[keep]).to_list()


def test_inference_never_feeds_nan_to_the_flow(patched, tiny_models, tmp_path):
    path, bad = patched
    proc = NeutrinoInferenceProcessor(tiny_models, samples=8)
    result = run_processor(proc, build_fileset([path]), tmp_path / "infer", RunConfig(progress=False))
    flow = cutflow_to_dict(result["cutflow"])
    rows = read_parquet_dir(tmp_path / "infer")
    assert len(rows) == flow["finite inputs"] == flow["b jets"] - len(bad)
    assert not set(ak.to_numpy(rows.event).tolist()) & bad
    assert {"flow_px", "flow_pz_mode", "flow_pz_std", "ff_pz", "quad_pz", "mw_flow"} <= set(rows.fields)
    assert _all_finite(rows)


def test_cli_prints_the_finite_inputs_step(patched, tmp_path, capsys):
    from hepflow.cli import main

    path, bad = patched
    assert (
        main(["process", "neutrino", "--input", str(path), "--output", str(tmp_path / "o"), "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    b_jets = int(next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("b jets")))
    finite = int(next(line.split()[-1] for line in out.splitlines() if "finite inputs" in line))
    assert b_jets - finite == len(bad)


def test_training_data_drops_non_finite_rows(clean, tmp_path, caplog):
    cols = clean[~ak.is_none(clean.nu_px_true)]  # the 49 of 52 events with a truth neutrino
    cols = ak.with_field(cols, set_value(cols.met_px, 0, np.nan), "met_px")
    cols = ak.with_field(cols, set_value(cols.jet_px, 1, np.inf, index=0), "jet_px")
    cols = ak.with_field(cols, set_value(cols.nu_eta_true, 2, -np.inf), "nu_eta_true")
    cols = ak.with_field(cols, set_value(cols.lep_loge, 3, np.nan), "lep_loge")
    write_parquet(cols, tmp_path / "features" / "a.parquet")
    with caplog.at_level(logging.WARNING, logger="hepflow.neutrino.data"):
        data = load_training_data(tmp_path / "features")
    assert data.n_read == len(cols) == 49
    assert data.n_non_finite == 4
    assert data.n_missing_truth == 0
    assert len(data.theta) == len(cols) - 4
    assert np.isfinite(data.theta).all()
    assert all(np.isfinite(v).all() for v in data.context.values() if v.dtype.kind == "f")
    assert "dropped 4 of 49 events with NaN or inf" in caplog.text


def test_fit_refuses_non_finite_theta_and_context():
    theta, ctx = torch.randn(64, 2), torch.randn(64, 2)
    theta[[3, 9], 0] = torch.inf
    model = hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0)
    with pytest.raises(InputError, match=r"theta has NaN or inf in 2 event\(s\), e\.g\. row 3"):
        hepflow.fit(model, theta, ctx, epochs=1, progress=False)
    theta[[3, 9], 0] = 0.0
    jets = {"a": ctx, "b": torch.randn(64, 3)}
    jets["b"][5:8, 1] = torch.nan
    from hepflow.flows import Combined, IdentitySummary

    model = hepflow.ConditionalINN(2, summary=Combined(a=IdentitySummary(2), b=IdentitySummary(3)), depth=1)
    with pytest.raises(InputError, match=r"context\['b'\] has NaN or inf in 3 event\(s\), e\.g\. row 5"):
        hepflow.fit(model, theta, jets, epochs=1, progress=False)


# ----------------------------------------------------------------------------------- cosmic
N_PE = 60
BAD_PE = {3: ("spectrum", np.nan), 7: ("xmax", np.inf), 11: ("spectrum", -1.0), 20: ("lg_rcut", np.nan)}


@pytest.fixture(scope="module")
def bad_pe_file(tmp_path_factory) -> Path:
    """A PseudoExperiments ntuple (float counts) with one invalid value in four entries."""
    from hepflow.cosmic.generate import PSEUDO_EXPERIMENT_TREE

    n_e, n_m, n_x = Binning.auger().shape
    rng = np.random.default_rng(1)
    data = {"index": np.arange(N_PE, dtype=np.int64)}
    data.update({name: rng.uniform(0.1, 0.3, N_PE) for name in PARAMETER_NAMES})
    data["gamma"], data["lg_rcut"] = rng.uniform(-1, 2, N_PE), rng.uniform(18, 19, N_PE)
    data["spectrum"] = rng.poisson(30.0, (N_PE, n_e)).astype(float)
    data["xmax"] = rng.poisson(0.5, (N_PE, n_m, n_x)).astype(float)
    for entry, (name, value) in BAD_PE.items():
        if data[name].ndim == 1:
            data[name][entry] = value
        else:
            data[name][entry].flat[5] = value
    path = tmp_path_factory.mktemp("cosmic") / "bad_pe.root"
    with uproot.recreate(path) as f:
        f.mktree(PSEUDO_EXPERIMENT_TREE, {k: np.dtype((v.dtype, v.shape[1:])) for k, v in data.items()})
        f[PSEUDO_EXPERIMENT_TREE].extend(data)
    return path


def test_cosmic_processor_counts_invalid_pseudo_experiments(bad_pe_file, tmp_path):
    from hepflow.cosmic.features import feature_matrix
    from hepflow.cosmic.processor import process_cosmic

    result = process_cosmic(
        [bad_pe_file], tmp_path / "features", run_config=RunConfig(progress=False, chunksize=25)
    )
    run = json.loads((tmp_path / "features" / "run.json").read_text())
    assert run["cutflow"]["total"] == {"all": N_PE, "valid inputs": N_PE - len(BAD_PE)}
    assert result.entries == N_PE - len(BAD_PE)
    table = read_parquet_dir(tmp_path / "features")
    assert sorted(ak.to_numpy(table["index"]).tolist()) == sorted(set(range(N_PE)) - set(BAD_PE))
    assert np.isfinite(feature_matrix(table)).all()
    assert np.isfinite(np.stack([ak.to_numpy(table[p]) for p in PARAMETER_NAMES])).all()


def test_cosmic_training_data_drops_invalid_rows(bad_pe_file, tmp_path, caplog):
    from hepflow.cosmic.data import load_training_data as load_cosmic
    from hepflow.cosmic.features import feature_columns, observation_features

    binning = Binning.auger()
    with caplog.at_level(logging.WARNING, logger="hepflow.cosmic.data"):
        theta, feats = load_cosmic(bad_pe_file, binning=binning)
    assert theta.shape == (N_PE - len(BAD_PE), 7)
    assert feats.shape[0] == theta.shape[0]
    assert np.isfinite(theta).all()
    assert np.isfinite(feats).all()
    assert f"dropped {len(BAD_PE)} of {N_PE} pseudo-experiments" in caplog.text
    # a feature directory written by other means, with a NaN feature and an infinite parameter
    good = observation_features(np.full((5, 15), 10.0), np.ones((5, 9, 100)), binning=binning)
    good[1, 4] = np.nan
    truth = np.full((5, 7), 0.2)
    truth[3, 0] = np.inf
    write_parquet(feature_columns(good, truth=truth, binning=binning), tmp_path / "dir" / "a.parquet")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hepflow.cosmic.data"):
        theta, feats = load_cosmic(tmp_path / "dir", binning=binning)
    assert len(theta) == len(feats) == 3
    assert "dropped 2 of 5 pseudo-experiments" in caplog.text


def test_non_finite_showers_are_counted_and_excluded(tmp_path):
    """A shower list with NaN/inf energies or infinite Xmax: those showers are excluded and
    counted; the histogram equals the one of the clean showers (NaN Xmax stays: no Xmax)."""
    from hepflow.cosmic.processor import process_cosmic

    rng = np.random.default_rng(5)
    lg_e = rng.uniform(18.8, 19.8, 400)
    xmax = rng.normal(760.0, 40.0, 400)
    xmax[::7] = np.nan  # showers without an Xmax measurement: kept
    bad_e, bad_x = np.array([3, 50, 51]), np.array([10, 11])
    dirty_e, dirty_x = lg_e.copy(), xmax.copy()
    dirty_e[bad_e] = [np.nan, np.inf, -np.inf]
    dirty_x[bad_x] = [np.inf, -np.inf]
    keep = np.ones(400, bool)
    keep[np.concatenate([bad_e, bad_x])] = False
    for name, (e, x) in {"dirty": (dirty_e, dirty_x), "clean": (lg_e[keep], xmax[keep])}.items():
        with uproot.recreate(tmp_path / f"{name}.root") as f:
            f.mktree("Showers", {"lg_e": np.float64, "xmax": np.float64})
            f["Showers"].extend({"lg_e": e, "xmax": x})
    cfg = RunConfig(progress=False)
    dirty = process_cosmic([tmp_path / "dirty.root"], tmp_path / "out_dirty", run_config=cfg)
    clean = process_cosmic([tmp_path / "clean.root"], tmp_path / "out_clean", run_config=cfg)
    assert dirty.entries == clean.entries == int(keep.sum())
    info = json.loads((tmp_path / "out_dirty" / "observation.json").read_text())
    assert list(info["excluded_showers"].values()) == [5]
    a, b = (
        json.loads((tmp_path / d / "observation.json").read_text())["datasets"]
        for d in ("out_dirty", "out_clean")
    )
    assert a == b
