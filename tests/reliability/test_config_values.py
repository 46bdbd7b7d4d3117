"""Config values checked by value, and ``--resume`` refusing another epoch count or a damaged epoch.

Before: ``clip_grad = -1`` trained uphill, ``max_events = -5`` dropped 5 events, ``lr = -1`` or
NaN and ``set_width = 0`` ended in tracebacks, a width of 1e9 tried to allocate tens of GB;
``--resume`` with ``epochs = 3`` after a run of 40 kept the 40 epochs, a checkpoint with
``epoch = -5`` trained 85 epochs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import hepflow
from hepflow.cli import main
from hepflow.config import MAX_SIZE
from hepflow.cosmic.config import CosmicConfig
from hepflow.errors import ConfigError, ModelError
from hepflow.training import load_checkpoint
from hepflow.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from hepflow.training.config import FitConfig
from hepflow.unfolding.study import UnfoldingConfig

POSITIVE = "expected a positive number"
COUNT = "expected a positive integer"
SIZE = rf"expected an integer in \[1, {MAX_SIZE}\]"


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("training", "clip_grad", "-1", r'expected a positive number or "off", got -1\.0'),
        ("training", "max_events", "-5", f"{COUNT}, got -5"),
        ("training", "lr", "-1", f"{POSITIVE}, got -1.0"),
        ("training", "lr", "nan", f"{POSITIVE}, got nan"),
        ("training", "lr", "inf", f"{POSITIVE}, got inf"),
        ("training", "weight_decay", "-1e-5", r"expected a number >= 0, got -1e-05"),
        ("training", "epochs", "0", f"{COUNT}, got 0"),
        ("training", "batch_size", "-64", f"{COUNT}, got -64"),
        ("training", "patience", "0", f"{COUNT}, got 0"),
        ("training", "validation_split", "1.0", r"expected a number in \[0, 1\), got 1\.0"),
        ("training", "seed", "-1", "expected an integer >= 0, got -1"),
        ("summary", "set_width", "0", f"{SIZE}, got 0"),
        ("summary", "set_width", "63", "expected a multiple of set_heads=4, got 63"),
        ("flow", "width", "1000000000", f"{SIZE}, got 1000000000"),
        ("flow", "depth", "0", f"{SIZE}, got 0"),
        ("flow", "bound", "-4.0", f"{POSITIVE}, got -4.0"),
        ("regression", "layers", "0", f"{SIZE}, got 0"),
        ("inference", "samples", "1", "expected an integer >= 2, got 1"),
        ("inference", "batch_events", "0", f"{COUNT}, got 0"),
        ("generation", "train_events", "-1", f"{COUNT}, got -1"),
    ],
)
def test_bad_config_values_are_one_line_naming_file_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str, value: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f"[{table}]\n{key} = {value}\n")
    argv = ["train", "neutrino", "--data", str(tmp_path / "features"), "--output", str(tmp_path / "m")]
    rc = main([*argv, "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1, err
    assert f"hepflow: error: {config} [{table}].{key}: " in err
    assert re.search(message, err), err
    assert not (tmp_path / "m").exists()  # refused before anything was read or written


@pytest.mark.parametrize(
    ("cls", "text", "message"),
    [
        (CosmicConfig, "[training]\nclip_grad = -1\n", r"\[training\]\.clip_grad: expected a positive"),
        (CosmicConfig, "[training]\nlr = nan\n", r"\[training\]\.lr: expected a positive number, got nan"),
        (
            CosmicConfig,
            "[flow]\nsummary_width = 1000000000\n",
            r"\[flow\]\.summary_width: expected an integer",
        ),
        (CosmicConfig, "[flow]\ncnn_channels = [16, 0]\n", r"\[flow\]: flow\.cnn_channels must be positive"),
        (CosmicConfig, "[inference]\nsamples = 1\n", r"\[inference\]\.samples: expected an integer >= 2"),
        (CosmicConfig, "[generation]\nbatch_size = 0\n", r"\[generation\]\.batch_size: expected a positive"),
        (CosmicConfig, "[training]\ntime_limit_s = -1\n", r"\[training\]\.time_limit_s: expected a positive"),
        (UnfoldingConfig, "[training]\nmax_events = -5\n", r"\[training\]\.max_events: expected a positive"),
        (UnfoldingConfig, "[cinn]\nbatch_events = 0\n", r"\[cinn\]\.batch_events: expected a positive"),
        (UnfoldingConfig, "[ibu]\niterations = 0\n", r"\[ibu\]\.iterations: expected a positive"),
        (UnfoldingConfig, "[summary]\nset_width = 0\n", r"\[summary\]\.set_width: expected an integer"),
    ],
)
def test_cosmic_and_unfolding_values_are_checked(tmp_path: Path, cls: type, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        cls.from_file(config)
    assert str(err.value).startswith(f"{config} [")
    assert "\n" not in str(err.value)


def test_clip_grad_off_trains_without_clipping(tmp_path: Path) -> None:
    config = tmp_path / "off.toml"
    config.write_text('[training]\nclip_grad = "off"\n')
    assert CosmicConfig.from_file(config).training.fit_options()["clip_grad"] is None
    assert FitConfig().fit_options()["clip_grad"] == 5.0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("lr", -1.0, "fit: lr: expected a positive number, got -1.0"),
        ("lr", float("nan"), "fit: lr: expected a positive number, got nan"),
        ("clip_grad", -1.0, "fit: clip_grad: expected a positive number, got -1.0"),
        ("weight_decay", -0.1, "fit: weight_decay: expected a number >= 0, got -0.1"),
        ("warmup", 1.5, r"fit: warmup: expected a number in \[0, 1\), got 1\.5"),
    ],
)
def test_fit_refuses_bad_option_values(option: str, value: float, message: str) -> None:
    model = hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=message):
        hepflow.fit(
            model, torch.randn(64, 2), torch.randn(64, 2), epochs=1, progress=False, **{option: value}
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing trained


def _interrupted_run(tmp_path: Path, epochs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A run of ``epochs`` epochs stopped after its second, leaving a checkpoint in ``tmp_path``."""
    theta, ctx = torch.randn(200, 2, generator=torch.Generator().manual_seed(1)), torch.randn(200, 2)

    def stop(history: object) -> bool:
        return len(history) == 2  # type: ignore[arg-type]

    model = hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0)
    hepflow.fit(
        model, theta, ctx, epochs=epochs, seed=3, checkpoint_dir=tmp_path, callback=stop, progress=False
    )
    return theta, ctx


