"""The training loop: determinism, resume, early stopping, outputs, generic models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import hepflow
from hepflow.errors import ConfigError, InputError, ModelError
from hepflow.flows import Regressor
from hepflow.training import History, load_checkpoint


def data(n=1200, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 2, generator=g)
    ctx = torch.cat([theta.sum(1, keepdim=True), theta[:, :1] - theta[:, 1:]], 1) + 0.3 * torch.randn(
        n, 2, generator=g
    )
    return theta, ctx


def small(seed=0, **kw):
    return hepflow.ConditionalINN(2, 2, depth=2, width=16, seed=seed, **kw)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("blocks", ["affine", "spline"])
def test_same_seed_same_weights(blocks):
    theta, ctx = data()
    runs = []
    for _ in range(2):
        model = small(blocks=blocks, dequantize=[1])
        h = hepflow.fit(model, theta, ctx, epochs=2, batch_size=128, seed=7)
        runs.append((weights(model), h.train_loss, h.val_loss))
    assert_same(runs[0][0], runs[1][0])
    assert runs[0][1:] == runs[1][1:]
    other = small(blocks=blocks, dequantize=[1])
    hepflow.fit(other, theta, ctx, epochs=2, batch_size=128, seed=8)
    assert not torch.equal(
        weights(other)["flow.transforms.0.subnet.weights.0"],
        runs[0][0]["flow.transforms.0.subnet.weights.0"],
    )


def test_global_seed_makes_default_runs_repeatable():
    theta, ctx = data(400)
    out = []
    for _ in range(2):
        torch.manual_seed(3)
        model = hepflow.ConditionalINN(2, 2, depth=1, width=8)
        hepflow.fit(model, theta, ctx, epochs=1)
        out.append(weights(model))
    assert_same(*out)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_resume_matches_uninterrupted_run(tmp_path, schedule):
    theta, ctx = data()
    kw = {"epochs": 4, "batch_size": 128, "seed": 11, "schedule": schedule, "patience": 2}

    ref = small(dequantize=[0])
    h_ref = hepflow.fit(ref, theta, ctx, **kw)

    def crash_after_two(history):
        if len(history) == 2:
            raise Interrupt

    first = small(dequantize=[0])
    with pytest.raises(Interrupt):
        hepflow.fit(first, theta, ctx, checkpoint_dir=tmp_path, callback=crash_after_two, **kw)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2

    resumed = small(seed=99, dequantize=[0])  # different init: everything must come from the checkpoint
    h_res = hepflow.fit(resumed, theta, ctx, checkpoint_dir=tmp_path, resume=True, **kw)
    assert h_res.epoch == h_ref.epoch
    assert h_res.train_loss == h_ref.train_loss
    assert h_res.val_loss == h_ref.val_loss
    assert h_res.lr == h_ref.lr
    assert_same(weights(ref), weights(resumed))


def test_resume_errors(tmp_path):
    theta, ctx = data(300)
    hepflow.fit(small(), theta, ctx, epochs=1, checkpoint_dir=tmp_path, seed=1)
    with pytest.raises(ModelError, match="written for 300 events"):
        hepflow.fit(small(), theta[:200], ctx[:200], epochs=2, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ModelError, match="does not match the model"):
        hepflow.fit(
            hepflow.ConditionalINN(2, 2, depth=3, width=16),
            theta,
            ctx,
            epochs=1,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    with pytest.raises(ConfigError, match="needs checkpoint_dir"):
        hepflow.fit(small(), theta, ctx, epochs=1, resume=True)
    (tmp_path / "checkpoint.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:500])
    with pytest.raises(ModelError, match="truncated"):
        hepflow.fit(small(), theta, ctx, epochs=2, checkpoint_dir=tmp_path, resume=True)


def test_early_stopping_restores_best(tmp_path):
    theta, ctx = data(600)
    model = small()
    seen = {}

    def spy(history):
        seen[len(history)] = weights(model)

    h = hepflow.fit(
        model,
        theta,
        ctx,
        epochs=60,
        lr=3e-2,
        patience=2,
        batch_size=64,
        seed=0,
        callback=spy,
        output_dir=tmp_path,
    )
    assert h.stopped_early
    assert len(h) < 60
    assert h.best_epoch == int(np.nanargmin(np.array(h.val_loss, dtype=float))) + 1
    assert_same(weights(model), seen[h.best_epoch])
    assert not model.training
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["train_loss"] == h.train_loss
    assert History.from_json(tmp_path / "history.json").best_epoch == h.best_epoch
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_fields_and_numpy_inputs():
    theta, ctx = data(500)
    h = hepflow.fit(
        small(), theta.numpy(), ctx.numpy().astype(np.float64), epochs=2, validation_split=0.2, seed=0
    )
    assert len(h.lr) == len(h.time) == len(h.samples_per_s) == 2
    assert all(s > 0 for s in h.samples_per_s)
    assert h.device == "cpu"
    assert h.precision == "fp32"
    h2 = hepflow.fit(small(), theta, ctx, epochs=1, validation_split=0.0, seed=0)
    assert h2.val_loss == [None]
    h3 = hepflow.fit(small(), theta, ctx, epochs=1, validation=data(100, seed=5), seed=0)
    assert h3.val_loss[0] is not None


def test_regressor_trains_with_the_same_loop():
    theta, ctx = data(2000)
    reg = Regressor(2, 2, width=32, seed=0)
    h = hepflow.fit(reg, theta, ctx, epochs=15, batch_size=64, seed=0)
    assert h.val_loss[-1] < 0.5 * h.val_loss[0]
    pred = reg.predict(ctx[:200])
    assert pred.shape == (200, 2)
    # the posterior mean of the toy is linear in the context; the regressor finds it roughly
    assert float(((pred - theta[:200]) ** 2).mean()) < 0.3


def test_bf16_autocast_on_cpu_runs():
    theta, ctx = data(400)
    model = small(blocks="spline")
    h = hepflow.fit(model, theta, ctx, epochs=2, precision="bf16", seed=0)
    assert h.precision == "bfloat16"
    assert all(np.isfinite(h.train_loss))
    assert next(model.parameters()).dtype == torch.float32


def test_input_validation():
    theta, ctx = data(100)
    bad = ctx.clone()
    bad[7, 1] = float("nan")
    with pytest.raises(InputError, match="NaN or inf in 1 event"):
        hepflow.fit(small(), theta, bad, epochs=1)
    with pytest.raises(InputError, match="100 events but the context has 99"):
        hepflow.fit(small(), theta, ctx[:99], epochs=1)
    with pytest.raises(ConfigError, match="training_loss"):
        hepflow.fit(torch.nn.Linear(2, 2), theta, ctx)
    with pytest.raises(ConfigError, match="precision"):
        hepflow.fit(small(), theta, ctx, precision="int8")
    with pytest.raises(ConfigError, match="schedule"):
        hepflow.fit(small(), theta, ctx, schedule="linear")


def test_dict_context_batches_correctly():
    # each event's theta is copied into its own context: a wrong pairing would be unlearnable
    torch.manual_seed(0)
    n = 3000
    theta = torch.randn(n, 2)
    ctx = {"a": theta[:, :1] + 0.05 * torch.randn(n, 1), "b": theta[:, 1:] + 0.05 * torch.randn(n, 1)}
    from hepflow.flows import Combined, IdentitySummary

    model = hepflow.ConditionalINN(
        2, summary=Combined(a=IdentitySummary(1), b=IdentitySummary(1)), depth=2, width=32, seed=0
    )
    h = hepflow.fit(model, theta, ctx, epochs=8, batch_size=64, seed=0)
    assert h.val_loss[-1] < 0.0  # sharp posteriors (independent pairing would give ~2.8)


def test_fit_config_options_are_fit_arguments():
    import inspect

    from hepflow.errors import ConfigError
    from hepflow.training.config import FitConfig

    options = FitConfig(epochs=3, patience=2).fit_options()
    assert set(options) <= set(inspect.signature(hepflow.fit).parameters)
    assert options["epochs"] == 3
    with pytest.raises(ConfigError, match="epochs: expected a positive integer, got 0"):
        FitConfig(epochs=0)
    with pytest.raises(ConfigError, match="validation_split"):
        FitConfig(validation_split=1.5)


@pytest.mark.parametrize(
    ("make", "label"),
    [
        (small, "negative log-likelihood [nats]"),
        (lambda: Regressor(2, 2, width=16, seed=0), "mean squared error [standardised units]"),
    ],
    ids=["flow", "regressor"],
)
def test_loss_axis_names_the_loss_the_model_minimises(make, label, tmp_path):
    theta, ctx = data(300)
    h = hepflow.fit(make(), theta, ctx, epochs=1, seed=0, output_dir=tmp_path, progress=False)
    assert h.loss == label
    assert History.from_json(tmp_path / "history.json").loss == label
    fig = h.plot()
    assert fig.axes[0].get_ylabel() == label
