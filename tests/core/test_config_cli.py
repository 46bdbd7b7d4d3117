"""Strict configuration loading and the command line's error reporting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from hepflow.cli import main
from hepflow.config import from_dict, shipped_config, to_dict
from hepflow.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    width: int = 64


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    rate: float = 1e-3
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_from_dict_builds_nested_and_coerces():
    cfg = from_dict(Outer, {"rate": 1, "sizes": [3, 4], "inner": {"width": 8}, "maybe": 5})
    assert cfg == Outer(rate=1.0, sizes=(3, 4), inner=Inner(8), maybe=5)
    assert to_dict(cfg)["sizes"] == [3, 4]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nmae": "y"}, "unknown key 'nmae' for Outer"),
        ({"inner": {"widht": 3}}, r"config.inner: unknown key 'widht' for Inner"),
        ({"rate": "fast"}, r"config.rate: expected a number, got 'fast'"),
        ({"mode": "c"}, r"config.mode: 'c' is not one of 'a', 'b'"),
        ({"sizes": [1, "x"]}, r"config.sizes\[1\]: expected an integer"),
        ({"inner": 3}, "expected a table for Inner"),
        ({"maybe": True}, "expected an integer"),
    ],
)
def test_from_dict_refuses(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_cli_one_line_error_for_missing_file(tmp_path, capsys):
    rc = main(
        ["process", "neutrino", "--input", str(tmp_path / "missing.root"), "--output", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().count("\n") == 0
    assert "missing.root does not exist" in err
    assert "Traceback" not in err


def test_cli_refuses_bad_option_values(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["process", "neutrino", "--input", "x.root", "--output", "o", "--chunksize", "-5"])
    assert exc.value.code == 2
    assert "--chunksize" in capsys.readouterr().err


def test_cli_debug_shows_traceback(tmp_path):
    from hepflow.errors import InputError

    with pytest.raises(InputError):
        main(
            ["--debug", "process", "neutrino", "--input", str(tmp_path / "m.root"), "--output", str(tmp_path)]
        )


@pytest.mark.parametrize(
    ("argv", "module", "function"),
    [
        (["generate", "cosmic", "--output", "pe.root"], "hepflow.cosmic.generate", "generate_cosmic"),
        (
            ["mcmc", "cosmic", "--observation", "auger", "--output", "out"],
            "hepflow.cosmic.mcmc",
            "mcmc_cosmic",
        ),
    ],
)
def test_cosmic_commands_read_the_analysis_config_by_default(argv, module, function, monkeypatch, tmp_path):
    """Without --config, every cosmic command passes None, which every cosmic function reads as the
    shipped config.toml (not the built-in defaults); --config replaces it."""
    import importlib

    from hepflow.cosmic.config import CosmicConfig, load_config

    assert load_config(None) == CosmicConfig.from_file(shipped_config("cosmic")) != CosmicConfig()

    seen = []

    class Done(Exception):
        pass

    def fake(*args, config=None, **kwargs):
        seen.append(config)
        raise Done

    monkeypatch.setattr(importlib.import_module(module), function, fake)
    own = tmp_path / "c.toml"
    for extra, expected in (([], None), (["--config", str(own)], own)):
        with pytest.raises(Done):
            main([*argv, *extra])
        assert seen[-1] == expected


def test_config_extends_another_file(tmp_path):
    from hepflow.config import read_toml
    from hepflow.cosmic.config import CosmicConfig

    shipped = shipped_config("cosmic")
    (tmp_path / "sub").mkdir()
    variant = tmp_path / "sub" / "stick.toml"
    variant.write_text(f'extends = "{shipped}"\n[flow]\nsimplex = "stick_breaking"\n[training]\nseed = 2\n')
    cfg, base = CosmicConfig.from_file(variant), CosmicConfig.from_file(shipped)
    assert cfg.flow.simplex == "stick_breaking"
    assert cfg.training.seed == 2
    assert cfg.flow.depth == base.flow.depth  # the rest comes from the shipped file
    assert cfg.training.epochs == base.training.epochs
    assert cfg.prior == base.prior
    # relative to the extending file, and chains
    (tmp_path / "sub" / "more.toml").write_text('extends = "stick.toml"\n[training]\nepochs = 3\n')
    chained = CosmicConfig.from_file(tmp_path / "sub" / "more.toml")
    assert (chained.flow.simplex, chained.training.seed, chained.training.epochs) == ("stick_breaking", 2, 3)
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        read_toml(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(
        ConfigError, match=r"c\.toml: extends = 'missing\.toml' names .*missing\.toml, which does not"
    ):
        read_toml(tmp_path / "c.toml")
    # the shipped config's name next to a user's file: the message says how to extend the shipped one
    (tmp_path / "mine.toml").write_text('extends = "config.toml"\n[systematics]\nenabled = true\n')
    with pytest.raises(ConfigError, match=r"hepflow config show ANALYSIS --path"):
        read_toml(tmp_path / "mine.toml")
    (tmp_path / "d.toml").write_text("extends = 3\n")
    with pytest.raises(ConfigError, match="'extends' must be a file name"):
        read_toml(tmp_path / "d.toml")


@pytest.mark.parametrize("analysis", ["neutrino", "cosmic", "unfolding"])
def test_config_show_prints_the_shipped_file(analysis, capsys):
    assert main(["config", "show", analysis]) == 0
    assert capsys.readouterr().out == shipped_config(analysis).read_text()
    assert main(["config", "show", analysis, "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(shipped_config(analysis))


def test_config_show_of_a_variant_and_refusals(capsys):
    assert main(["config", "show", "cosmic", "--file", "config_stick_breaking.toml"]) == 0
    assert 'extends = "config.toml"' in capsys.readouterr().out
    for name in ("nope.toml", "../config.toml", "config.json"):
        assert main(["config", "show", "cosmic", "--file", name]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert name in err
