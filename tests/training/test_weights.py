"""Per-event weights in hepflow.fit: constant weights, integer weights, negative (NLO) weights, checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hepflow
from hepflow.errors import ConfigError, InputError, ModelError
from hepflow.flows import Regressor

MODELS = ["affine", "spline", "regressor"]


def make(kind: str, seed: int = 0, *, theta_dim: int = 2, context_dim: int = 2, width: int = 16):
    if kind == "regressor":
        return Regressor(theta_dim, context_dim, width=width, layers=2, seed=seed)
    return hepflow.ConditionalINN(theta_dim, context_dim, blocks=kind, depth=2, width=width, seed=seed)


def data(n: int = 800, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 2, generator=g)
    ctx = torch.cat([theta.sum(1, keepdim=True), theta[:, :1] - theta[:, 1:]], 1)
    return theta, ctx + 0.3 * torch.randn(n, 2, generator=g)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


KW = {"epochs": 2, "batch_size": 128, "seed": 5, "device": "cpu", "progress": False}


@pytest.mark.parametrize("kind", MODELS)
def test_constant_weights_train_like_no_weights(kind):
    theta, ctx = data()
    ref = make(kind)
    h_ref = hepflow.fit(ref, theta, ctx, **KW)
    for w in (torch.full((len(theta),), 2.5), np.full(len(theta), 0.3, dtype=np.float32)):
        model = make(kind)
        h = hepflow.fit(model, theta, ctx, weights=w, **KW)
        np.testing.assert_allclose(h.train_loss, h_ref.train_loss, rtol=1e-5)
        np.testing.assert_allclose(h.val_loss, h_ref.val_loss, rtol=1e-5)
        a, b = state(ref), state(model)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("kind", MODELS)
def test_training_loss_weights_reduce_as_weighted_mean(kind):
    theta, ctx = data(64)
    model = make(kind)
    model.prepare(theta, ctx)
    w = torch.rand(64) * 3 - 1
    per_event = torch.stack([model.training_loss(theta[i : i + 1], ctx[i : i + 1]) for i in range(64)])
    torch.testing.assert_close(model.training_loss(theta, ctx, weights=w), (w * per_event).mean())
    # weights of one: the plain mean
    torch.testing.assert_close(
        model.training_loss(theta, ctx, weights=torch.ones(64)), model.training_loss(theta, ctx)
    )


def _fitted_mean(model: torch.nn.Module, kind: str, ctx: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (and the draws or predictions) of the model's theta over the contexts ``ctx``."""
    if kind == "regressor":
        x = model.predict(ctx).numpy()
    else:
        x = model.sample(1, ctx, generator=torch.Generator().manual_seed(0))[:, 0].numpy()
    return x.mean(0), x


# The statistical tests learn a marginal: the context is pure noise, independent of theta.
STAT_KW = {
    "epochs": 12,
    "batch_size": 256,
    "lr": 3e-3,
    "seed": 1,
    "device": "cpu",
    "progress": False,
    "patience": None,
    "validation_split": 0.0,
}


@pytest.mark.parametrize("kind", MODELS)
def test_integer_weights_match_repeated_rows(kind):
    # theta ~ N(0, 1)^2; events with theta_0 > 0 weigh 3: the weighted theta_0 has density
    # phi(x) (1 + 2 [x > 0]) / 2, mean (3 phi(0) - phi(0)) / 2 = phi(0) = 0.399, P(theta_0 > 0) = 3/4
    n = 2000
    g = torch.Generator().manual_seed(2)
    theta, ctx = torch.randn(n, 2, generator=g), torch.randn(n, 1, generator=g)
    w = torch.where(theta[:, 0] > 0, 3, 1)
    expected = 1 / math.sqrt(2 * math.pi)
    test_ctx = torch.randn(4000, 1, generator=g)

    weighted = make(kind, context_dim=1, width=32)
    h = hepflow.fit(weighted, theta, ctx, weights=w, **STAT_KW)
    assert all(math.isfinite(v) for v in h.train_loss)
    repeated = make(kind, context_dim=1, width=32)
    rows = torch.repeat_interleave(torch.arange(n), w)
    hepflow.fit(repeated, theta[rows], ctx[rows], **STAT_KW)

    mean_w, x_w = _fitted_mean(weighted, kind, test_ctx)
    mean_r, x_r = _fitted_mean(repeated, kind, test_ctx)
    assert abs(mean_w[0] - expected) < 0.1, mean_w
    assert abs(mean_w[0] - mean_r[0]) < 0.1, (mean_w, mean_r)
    assert abs(mean_w[1]) < 0.1
    assert abs(mean_r[1]) < 0.1
    if kind != "regressor":  # 3/4 for the weighted density, 1/2 unweighted; the small flows
        # smooth the step at 0, so compare with the fit on repeated rows
        frac_w, frac_r = (x_w[:, 0] > 0).mean(), (x_r[:, 0] > 0).mean()
        assert frac_w > 0.62
        assert abs(frac_w - frac_r) < 0.05, (frac_w, frac_r)
    else:  # the unweighted mean would be 0
        assert mean_w[0] > 0.25


