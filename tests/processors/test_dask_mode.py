"""coffea's dask mode: the processors build lazy task graphs (apply_to_fileset) whose computed
result equals the eager processor.Runner output, and whose columns go to parquet with
dask_awkward.to_parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.processing import ColumnProcessor, cutflow_to_dict, weighted_cutflow_to_dict
from hepflow.unfolding.processor import UnfoldingProcessor

dak = pytest.importorskip(
    "dask_awkward", reason="coffea's dask mode needs dask-awkward (the [distributed] extra)"
)
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:coffea.*",
    "ignore:.*plain dict fileset.*",
    "ignore:Passing a dict to preprocess:DeprecationWarning",
)


def _lazy(proc: ColumnProcessor, path: Path, step_size: int = 50) -> dict[str, Any]:
    """The processor's dask-mode output for one dataset, partitioned by ``step_size`` events."""
    from coffea.dataset_tools import apply_to_fileset, preprocess

    fileset = {"tt": {"files": {str(path): "Events"}}}
    with dask.config.set(scheduler="sync"):
        available, _ = preprocess(fileset, step_size=step_size, align_clusters=False)
    out = apply_to_fileset(proc, available)
    return out["tt"]["tt"]


def _eager(proc: ColumnProcessor, path: Path) -> dict[str, Any]:
    run = processor.Runner(processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=50)
    return run({"tt": {"files": {str(path): "Events"}}}, proc, treename="Events")["tt"]


@pytest.mark.parametrize(
    "make", [NeutrinoFeatureProcessor, UnfoldingProcessor], ids=["neutrino", "unfolding"]
)
def test_dask_mode_gives_the_rows_of_the_runner(make, nano_v12: Path):
    proc = make()
    lazy = _lazy(proc, nano_v12)
    assert lazy["columns"].npartitions == 4  # 200 events in steps of 50
    with dask.config.set(scheduler="sync"):
        (computed,) = dask.compute(lazy)
    got = proc.postprocess({"tt": computed})["tt"]
    ref = _eager(proc, nano_v12)
    assert got["columns"].type == ref["columns"].type
    assert ak.to_list(got["columns"]) == ak.to_list(ref["columns"])
    assert len(got["columns"]) == (52 if make is NeutrinoFeatureProcessor else 200)
    assert cutflow_to_dict(got["cutflow"]) == cutflow_to_dict(ref["cutflow"])
    for step, sums in weighted_cutflow_to_dict(ref["cutflow_weighted"]).items():
        assert weighted_cutflow_to_dict(got["cutflow_weighted"])[step] == pytest.approx(sums, rel=1e-9)
    assert got["sumw"] == pytest.approx(ref["sumw"], rel=1e-9)


def test_dask_mode_reads_only_the_branches_it_uses(nano_v12: Path):
    lazy = _lazy(NeutrinoFeatureProcessor(), nano_v12)
    (branches,) = dak.necessary_columns(lazy["columns"]).values()
    assert {"Jet_pt", "Muon_tightId", "MET_pt", "genWeight", "GenPart_pdgId"} <= set(branches)
    assert not {"Photon_pt", "Tau_pt", "FatJet_pt"} & set(branches)


def test_dask_columns_round_trip_through_parquet(nano_v12: Path, tmp_path: Path):
    proc = NeutrinoFeatureProcessor()
    lazy = _lazy(proc, nano_v12)
    with dask.config.set(scheduler="sync"):
        dak.to_parquet(lazy["columns"], str(tmp_path / "features"))
    back = ak.from_parquet(sorted((tmp_path / "features").glob("*.parquet")))
    ref = _eager(proc, nano_v12)["columns"]
    assert len(back) == 52
    assert ak.to_list(back) == ak.to_list(ref)
    np.testing.assert_array_equal(ak.to_numpy(back.event), ak.to_numpy(ref.event))


def test_posterior_sampler_draws_per_partition(tmp_path: Path):
    import hepflow
    from hepflow.flows.summary import Combined, MLPSummary, SetSummary
    from hepflow.inference.coffea import PosteriorSampler, content_key
    from hepflow.inference.export import export_torchscript

    summary = Combined(flat=MLPSummary(9, 8, width=16), jets=SetSummary(5, 8, width=16, heads=2))
    model = hepflow.ConditionalINN(theta_dim=3, summary=summary, depth=2, width=16, seed=0).eval()
    path = export_torchscript(model, tmp_path / "sampler.pt")
    rng = np.random.default_rng(0)
    n, parts = 40, 4
    ctx = [
        rng.normal(size=(n, 9)).astype(np.float32),
        rng.normal(size=(n, 10, 5)).astype(np.float32),
        np.arange(10)[None] < rng.integers(0, 11, n)[:, None],
    ]
    sampler = PosteriorSampler(str(path), samples=200, latent_dim=3, theta_dim=3, seed=1)
    lazy = [dak.from_awkward(ak.Array(c), npartitions=parts) for c in ctx]
    with dask.config.set(scheduler="sync"):
        drawn = ak.to_numpy(sampler(*lazy).compute())
        again = ak.to_numpy(sampler(*lazy).compute())
    assert drawn.shape == (n, 200, 3)
    np.testing.assert_array_equal(drawn, again)  # reproducible on rerun
    # each partition is seeded by its own content: distinct keys, and exactly that partition's draw
    size = n // parts
    pieces = [[c[i * size : (i + 1) * size] for c in ctx] for i in range(parts)]
    assert len({tuple(content_key([p[0], p[1].astype(np.float32), p[2]])) for p in pieces}) == parts
    for i, piece in enumerate(pieces):
        expected = sampler.numpy_call(*piece, noise_seed=1, by_content=True)
        np.testing.assert_array_equal(drawn[i * size : (i + 1) * size], expected)
    # statistically the same posterior as the eager call on the same events
    eager = sampler(*ctx, chunk={"filename": "a.root", "entrystart": 0, "entrystop": n})
    assert eager.shape == drawn.shape
    np.testing.assert_allclose(drawn.mean(axis=1), eager.mean(axis=1), atol=0.35)
    np.testing.assert_allclose(drawn.std(axis=1), eager.std(axis=1), rtol=0.3)
    assert not np.array_equal(drawn, eager)


def test_inference_processor_in_dask_mode(tiny_models: Path, nano_v12: Path):
    from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor

    proc = NeutrinoInferenceProcessor(tiny_models, samples=8)
    lazy = _lazy(proc, nano_v12)
    with dask.config.set(scheduler="sync"):
        (first,) = dask.compute(lazy)
        (again,) = dask.compute(lazy)
        (features,) = dask.compute(_lazy(NeutrinoFeatureProcessor(), nano_v12))
    got = proc.postprocess({"tt": first})["tt"]["columns"]
    ref = _eager(proc, nano_v12)["columns"]
    assert got.fields == ref.fields
    assert len(got) == len(ref) == 52
    for name in features["columns"].fields:  # the same events and features
        assert ak.to_list(got[name]) == ak.to_list(ref[name])
    assert ak.to_list(first["columns"]) == ak.to_list(again["columns"])  # reproducible per partition