def test_resume_with_another_epoch_count_is_refused(tmp_path: Path) -> None:
    theta, ctx = _interrupted_run(tmp_path, epochs=40)
    model = hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0)
    with pytest.raises(
        ConfigError, match=r"belongs to a run of 40 epochs, got epochs=3: .*resume with epochs = 40"
    ):
        hepflow.fit(model, theta, ctx, epochs=3, checkpoint_dir=tmp_path, resume=True, progress=False)
    # the same count resumes after the checkpoint's epoch
    history = hepflow.fit(
        model, theta, ctx, epochs=40, patience=None, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert history.epoch == list(range(1, 41))


@pytest.mark.parametrize("epoch", [-5, 0, 41, 3, 2.0, "2"])
def test_damaged_checkpoint_epoch_is_refused(tmp_path: Path, epoch: object) -> None:
    theta, ctx = _interrupted_run(tmp_path, epochs=40)
    path = tmp_path / CHECKPOINT_NAME
    state = load_checkpoint(path)
    state["epoch"] = epoch
    save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "version")})
    model = hepflow.ConditionalINN(2, 2, depth=1, width=8, seed=0)
    with pytest.raises(
        ModelError,
        match=rf"records epoch {re.escape(repr(epoch))}, but a run of 40 epochs with 2 epochs of history",
    ):
        hepflow.fit(model, theta, ctx, epochs=40, checkpoint_dir=tmp_path, resume=True, progress=False)
