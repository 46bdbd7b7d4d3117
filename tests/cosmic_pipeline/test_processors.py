"""Coffea processors over the cosmic ntuples: features chunks and the shower histogram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot

from hepflow.cosmic import Observation
from hepflow.cosmic.features import feature_matrix, feature_names, observation_features
from hepflow.cosmic.generate import load_observation, read_pseudo_experiments
from hepflow.cosmic.processor import process_cosmic
from hepflow.errors import InputError, OutputError
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig

from .conftest import N_PSEUDO


def _cfg(**kw: object) -> RunConfig:
    return RunConfig(progress=False, **kw)  # type: ignore[arg-type]


def test_pseudo_experiments_to_feature_chunks(pe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    result = process_cosmic([pe_file], out, run_config=_cfg(chunksize=600))
    assert result.mode == "features"
    assert result.entries == N_PSEUDO
    assert len(list(out.glob("*.parquet"))) >= 2  # coffea balances the chunks (2 x 750)
    table = read_parquet_dir(out)
    order = np.argsort(np.asarray(table["index"]))
    direct = read_pseudo_experiments(pe_file)
    assert np.array_equal(
        feature_matrix(table)[order], observation_features(direct["spectrum"], direct["xmax"])
    )
    assert np.array_equal(np.asarray(table["lg_rcut"])[order], direct["theta"][:, 1])
    run = json.loads((out / "run.json").read_text())
    assert run["rows"] == N_PSEUDO
    assert run["cutflow"]["total"] == {"all": N_PSEUDO, "valid inputs": N_PSEUDO}
    # a rerun skips the complete chunks and reports the same rows
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = process_cosmic([pe_file], out, run_config=_cfg(chunksize=600))
    assert again.entries == N_PSEUDO
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == stamp


def test_showers_to_histogram_gives_from_showers_features(
    shower_file: Path, showers: tuple, tmp_path: Path
) -> None:
    out = tmp_path / "observation"
    result = process_cosmic([shower_file], out, run_config=_cfg(chunksize=7000))  # 8 chunks
    assert result.mode == "histogram"
    assert result.entries == showers[0].size
    direct = Observation.from_showers(*showers)
    (obs,) = result.observations.values()
    assert np.array_equal(obs.spectrum, direct.spectrum)
    assert np.array_equal(obs.xmax, direct.xmax)
    f_direct = observation_features(direct.spectrum, direct.xmax)
    table = read_parquet_dir(out)  # features.parquet
    assert np.array_equal(feature_matrix(table), f_direct)
    assert table["dataset"].tolist() == ["cosmic"]
    # the observation file is readable by the MCMC entry point
    loaded = load_observation(out / "observation.root")
    assert np.array_equal(loaded.xmax, direct.xmax)
    assert np.array_equal(loaded.spectrum, direct.spectrum)
    info = json.loads((out / "observation.json").read_text())
    assert info["feature_names"] == list(feature_names())
    with pytest.raises(OutputError, match="exists"):
        process_cosmic([shower_file], out, run_config=_cfg())


def test_two_datasets_give_two_histograms(shower_file: Path, tmp_path: Path) -> None:
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({"a": [str(shower_file)], "b": {"files": {str(shower_file): "Showers"}}}))
    result = process_cosmic([fileset], tmp_path / "two", run_config=_cfg(chunksize=30000))
    assert sorted(result.observations) == ["a", "b"]
    assert np.array_equal(result.observations["a"].xmax, result.observations["b"].xmax)
    with uproot.open(tmp_path / "two" / "observation.root") as f:
        assert sorted(f.keys(cycle=False)) == ["showers_a", "showers_b"]


def test_unknown_file_content_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {"x": np.float64})
        f["Events"].extend({"x": np.zeros(3)})
    with pytest.raises(InputError, match="neither a PseudoExperiments nor a Showers tree"):
        process_cosmic([path], tmp_path / "out", run_config=_cfg())
    with pytest.raises(InputError, match=r"has no Showers tree \(found: Events\)"):
        process_cosmic([path], tmp_path / "out", run_config=_cfg(), mode="histogram")
    with pytest.raises(InputError, match="does not exist"):
        process_cosmic([tmp_path / "missing.root"], tmp_path / "out", run_config=_cfg())


def test_binning_from_the_config_must_match_the_file(pe_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text("[model]\nlg_e_min = 19.0\n")
    with pytest.raises(InputError, match="another lg_e_min"):
        process_cosmic([pe_file], tmp_path / "out", run_config=_cfg(), config=config)
