"""The unfolding processor: one row per event with both levels, on generated and real NanoAOD."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest

from hepflow.errors import InputError
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, run_processor
from hepflow.unfolding.processor import ParticleSelection, UnfoldingProcessor, match_rows
from tests.conftest import write_nanoaod_subset
from tests.unfolding.conftest import SAMPLE_EVENTS


def _np(column):
    return np.asarray(ak.to_numpy(ak.fill_none(column, np.nan)), dtype=float)


@pytest.mark.generation
def test_generated_sample_has_both_levels(unfolding_sample, tmp_path):
    cols = read_parquet_dir(unfolding_sample / "columns")
    assert len(cols) == SAMPLE_EVENTS
    fid, sel = ak.to_numpy(cols.gen_fiducial), ak.to_numpy(cols.reco_selected)
    assert ak.all(cols.gen_valid)  # the generator makes semileptonic ttbar only
    # the detector level is exactly the neutrino analysis's selection
    run_processor(
        NeutrinoFeatureProcessor(),
        build_fileset([unfolding_sample / "tt.root"]),
        tmp_path,
        RunConfig(progress=False),
    )
    nu = read_parquet_dir(tmp_path)
    assert sel.sum() == len(nu)
    np.testing.assert_array_equal(ak.to_numpy(cols.event[sel]), ak.to_numpy(nu.event))
    np.testing.assert_allclose(_np(cols.met_px[sel]), ak.to_numpy(nu.met_px))
    assert ak.all(ak.num(cols.jet_px[~sel]) == 0)
    assert ak.all(ak.num(cols.jet_px[sel]) >= 4)
    # missing values exactly where a level fails
    assert not np.isnan(_np(cols.reco_top_pt)[sel]).any()
    assert np.isnan(_np(cols.reco_mtt)[~sel]).all()
    lep_pt, lep_eta = _np(cols.gen_lep_pt), _np(cols.gen_lep_eta)
    np.testing.assert_array_equal(fid, (lep_pt > 30) & (np.abs(lep_eta) < 2.4))
    # efficiency below one; the observables agree between levels where both exist
    both = fid & sel
    assert 0.2 < both.sum() / fid.sum() < 0.7
    gen_pt, reco_pt = _np(cols.gen_top_pt)[both], _np(cols.reco_top_pt)[both]
    assert np.corrcoef(gen_pt, reco_pt)[0, 1] > 0.5
    assert np.median(_np(cols.gen_mtt)[fid]) > 340
    assert np.all(_np(cols.gen_mtt)[fid] > 2 * 150)
    cutflow = json.loads((unfolding_sample / "columns" / "cutflow.json").read_text())["total"]
    assert cutflow["particle fiducial"] == fid.sum()
    assert cutflow["both levels"] == both.sum()


@pytest.mark.generation
def test_tighter_fiducial_cut_makes_fakes(unfolding_sample, tmp_path):
    tight = ParticleSelection(lepton_pt_min=45.0)
    run_processor(
        UnfoldingProcessor(particle=tight),
        build_fileset([unfolding_sample / "tt.root"]),
        tmp_path,
        RunConfig(progress=False),
    )
    cols = read_parquet_dir(tmp_path)
    fakes = ak.to_numpy(cols.reco_selected & ~cols.gen_fiducial)
    assert fakes.sum() > 0
    passes_tight = (_np(cols.gen_lep_pt) > 45.0) & (np.abs(_np(cols.gen_lep_eta)) < 2.4)
    assert not passes_tight[fakes].any()
    np.testing.assert_array_equal(ak.to_numpy(cols.gen_fiducial), passes_tight)


def test_real_cms_nanoaod(nano_v12, tmp_path):
    run_processor(UnfoldingProcessor(), build_fileset([nano_v12]), tmp_path, RunConfig(progress=False))
    cols = read_parquet_dir(tmp_path)
    assert len(cols) == 200
    valid = ak.to_numpy(cols.gen_valid)
    assert 0.3 < valid.mean() < 1.0  # tau decays and hadronic events have no e/mu from a W
    assert np.isnan(_np(cols.gen_top_pt)[~valid]).all()
    assert (_np(cols.gen_top_pt)[valid] > 0).all()
    assert ak.sum(cols.reco_selected & cols.gen_fiducial) > 10


def test_refuses_files_without_generator_truth(nano_v12, tmp_path):
    src = write_nanoaod_subset(
        nano_v12,
        tmp_path / "nogen.root",
        drop=[
            f"GenPart_{b}"
            for b in ("pt", "eta", "phi", "mass", "pdgId", "status", "statusFlags", "genPartIdxMother")
        ]
        + ["nGenPart"],
    )
    with pytest.raises(InputError, match="GenPart"):
        run_processor(UnfoldingProcessor(), build_fileset([src]), tmp_path / "out", RunConfig(progress=False))


def test_match_rows():
    ids = {"run": np.array([1, 1, 2]), "luminosityBlock": np.array([1, 1, 1]), "event": np.array([5, 3, 5])}
    sub = {k: v[[2, 1]] for k, v in ids.items()}
    np.testing.assert_array_equal(match_rows(ids, sub, where="x"), [2, 1])
    with pytest.raises(InputError, match="not found"):
        match_rows(
            ids, {"run": np.array([9]), "luminosityBlock": np.array([1]), "event": np.array([5])}, where="x"
        )
    dup = {k: np.r_[v, v[:1]] for k, v in ids.items()}
    with pytest.raises(InputError, match="duplicate"):
        match_rows(dup, sub, where="x")
