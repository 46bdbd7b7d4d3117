"""hepflow's processors in the user's own coffea ``processor.Runner``: every executor, several
files and datasets, many small chunks; outputs that merge, pickle, and carry event weights."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.processing import (
    RunConfig,
    build_fileset,
    cutflow_to_dict,
    run_processor,
    weighted_cutflow_to_dict,
)
from hepflow.unfolding.processor import UnfoldingProcessor
from tests.conftest import read_nanoaod, write_nanoaod

EXECUTORS = ["iterative", "futures", "dask"]
#: small chunks that split every file unevenly (each chunk reopens the real NanoAOD file: ~0.3 s)
CHUNK = 47


@pytest.fixture(scope="module")
def weighted_files(tmp_path_factory: pytest.TempPathFactory, nano_v12: Path) -> list[Path]:
    """The real v12 events in two files, with unequal generator weights, some negative (NLO)."""
    d = tmp_path_factory.mktemp("weighted")
    branches = read_nanoaod(nano_v12)
    n = len(branches["event"])
    rng = np.random.default_rng(5)
    weight = rng.uniform(0.5, 2.0, n) * np.where(rng.random(n) < 0.2, -1.0, 1.0)
    branches["genWeight"] = ak.Array(weight.astype(np.float32))
    first = {k: v[:120] for k, v in branches.items()}
    second = {k: v[120:] for k, v in branches.items()}
    return [write_nanoaod(d / "a.root", first), write_nanoaod(d / "b.root", second)]


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def one_chunk(weighted_files: list[Path]) -> Any:
    """``get(processor class)``: its output on the weighted files in one chunk per file (the
    iterative executor), computed once per processor for every executor's comparison."""
    made: dict[type, dict[str, Any]] = {}

    def get(make: type) -> dict[str, Any]:
        if make not in made:
            fileset = _fileset(weighted_files)
            made[make] = _run(make(), fileset, processor.IterativeExecutor(), chunksize=1_000)
        return made[make]

    return get


def _executor(name: str, request: pytest.FixtureRequest) -> Any:
    if name == "iterative":
        return processor.IterativeExecutor()
    if name == "futures":
        return processor.FuturesExecutor(workers=2)
    return processor.DaskExecutor(client=request.getfixturevalue("dask_client"))


def _run(proc: Any, fileset: dict[str, Any], executor: Any, chunksize: int) -> dict[str, Any]:
    runner = processor.Runner(executor, schema=NanoAODSchema, chunksize=chunksize)
    return runner(fileset, proc, treename="Events")


def _fileset(files: list[Path]) -> dict[str, Any]:
    return {"tt": {"files": {str(f): "Events" for f in files}}, "tt_copy": [str(files[1])]}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize(
    "make", [NeutrinoFeatureProcessor, UnfoldingProcessor], ids=["features", "unfolding"]
)
def test_many_small_chunks_give_the_rows_of_one_chunk(
    weighted_files, one_chunk, executor, make, request
) -> None:
    fileset = _fileset(weighted_files)
    reference = one_chunk(make)
    out = _run(make(), fileset, _executor(executor, request), chunksize=CHUNK)
    assert set(out) == {"tt", "tt_copy"}
    for dataset, ref in reference.items():
        assert ak.array_equal(out[dataset]["columns"], ref["columns"])
        assert cutflow_to_dict(out[dataset]["cutflow"]) == cutflow_to_dict(ref["cutflow"])
        got = weighted_cutflow_to_dict(out[dataset]["cutflow_weighted"])
        for step, sums in weighted_cutflow_to_dict(ref["cutflow_weighted"]).items():
            assert got[step] == pytest.approx(sums, rel=1e-9)
    assert len(out["tt_copy"]["columns"]) < len(out["tt"]["columns"])
    pickle.loads(pickle.dumps(out))  # the merged output pickles (no NanoEvents behaviours)


def test_weighted_cutflow_sums_the_generator_weights(weighted_files) -> None:
    out = _run(NeutrinoFeatureProcessor(), _fileset(weighted_files), processor.IterativeExecutor(), 50)
    tt = out["tt"]
    weights = np.concatenate([np.asarray(read_nanoaod_weights(f), dtype=np.float64) for f in weighted_files])
    assert (weights < 0).any()
    assert len(np.unique(np.abs(weights))) > 10
    sums = weighted_cutflow_to_dict(tt["cutflow_weighted"])
    assert sums["all"]["sumw"] == pytest.approx(weights.sum(), rel=1e-6)
    assert sums["all"]["sumw2"] == pytest.approx((weights**2).sum(), rel=1e-6)
    assert tt["sumw"] == pytest.approx(weights.sum(), rel=1e-6)
    assert tt["sumw2"] == pytest.approx((weights**2).sum(), rel=1e-6)
    # the last step sums exactly the weight column of the selected events
    selected = ak.to_numpy(tt["columns"].weight).astype(np.float64)
    assert sums["finite inputs"]["sumw"] == pytest.approx(selected.sum(), rel=1e-6)
    assert sums["finite inputs"]["sumw2"] == pytest.approx((selected**2).sum(), rel=1e-6)
    assert (selected < 0).any()
    assert cutflow_to_dict(tt["cutflow"])["finite inputs"] == len(selected)


