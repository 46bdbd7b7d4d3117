"""The analysis configuration: the shipped file loads, mistakes are refused with the key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hepflow.config import shipped_config
from hepflow.cosmic.config import CosmicConfig
from hepflow.errors import ConfigError

CONFIG = shipped_config("cosmic")


def test_shipped_config_loads_with_documented_values() -> None:
    cfg = CosmicConfig.from_file(CONFIG)
    assert cfg.prior.gamma == (-3.0, 3.0)
    assert cfg.prior.build().lg_rcut == (17.5, 19.5)
    assert cfg.model.hadronic_model == "EPOS-LHC"
    assert cfg.model.binning().shape == (15, 9, 100)
    assert cfg.generation.n == 800_000
    assert cfg.mcmc.options()["n_walkers"] == 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prior]\ngama = [0, 1]\n", "unknown key 'gama'"),
        ("[priors]\ngamma = [0, 1]\n", "unknown key 'priors'"),
        ("[model]\nhadronic_model = 'Sibyll'\n", "'Sibyll' is not one of"),
        ("[model]\ndistance = 'nearby'\n", "homogeneous"),
        ("[model]\nlg_e_min = 18.75\n", "lg_e_min=18.75"),
        ("[prior]\ngamma = [3, -3]\n", "low < high"),
        ("[mcmc]\nn_walkers = 8\n", "n_walkers must be at least 12"),
        ("[mcmc]\ninitial = 'random'\n", "'random' is not one of"),
        ("[generation]\nn = 'many'\n", "expected an integer"),
        # the analysis sections ([flow], [training], [inference], [comparison])
        ("[flow]\ndepht = 4\n", "unknown key 'depht'"),
        ("[training]\nepochs = 2\nlearning_rate = 0.1\n", "unknown key 'learning_rate'"),
        ("[comparison]\nn_mock = 3\n", "unknown key 'n_mock'"),
        ("[inferences]\nsamples = 3\n", "unknown key 'inferences'"),
        ("[flow]\nsummary = 'transformer'\n", "'transformer' is not one of"),
        ("[comparison]\nseed = 1\n", "must differ from generation.seed"),
        ("[training]\nepochs = 'ten'\n", "expected an integer"),
    ],
)
def test_mistakes_are_refused_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        CosmicConfig.from_file(path)
    if "unknown key" in message:
        assert str(path) in str(err.value)


def test_distance_in_mpc_builds_a_fixed_distance_model() -> None:
    cfg = CosmicConfig.from_dict({"model": {"distance": 10}})
    assert cfg.model.distance == 10.0
    assert "10" in cfg.model.build().description
