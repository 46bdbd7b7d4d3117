"""The cosmic processors in coffea's dask mode: lazy task graphs (no compute inside ``process``)
whose computed outputs equal the eager ``processor.Runner`` path on the same files, several files
and partitions; the feature columns go to parquet with ``dask_awkward.to_parquet``; wrong trees
and branches are refused with one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.nanoevents import BaseSchema

from hepflow.cosmic import PARAMETER_NAMES
from hepflow.cosmic.generate import generate_cosmic, generate_showers
from hepflow.cosmic.processor import (
    PseudoExperimentFeatureProcessor,
    ShowerHistogramProcessor,
    cosmic_dask,
)
from hepflow.errors import ConfigError, InputError
from hepflow.processing import cutflow_to_dict

dak = pytest.importorskip(
    "dask_awkward", reason="coffea's dask mode needs dask-awkward (the [distributed] extra)"
)
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:coffea.*",
    "ignore:.*plain dict fileset.*",
    "ignore:Passing a dict to preprocess:DeprecationWarning",
)

COMBINED_FIT = [0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0]
INTERIOR = [1.2, 18.75, 0.15, 0.35, 0.3, 0.15, 0.05]


def _needs_dask_histogram() -> None:
    pytest.importorskip("dask_histogram", reason="hist.dask needs dask-histogram (the [distributed] extra)")


def _write_tree(path: Path, tree: str, branches: dict[str, np.ndarray]) -> Path:
    with uproot.recreate(path) as f:
        f.mktree(tree, {k: np.dtype((v.dtype, v.shape[1:])) for k, v in branches.items()})
        f[tree].extend(branches)
    return path


@pytest.fixture(scope="module")
def pe_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two PseudoExperiments files (150 pseudo-experiments of the default config, split 90/60);
    the first has a NaN parameter and a negative count: 148 valid rows."""
    tmp = tmp_path_factory.mktemp("pe")
    generate_cosmic(tmp / "all.root", n=150, seed=3, batch_size=150, progress=False)
    with uproot.open(tmp / "all.root") as f:
        arrays = f["PseudoExperiments"].arrays(library="np")
    arrays["gamma"][4] = np.nan
    arrays["spectrum"][7, 2] = -1
    return [
        _write_tree(tmp / f"pe_{i}.root", "PseudoExperiments", {k: v[sl] for k, v in arrays.items()})
        for i, sl in enumerate((slice(0, 90), slice(90, None)))
    ]