def read_nanoaod_weights(path: Path) -> np.ndarray:
    import uproot

    return uproot.open(path)["Events"]["genWeight"].array(library="np")


def test_events_without_generator_weights_weigh_one(nano_v12, tmp_path) -> None:
    data = write_nanoaod(tmp_path / "data.root", read_nanoaod(nano_v12, drop=["genWeight"]))
    out = _run(NeutrinoFeatureProcessor(), {"data": [str(data)]}, processor.IterativeExecutor(), 70)["data"]
    assert out["sumw"] == out["sumw2"] == 200
    assert ak.all(out["columns"].weight == 1)
    sums = weighted_cutflow_to_dict(out["cutflow_weighted"])
    assert {s: v["sumw"] for s, v in sums.items()} == cutflow_to_dict(out["cutflow"])


def test_written_chunks_record_the_weighted_cutflow_and_resume_it(weighted_files, tmp_path) -> None:
    cfg = RunConfig(chunksize=60, progress=False)
    out = tmp_path / "features"
    first = run_processor(NeutrinoFeatureProcessor(), build_fileset(weighted_files, dataset="tt"), out, cfg)
    cutflows = json.loads((out / "cutflow.json").read_text())
    weighted = cutflows["weighted"]["by_dataset"]["tt"]
    assert weighted == weighted_cutflow_to_dict(first["cutflow_weighted"])
    markers = [json.loads(p.read_text()) for p in sorted(out.glob("tt__*.json"))]
    assert sum(m["cutflow_weighted"]["all"]["sumw"] for m in markers) == pytest.approx(
        weighted["all"]["sumw"]
    )
    again = run_processor(NeutrinoFeatureProcessor(), build_fileset(weighted_files, dataset="tt"), out, cfg)
    for step, sums in weighted_cutflow_to_dict(again["cutflow_weighted"]).items():
        assert sums == pytest.approx(weighted[step], rel=1e-9)  # restored from the chunk markers


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_inference_processor_in_a_users_runner(tiny_models, weighted_files, executor, request) -> None:
    fileset = {"tt": [str(f) for f in weighted_files]}
    proc = NeutrinoInferenceProcessor(tiny_models, samples=4)
    one = _run(proc, fileset, processor.IterativeExecutor(), chunksize=CHUNK)["tt"]["columns"]
    out = _run(proc, fileset, _executor(executor, request), chunksize=CHUNK)["tt"]["columns"]
    # the same chunks give the same samples whatever the executor (up to the float32 rounding of
    # another number of torch threads in the worker processes)
    for name in one.fields:
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(out[name], axis=None)).astype(float),
            ak.to_numpy(ak.flatten(one[name], axis=None)).astype(float),
            rtol=1e-4,
            atol=1e-3,
            err_msg=name,
        )
    features = _run(NeutrinoFeatureProcessor(), fileset, processor.IterativeExecutor(), 1_000)["tt"][
        "columns"
    ]
    for name in features.fields:
        assert ak.array_equal(out[name], features[name])
    assert ak.num(out.flow_pz, axis=1).tolist() == [4] * len(out)
    assert np.isfinite(ak.to_numpy(out.flow_pz_median)).all()


def test_fileset_tree_names_are_honoured(nano_v12, tmp_path) -> None:
    """A fileset's tree name is read, never silently replaced by ``Events``."""
    import uproot

    from hepflow.errors import InputError

    branches = read_nanoaod(nano_v12)
    other = tmp_path / "other.root"
    with uproot.recreate(other) as f:
        f.mktree("MyEvents", {k: v.type for k, v in branches.items()})
        f["MyEvents"].extend(branches)
    cfg = RunConfig(progress=False)

    def fileset(path: Path, tree: str) -> dict[str, Any]:
        spec = tmp_path / f"{tree}.json"
        spec.write_text(json.dumps({"tt": {"files": {str(path): tree}}}))
        return build_fileset([spec])

    renamed = run_processor(NeutrinoFeatureProcessor(), fileset(other, "MyEvents"), tmp_path / "a", cfg)
    assert sum(c["rows"] for c in renamed["chunks"].values()) == 52
    for path, tree in ((nano_v12, "Runs"), (other, "Events")):
        with pytest.raises(InputError, match=rf"{path.name}: KeyInFileError: not found: '{tree}'"):
            run_processor(NeutrinoFeatureProcessor(), fileset(path, tree), tmp_path / tree, cfg)
