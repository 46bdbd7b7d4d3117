"""TorchScript and ONNX samplers agree with the eager model for the same noise."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import hepflow
from hepflow.flows import Box, Combined, MLPSummary, SetSummary, Simplex
from hepflow.inference import Sampler, export_onnx, export_torchscript, load_torchscript

ATOL = 1e-5


def flat_model(blocks):
    torch.manual_seed(0)
    theta = torch.cat(
        [
            torch.rand(500, 1) * 0.9 + 0.05,
            torch.randn(500, 1),
            torch.distributions.Dirichlet(torch.ones(3)).sample((500,)),
        ],
        1,
    )
    ctx = torch.cat([theta[:, :2] + 0.1 * torch.randn(500, 2), torch.randint(0, 4, (500, 1)).float()], 1)
    model = hepflow.ConditionalINN(
        5,
        3,
        blocks=blocks,
        depth=3,
        width=32,
        constraints=[Box([0], low=0.0, high=1.0), Simplex([2, 3, 4])],
        dequantize=[2],
    )
    hepflow.fit(model, theta, ctx, epochs=2, seed=0)
    obs = ctx[:6]
    return model, (obs,)


def set_model():
    torch.manual_seed(0)
    n = 400
    mask = torch.rand(n, 6) > 0.3
    jets = torch.randn(n, 6, 3) * mask[..., None]
    flat = torch.randn(n, 2)
    theta = torch.randn(n, 2)
    summary = Combined(flat=MLPSummary(2, 8, width=16), jets=SetSummary(3, 8, width=16, heads=2))
    model = hepflow.ConditionalINN(2, summary=summary, depth=2, width=16)
    hepflow.fit(model, theta, {"flat": flat, "jets": jets, "mask": mask}, epochs=1, seed=0)
    # other batch and set sizes than the tracing example
    m2 = torch.rand(5, 9) > 0.5
    m2[0] = False  # an event without jets
    return model, (torch.randn(5, 2), torch.randn(5, 9, 3) * m2[..., None], m2)


CASES = {"affine": lambda: flat_model("affine"), "spline": lambda: flat_model("spline"), "set": set_model}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]()


def eager(model, ctx, noise):
    keys = model.context_keys
    context = dict(zip(keys, ctx, strict=True)) if keys != ["context"] else ctx[0]
    with torch.no_grad():
        return model.transform_noise(noise, context)


def test_torchscript_matches_eager(case, tmp_path):
    model, ctx = case
    noise = torch.randn(ctx[0].shape[0], 40, model.latent_dim)
    path = export_torchscript(model, tmp_path / "sampler.pt")
    ts = load_torchscript(path)
    with torch.no_grad():
        out = ts(*ctx, noise)
    ref = eager(model, ctx, noise)
    assert out.shape == (ctx[0].shape[0], 40, model.theta_dim)
    assert torch.allclose(out, ref, atol=ATOL, rtol=0)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*is deprecated:DeprecationWarning")
def test_plain_torch_jit_load(case, tmp_path):
    # the file is what coffea.ml_tools.torch_wrapper loads: plain torch.jit.load
    model, ctx = case
    path = export_torchscript(model, tmp_path / "sampler.pt")
    ts = torch.jit.load(str(path))
    noise = torch.randn(ctx[0].shape[0], 3, model.latent_dim)
    with torch.no_grad():
        assert torch.allclose(ts(*ctx, noise), eager(model, ctx, noise), atol=ATOL, rtol=0)


def test_onnx_matches_eager(case, tmp_path):
    model, ctx = case
    path = export_onnx(model, tmp_path / "sampler.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == [*model.context_keys, "noise"]
    for n_samples in (1, 37):
        noise = torch.randn(ctx[0].shape[0], n_samples, model.latent_dim)
        feed = {name: t.numpy() for name, t in zip(names, (*ctx, noise), strict=True)}
        out = sess.run(["samples"], feed)[0]
        ref = eager(model, ctx, noise).numpy()
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= ATOL


def test_exported_samples_respect_constraints(tmp_path):
    model, ctx = flat_model("spline")
    ts = load_torchscript(export_torchscript(model, tmp_path / "s.pt"))
    with torch.no_grad():
        out = ts(ctx[0], 20 * torch.randn(ctx[0].shape[0], 100, model.latent_dim))
    assert bool(((out[..., 0] >= 0) & (out[..., 0] <= 1)).all())
    assert float((out[..., 2:].sum(-1) - 1).abs().max()) <= 1e-6


def test_sampler_input_names():
    model = hepflow.ConditionalINN(
        2, summary=Combined(flat=MLPSummary(2, 4), jets=SetSummary(3, 4, heads=2, width=8))
    )
    assert Sampler(model).input_names == ["flat", "jets", "mask", "noise"]


def test_a_posterior_exports_its_flow(tmp_path):
    from hepflow.posterior import EnsemblePosterior, FlowPosterior

    model, (obs,) = flat_model("affine")
    noise = torch.randn(len(obs), 7, model.latent_dim)
    direct = Sampler(model)(obs, noise).detach()
    np.testing.assert_array_equal(Sampler(FlowPosterior(model))(obs, noise).detach().numpy(), direct.numpy())
    scripted = load_torchscript(export_torchscript(FlowPosterior(model), tmp_path / "p.pt"))
    np.testing.assert_allclose(scripted(obs, noise).detach().numpy(), direct.numpy(), atol=ATOL)
    with pytest.raises(hepflow.errors.ConfigError, match="no sampling path"):
        Sampler(EnsemblePosterior([FlowPosterior(model), FlowPosterior(model)]))
