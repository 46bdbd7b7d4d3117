"""Pseudo-experiment generation: file layout, determinism, prior support, atomic writing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot

from hepflow.cosmic import PARAMETER_NAMES, ForwardModel, Prior
from hepflow.cosmic.config import CosmicConfig
from hepflow.cosmic.generate import PSEUDO_EXPERIMENT_TREE, generate_cosmic, read_pseudo_experiments
from hepflow.errors import ConfigError, InputError, OutputError

from .conftest import N_PSEUDO


def test_layout_is_a_ttree_with_fixed_size_counts(pe_file: Path, model: ForwardModel) -> None:
    with uproot.open(pe_file) as f:
        assert f.classname_of(PSEUDO_EXPERIMENT_TREE) == "TTree"  # not an RNTuple
        tree = f[PSEUDO_EXPERIMENT_TREE]
        assert tree.num_entries == N_PSEUDO
        types = tree.typenames()
        meta = json.loads(str(f["metadata"]))
    assert types["spectrum"] == "int32_t[15]"
    assert types["xmax"] == "int32_t[9][100]"
    assert all(types[name] == "double" for name in PARAMETER_NAMES)
    assert meta["content"] == "pseudo-experiments"
    assert meta["seed"] == 11
    assert meta["n"] == N_PSEUDO
    assert meta["n_xmax"] == model.n_xmax.tolist()


def test_parameters_follow_the_prior_and_counts_the_model(pe_file: Path, model: ForwardModel) -> None:
    data = read_pseudo_experiments(pe_file)
    theta = data["theta"]
    assert Prior().in_support(theta).all()
    # uniform gamma on [-3, 3]: mean 0, sd sqrt(3); Dirichlet(1) fractions: mean 1/5
    assert abs(theta[:, 0].mean()) < 4 * np.sqrt(3.0 / N_PSEUDO)
    assert np.allclose(theta[:, 2:].mean(axis=0), 0.2, atol=4 * 0.163 / np.sqrt(N_PSEUDO))
    # fixed numbers of Xmax events, Poisson spectra around the expected counts
    assert np.array_equal(data["xmax"].sum(axis=2), np.tile(model.n_xmax.astype(int), (N_PSEUDO, 1)))
    mu = model.expected(theta[:200])["spectrum"]
    pearson = ((data["spectrum"][:200] - mu) ** 2 / np.maximum(mu, 1e-9))[mu > 5]
    assert abs(pearson.mean() - 1.0) < 0.15


def test_content_depends_on_seed_not_batch_size(tmp_path: Path) -> None:
    a = generate_cosmic(tmp_path / "a.root", n=2100, seed=5, batch_size=300, progress=False)
    generate_cosmic(tmp_path / "b.root", n=2100, seed=5, batch_size=5000, progress=False)
    generate_cosmic(tmp_path / "c.root", n=2100, seed=6, batch_size=300, progress=False)
    ra, rb, rc = (read_pseudo_experiments(tmp_path / f"{x}.root") for x in "abc")
    for key in ("theta", "spectrum", "xmax"):
        assert np.array_equal(ra[key], rb[key])
    assert not np.array_equal(ra["theta"], rc["theta"])
    assert a.n == 2100
    assert "pseudo-experiments/s" in a.summary()
    assert a.per_second > 0


def test_config_prior_is_used(tmp_path: Path) -> None:
    cfg = CosmicConfig.from_dict({"prior": {"gamma": [1.0, 1.5], "concentration": 5.0}})
    generate_cosmic(tmp_path / "p.root", n=300, seed=1, config=cfg, progress=False)
    theta = read_pseudo_experiments(tmp_path / "p.root")["theta"]
    assert theta[:, 0].min() >= 1.0
    assert theta[:, 0].max() <= 1.5
    assert theta[:, 2:].std() < 0.12  # Dirichlet(5): sd 0.073 instead of 0.163


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "x.root"
    path.write_text("keep me")
    with pytest.raises(OutputError, match="exists"):
        generate_cosmic(path, n=10, seed=1, progress=False)
    assert path.read_text() == "keep me"
    generate_cosmic(path, n=10, seed=1, progress=False, overwrite=True)
    assert read_pseudo_experiments(path)["theta"].shape == (10, 7)
    assert [p.name for p in tmp_path.iterdir()] == ["x.root"]  # no temporaries left


def test_bad_arguments_and_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="positive"):
        generate_cosmic(tmp_path / "y.root", n=0, seed=1, progress=False)
    with pytest.raises(InputError, match="does not exist"):
        read_pseudo_experiments(tmp_path / "missing.root")
    with uproot.recreate(tmp_path / "other.root") as f:
        f.mktree("Events", {"x": np.float64})
    with pytest.raises(InputError, match="no PseudoExperiments tree"):
        read_pseudo_experiments(tmp_path / "other.root")


def test_defaults_come_from_the_config(tmp_path: Path) -> None:
    cfg = CosmicConfig.from_dict({"generation": {"n": 40, "seed": 4, "batch_size": 15}})
    stats = generate_cosmic(tmp_path / "d.root", config=cfg, progress=False)
    assert stats.n == 40
    with uproot.open(tmp_path / "d.root") as f:
        assert json.loads(str(f["metadata"]))["seed"] == 4
    same = generate_cosmic(tmp_path / "e.root", n=40, seed=4, progress=False)
    assert same.n == 40
    assert np.array_equal(
        read_pseudo_experiments(tmp_path / "d.root")["xmax"],
        read_pseudo_experiments(tmp_path / "e.root")["xmax"],
    )