@pytest.mark.parametrize("kind", MODELS)
def test_negative_weights_recover_the_weighted_mean(kind):
    # NLO-like sample of N events: 60% from N(1, 1) and 20% from h = N(-1, 0.5) with weight +1,
    # 20% from h with weight -1; the h events cancel: the weighted theta_0 is N(1, 1), whereas
    # the unweighted mean is 0.2
    n = 4000
    g = torch.Generator().manual_seed(3)
    n_a, n_h = int(0.6 * n), int(0.2 * n)
    x0 = torch.cat(
        [
            1 + torch.randn(n_a, generator=g),
            -1 + 0.5 * torch.randn(2 * n_h, generator=g),
        ]
    )
    w = torch.cat([torch.ones(n_a + n_h), -torch.ones(n_h)])
    theta = torch.stack([x0, torch.randn(len(x0), generator=g)], 1)
    ctx = torch.randn(len(x0), 1, generator=g)

    model = make(kind, context_dim=1, width=32)
    h = hepflow.fit(model, theta, ctx, weights=w, **STAT_KW)
    assert all(math.isfinite(v) for v in h.train_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    mean, x = _fitted_mean(model, kind, torch.randn(4000, 1, generator=g))
    assert abs(mean[0] - 1.0) < 0.15, mean
    if kind != "regressor":
        assert np.isfinite(x).all()
        assert abs(x[:, 0].std() - 1.0) < 0.2


@pytest.mark.parametrize("kind", ["affine", "regressor"])
def test_validation_loss_is_the_weighted_mean(kind):
    theta, ctx = data()
    va_theta, va_ctx = data(300, seed=1)
    va_w = torch.linspace(-0.5, 2.0, 300)
    model = make(kind)
    h = hepflow.fit(
        model,
        theta,
        ctx,
        weights=torch.rand(len(theta)) + 0.5,
        validation=(va_theta, va_ctx, va_w),
        restore_best=False,
        **KW,
    )
    with torch.no_grad():
        per_event = torch.stack(
            [model.training_loss(va_theta[i : i + 1], va_ctx[i : i + 1]) for i in range(300)]
        ).double()
    expected = float((va_w.double() * per_event).sum() / va_w.double().sum())
    assert h.val_loss[-1] == pytest.approx(expected, rel=1e-4)


class Interrupt(Exception):
    pass


def test_weighted_resume_matches_uninterrupted_run(tmp_path):
    theta, ctx = data()
    w = torch.where(torch.arange(len(theta)) % 5 == 0, -0.5, 1.5)
    kw = {**KW, "epochs": 3}
    ref = make("affine")
    h_ref = hepflow.fit(ref, theta, ctx, weights=w, **kw)

    def stop_after_one(history):
        if len(history.train_loss) == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        hepflow.fit(
            make("affine"), theta, ctx, weights=w, checkpoint_dir=tmp_path, callback=stop_after_one, **kw
        )
    with pytest.raises(ModelError, match="with weights; got none"):
        hepflow.fit(make("affine"), theta, ctx, checkpoint_dir=tmp_path, resume=True, **kw)
    with pytest.raises(ModelError, match="other weights"):
        hepflow.fit(make("affine"), theta, ctx, weights=2 * w, checkpoint_dir=tmp_path, resume=True, **kw)
    resumed = make("affine", seed=9)
    h_res = hepflow.fit(resumed, theta, ctx, weights=w, checkpoint_dir=tmp_path, resume=True, **kw)
    assert h_res.train_loss == h_ref.train_loss
    assert h_res.val_loss == h_ref.val_loss
    a, b = state(ref), state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weighted_bf16_on_cpu_runs():
    theta, ctx = data(300)
    w = torch.where(torch.arange(300) % 4 == 0, -1.0, 1.0)
    h = hepflow.fit(
        make("spline"), theta, ctx, weights=w, epochs=1, precision="bf16", device="cpu", progress=False
    )
    assert math.isfinite(h.train_loss[0])


N = 800
BAD = {
    "short": (torch.ones(N - 1), "799 entries but theta has 800"),
    "2d": (torch.ones(N, 2), r"shape \(800,\)"),
    "nan": (torch.ones(N).index_fill(0, torch.tensor([3, 7]), math.nan), "NaN or inf in 2 event"),
    "inf": (torch.ones(N).index_fill(0, torch.tensor([5]), math.inf), "NaN or inf in 1 event"),
    "zero": (torch.zeros(N), "all zero"),
    "zero sum": (torch.tensor([1.0, -1.0]).repeat(N // 2), "sum to 0"),
    "negative sum": (-torch.ones(N), "sum to -800"),
    "strings": (np.array(["a"] * N), "numeric"),
    "bool": (torch.ones(N, dtype=torch.bool), "real numbers"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_weights_raise_one_line(case):
    theta, ctx = data(N)
    w, match = BAD[case]
    with pytest.raises(InputError, match=match) as err:
        hepflow.fit(make("affine"), theta, ctx, weights=w, **KW)
    assert "\n" not in str(err.value)


def test_bad_split_and_model_weights():
    theta, ctx = data(N)
    va_theta, va_ctx = data(100, seed=1)
    # the explicit validation set's weights are checked the same way
    with pytest.raises(InputError, match="sum to -100") as err:
        hepflow.fit(make("affine"), theta, ctx, validation=(va_theta, va_ctx, -torch.ones(100)), **KW)
    assert "\n" not in str(err.value)
    # a split whose total weight is not positive, though the whole set's is: all the positive
    # weight is in one event, which is either in the training or in the validation split
    w = torch.cat([torch.full((N - 1,), -1.0), torch.tensor([1e4])])
    with pytest.raises(InputError, match=r"(training|validation) events sum to") as err:
        hepflow.fit(make("affine"), theta, ctx, weights=w, **KW)
    assert "\n" not in str(err.value)

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.zeros(2))

        def training_loss(self, theta, context):
            return ((theta - self.a) ** 2).mean()

    with pytest.raises(ConfigError, match="accepts weights"):
        hepflow.fit(Plain(), theta, None, weights=torch.ones(N), **KW)
    with pytest.raises(ConfigError, match="validation must be"):
        hepflow.fit(make("affine"), theta, ctx, validation=(va_theta,), **KW)