@pytest.fixture(scope="module")
def shower_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two generated Showers files (~2000 showers each) and one with showers to exclude."""
    tmp = tmp_path_factory.mktemp("showers")
    files = [
        generate_showers(tmp / f"showers_{i}.root", theta=np.array(theta), seed=4 + i, n_spectrum=2000)
        for i, theta in enumerate((COMBINED_FIT, INTERIOR))
    ]
    rng = np.random.default_rng(5)
    lg_e = rng.uniform(18.7, 20.0, 500)
    xmax = np.where(rng.random(500) < 0.5, rng.normal(750.0, 60.0, 500), np.nan)
    lg_e[[3, 40]] = [np.nan, np.inf]  # excluded
    xmax[[7, 41]] = [np.inf, -np.inf]  # excluded
    files.append(_write_tree(tmp / "showers_bad.root", "Showers", {"lg_e": lg_e, "xmax": xmax}))
    return files


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("process computed something: it must only build the task graph")


def _lazy(proc: Any, fileset: dict[str, Any], step_size: int) -> dict[str, Any]:
    """``apply_to_fileset`` as a coffea user calls it, with any compute inside ``process`` refused;
    the number of partitions of each dataset under ``"partitions"``."""
    from coffea.dataset_tools import apply_to_fileset, preprocess

    with dask.config.set(scheduler="sync"):
        steps, _ = preprocess(fileset, step_size=step_size, align_clusters=False)
    with dask.config.set(scheduler=_no_compute):
        out = apply_to_fileset(proc, steps, schemaclass=BaseSchema)
    partitions = {name: sum(len(f["steps"]) for f in spec["files"].values()) for name, spec in steps.items()}
    return {**out, "partitions": partitions}


def _computed(proc: Any, lazy: dict[str, Any]) -> dict[str, Any]:
    with dask.config.set(scheduler="sync"):
        (computed,) = dask.compute({k: v for k, v in lazy.items() if k != "partitions"})
    return proc.postprocess(processor.accumulate(computed.values()))


def _eager(proc: Any, fileset: dict[str, Any], chunksize: int, tree: str) -> dict[str, Any]:
    run = processor.Runner(processor.IterativeExecutor(), schema=BaseSchema, chunksize=chunksize)
    return run(fileset, proc, treename=tree)


def test_pseudo_experiment_features_in_dask_mode_equal_the_runner(pe_files: list[Path]) -> None:
    proc = PseudoExperimentFeatureProcessor()
    fileset = {"pe": {"files": {str(f): "PseudoExperiments" for f in pe_files}}}
    lazy = _lazy(proc, fileset, step_size=20)
    assert lazy["pe"]["pe"]["columns"].npartitions == lazy["partitions"]["pe"] == 7  # 90 + 60 in ~20s
    got = _computed(proc, lazy)["pe"]
    ref = _eager(proc, fileset, 20, "PseudoExperiments")["pe"]
    assert len(ref["columns"]) == 148
    assert got["columns"].type == ref["columns"].type
    assert got["columns"].fields == ref["columns"].fields  # the 7 parameters, 943 features, index
    for name in ref["columns"].fields:
        np.testing.assert_array_equal(ak.to_numpy(got["columns"][name]), ak.to_numpy(ref["columns"][name]))
    index = ak.to_numpy(got["columns"].index)
    assert 4 not in index
    assert 7 not in index  # the two invalid rows
    assert (
        cutflow_to_dict(got["cutflow"])
        == cutflow_to_dict(ref["cutflow"])
        == {
            "all": 150,
            "valid inputs": 148,
        }
    )
    assert "cutflow_weighted" not in got  # no event weights
    assert "cutflow_weighted" not in ref


def test_feature_columns_go_to_parquet(pe_files: list[Path], tmp_path: Path) -> None:
    lazy = cosmic_dask([str(f) for f in pe_files], step_size=40, dataset="pe", scheduler="sync")
    assert (lazy.mode, lazy.partitions) == ("features", {"pe": 4})
    with dask.config.set(scheduler="sync"):
        dak.to_parquet(lazy.outputs["pe"]["pe"]["columns"], str(tmp_path / "features"))
    written = sorted((tmp_path / "features").glob("*.parquet"))
    assert len(written) == 4  # one file per partition
    back = ak.from_parquet(written)
    proc = PseudoExperimentFeatureProcessor()
    fileset = {"pe": {"files": {str(f): "PseudoExperiments" for f in pe_files}}}
    ref = _eager(proc, fileset, 1000, "PseudoExperiments")["pe"]["columns"]
    assert ak.to_list(back) == ak.to_list(ref)
    out = lazy.compute(scheduler="sync")["pe"]
    assert ak.to_list(out["columns"]) == ak.to_list(ref)
    assert cutflow_to_dict(out["cutflow"]) == {"all": 150, "valid inputs": 148}


@pytest.mark.parametrize("step_size", [300, 1337])
def test_shower_histograms_in_dask_mode_equal_the_runner(shower_files: list[Path], step_size: int) -> None:
    _needs_dask_histogram()
    import hist.dask

    proc = ShowerHistogramProcessor()
    fileset = {
        "sim": {"files": {str(f): "Showers" for f in shower_files[:2]}},
        "bad": {"files": {str(shower_files[2]): "Showers"}},
    }
    lazy = _lazy(proc, fileset, step_size=step_size)
    assert isinstance(lazy["sim"]["histogram"], hist.dask.Hist)
    assert lazy["partitions"] == ({"sim": 14, "bad": 2} if step_size == 300 else {"sim": 3, "bad": 1})
    assert dak.necessary_columns(lazy["sim"]["showers_by_dataset"]["sim"]).popitem()[1] == {"lg_e", "xmax"}
    got = _computed(proc, lazy)
    ref = _eager(proc, fileset, step_size, "Showers")
    values = ref["histogram"].values(flow=True)
    assert values.sum() > 4000
    np.testing.assert_array_equal(got["histogram"].values(flow=True), values)
    assert got["histogram"].axes == ref["histogram"].axes
    assert sorted(got["by_dataset"]) == ["bad", "sim"]
    for name, h in ref["by_dataset"].items():
        np.testing.assert_array_equal(got["by_dataset"][name].values(flow=True), h.values(flow=True))
    assert got["by_dataset"]["sim"] is not got["histogram"]
    assert got["showers_by_dataset"] == ref["showers_by_dataset"]
    assert got["excluded_showers_by_dataset"] == ref["excluded_showers_by_dataset"] == {"sim": 0, "bad": 4}
    assert got["showers_by_dataset"]["bad"] == 496
    assert sum(ref["showers"].values()) == sum(ref["showers_by_dataset"].values())  # per file: eager only
    assert "showers" not in got


def test_cosmic_dask_histogram_of_several_files(shower_files: list[Path]) -> None:
    _needs_dask_histogram()
    lazy = cosmic_dask([str(f) for f in shower_files[:2]], step_size=500, scheduler="sync")
    assert lazy.mode == "histogram"
    assert lazy.partitions["cosmic"] >= 6
    out = lazy.compute(scheduler="sync")
    fileset = {"cosmic": {"files": {str(f): "Showers" for f in shower_files[:2]}}}
    ref = _eager(ShowerHistogramProcessor(), fileset, 100_000, "Showers")
    np.testing.assert_array_equal(out["histogram"].values(flow=True), ref["histogram"].values(flow=True))
    assert out["showers_by_dataset"] == ref["showers_by_dataset"]


def test_wrong_trees_and_branches_are_refused_naming_them(
    pe_files: list[Path], shower_files: list[Path], tmp_path: Path
) -> None:
    showers = shower_files[0]
    spec = tmp_path / "fileset.json"
    spec.write_text(json.dumps({"sim": {"files": {str(showers): "Nope"}}}))
    with pytest.raises(InputError, match=r"showers_0.root has no Nope tree \(found: Showers, metadata\)$"):
        cosmic_dask([spec])
    with pytest.raises(InputError, match=r"showers_0.root has no PseudoExperiments tree \(found: "):
        cosmic_dask([showers], mode="features")
    lg_only = _write_tree(tmp_path / "lg_only.root", "Showers", {"lg_e": np.array([19.0, 19.5])})
    with pytest.raises(
        InputError, match=r"lg_only.root: the Showers tree has no branch xmax \(found: lg_e\)$"
    ):
        cosmic_dask([showers, lg_only], mode="histogram")
    # the processors themselves, handed the other tree or a mistyped branch in dask mode
    with pytest.raises(
        InputError,
        match=r"^dataset d: missing branches lg_e: these are the branches of a PseudoExperiments tree, "
        r"not of a Showers tree; use PseudoExperimentFeatureProcessor for them$",
    ):
        _lazy(ShowerHistogramProcessor(), {"d": {"files": {str(pe_files[1]): "PseudoExperiments"}}}, 100)
    with pytest.raises(
        InputError, match=r"^dataset d: missing branches gamma, .* use ShowerHistogramProcessor"
    ):
        _lazy(PseudoExperimentFeatureProcessor(), {"d": {"files": {str(showers): "Showers"}}}, 1000)
    flags = _write_tree(
        tmp_path / "flags.root", "Showers", {"lg_e": np.array([True]), "xmax": np.array([1.0])}
    )
    with pytest.raises(
        InputError, match=r"^dataset d: branch lg_e has type bool, expected a floating-point number$"
    ):
        _lazy(ShowerHistogramProcessor(), {"d": {"files": {str(flags): "Showers"}}}, 10)
    config = tmp_path / "cfg.toml"
    config.write_text("[model]\nlg_e_min = 19.0\n")
    with pytest.raises(InputError, match=r"^dataset pe: spectrum/xmax have shapes .* another lg_e_min\?$"):
        cosmic_dask([pe_files[0]], dataset="pe", config=config, scheduler="sync")
    with pytest.raises(InputError, match=r"^input: spectrum/xmax have shapes \(var\)/\(var\)"):
        PseudoExperimentFeatureProcessor().columns(
            ak.zip(
                {
                    **{name: np.zeros(2) for name in PARAMETER_NAMES},
                    "spectrum": ak.Array([[1, 2], [3]]),
                    "xmax": ak.Array([[1], [2]]),
                },
                depth_limit=1,
            )
        )


def test_histogram_without_dask_histogram_is_one_line(
    shower_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "hist.dask", None)
    with pytest.raises(ConfigError, match=r"needs dask-histogram: pip install 'hepflow\[distributed\]'$"):
        cosmic_dask([shower_files[0]])
    with pytest.raises(ConfigError, match="needs dask-histogram"):
        _lazy(ShowerHistogramProcessor(), {"d": {"files": {str(shower_files[0]): "Showers"}}}, 1000)


def test_a_file_gone_before_compute_is_one_line(pe_files: list[Path], tmp_path: Path) -> None:
    import shutil

    gone = tmp_path / "gone.root"
    shutil.copy(pe_files[1], gone)
    lazy = cosmic_dask([pe_files[0], gone], step_size=50, scheduler="sync")
    gone.unlink()
    with pytest.raises(InputError, match=rf"^processing failed while reading {gone}: FileNotFoundError: "):
        lazy.compute(scheduler="sync")
