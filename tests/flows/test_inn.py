"""ConditionalINN: API, toy posteriors with default settings, constraints, structured contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hepflow
from hepflow.errors import ConfigError, InputError
from hepflow.flows import Box, Combined, MLPSummary, SetSummary, Simplex


def small(**kw):
    kw.setdefault("depth", 2)
    kw.setdefault("width", 16)
    return hepflow.ConditionalINN(**kw)


@pytest.mark.parametrize("blocks", ["affine", "spline"])
def test_api_shapes_and_consistency(blocks):
    torch.manual_seed(0)
    model = small(theta_dim=3, context_dim=2, blocks=blocks).eval()
    theta, ctx = torch.randn(7, 3), torch.randn(7, 2)
    lp = model.log_prob(theta, ctx)
    assert lp.shape == (7,)
    assert torch.allclose(model.log_prob(theta.numpy(), ctx.numpy()), lp)
    samples = model.sample(50, ctx[:4])
    assert samples.shape == (4, 50, 3)
    assert model.sample(5, ctx[0]).shape == (1, 5, 3)  # one observation without batch dimension
    s, slp = model.sample(20, ctx[:2], return_log_prob=True)
    direct = model.log_prob(s.reshape(-1, 3), ctx[:2].repeat_interleave(20, 0)).reshape(2, 20)
    assert torch.allclose(slp, direct, atol=1e-4)
    noise = torch.randn(2, 6, 3)
    assert torch.equal(model.transform_noise(noise, ctx[:2]), model.transform_noise(noise, ctx[:2]))


def test_density_normalises_in_1d():
    torch.manual_seed(0)
    model = small(theta_dim=1, context_dim=1).eval()
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    grid = torch.linspace(-12, 12, 20001).unsqueeze(1)
    lp = model.log_prob(grid, torch.full((grid.shape[0], 1), 0.3)).detach()
    integral = torch.trapezoid(lp.exp(), grid[:, 0])
    assert abs(float(integral) - 1.0) < 1e-3


def test_input_errors_name_the_problem():
    model = small(theta_dim=2, context_dim=3)
    with pytest.raises(InputError, match=r"expected \(batch, 2\)"):
        model.log_prob(torch.randn(4, 5), torch.randn(4, 3))
    with pytest.raises(InputError, match="'context' has shape"):
        model.log_prob(torch.randn(4, 2), torch.randn(4, 4))
    with pytest.raises(InputError, match="4 events but the context has 3"):
        model.log_prob(torch.randn(4, 2), torch.randn(3, 3))
    with pytest.raises(ConfigError, match="blocks"):
        hepflow.ConditionalINN(2, 3, blocks="glow")
    with pytest.raises(ConfigError, match="either context_dim"):
        hepflow.ConditionalINN(2, 3, summary=MLPSummary(3))


def test_linear_gaussian_posterior_matches_analytic():
    """x ~ N(0, I2), y = x1 + x2 + N(0, sigma^2): Gaussian posterior with known mean and covariance."""
    torch.manual_seed(0)
    n, sigma = 10_000, 0.5
    x = torch.randn(n, 2)
    y = x.sum(1, keepdim=True) + sigma * torch.randn(n, 1)
    model = hepflow.ConditionalINN(theta_dim=2, context_dim=1)
    hepflow.fit(model, x, y, epochs=15, seed=1)
    a = torch.ones(2, 1)
    cov = torch.linalg.inv(torch.eye(2) + a @ a.T / sigma**2)
    for y_obs in (-1.0, 0.5, 2.0):
        s = model.sample(20_000, torch.tensor([[y_obs]]))[0].double()
        mean = (cov @ a).flatten() * y_obs / sigma**2
        assert torch.allclose(s.mean(0), mean.double(), atol=0.06), (y_obs, s.mean(0), mean)
        assert torch.allclose(torch.cov(s.T), cov.double(), atol=0.06), (y_obs, torch.cov(s.T), cov)


def test_bimodal_posterior_has_both_modes():
    """x ~ N(0, 1), y = x^2 + noise: for y = 1 the posterior has modes at x = -1 and x = +1."""
    torch.manual_seed(0)
    n = 10_000
    x = torch.randn(n, 1)
    y = x**2 + 0.1 * torch.randn(n, 1)
    model = hepflow.ConditionalINN(theta_dim=1, context_dim=1)
    hepflow.fit(model, x, y, epochs=15, seed=1)
    s = model.sample(20_000, torch.tensor([[1.0]]))[0, :, 0]
    frac_pos = float((s > 0).float().mean())
    assert 0.35 < frac_pos < 0.65
    assert abs(float(s[s > 0].median()) - 1.0) < 0.1
    assert abs(float(s[s < 0].median()) + 1.0) < 0.1
    assert float(((s.abs() - 1.0).abs() < 0.25).float().mean()) > 0.9  # little mass between the modes


@pytest.mark.slow
def test_two_moons_posterior():
    """The two-moons SBI benchmark: crescent-shaped, bimodal posterior."""
    torch.manual_seed(0)
    n = 50_000
    theta = torch.rand(n, 2) * 2 - 1
    a = torch.rand(n) * torch.pi - torch.pi / 2
    r = 0.1 + 0.01 * torch.randn(n)
    p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], 1)
    x = p + torch.stack(
        [-(theta[:, 0] + theta[:, 1]).abs() / 2**0.5, (-theta[:, 0] + theta[:, 1]) / 2**0.5], 1
    )
    model = hepflow.ConditionalINN(theta_dim=2, context_dim=2)
    hepflow.fit(model, theta, x, epochs=40, seed=1)
    s = model.sample(5000, torch.zeros(1, 2))[0]
    # the posterior for x = 0 is two crescents; the sum theta1 + theta2 splits them
    u = s.sum(1)
    assert 0.3 < float((u > 0).float().mean()) < 0.7
    assert float((((s[:, 0] + s[:, 1]).abs() / 2**0.5 - 0.25).abs() < 0.15).float().mean()) > 0.8


def test_constrained_samples_never_leave_support():
    torch.manual_seed(0)
    n = 3000
    frac = torch.distributions.Dirichlet(torch.tensor([2.0, 1.0, 0.5])).sample((n,))
    mass = torch.rand(n, 1) * 0.98 + 0.01
    theta = torch.cat([mass, frac], 1)
    ctx = torch.cat([mass + 0.05 * torch.randn(n, 1), frac[:, :2] + 0.05 * torch.randn(n, 2)], 1)
    model = hepflow.ConditionalINN(
        theta_dim=4,
        context_dim=3,
        depth=3,
        width=32,
        constraints=[Box([0], low=0.0, high=1.0), Simplex([1, 2, 3])],
    )
    assert model.latent_dim == 3
    hepflow.fit(model, theta, ctx, epochs=3, seed=0)
    extreme_ctx = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [50.0, -50.0, 50.0]])
    s = model.sample(4000, extreme_ctx)
    assert bool(((s[..., 0] >= 0) & (s[..., 0] <= 1)).all())
    assert bool((s[..., 1:] >= 0).all())
    assert float((s[..., 1:].sum(-1) - 1).abs().max()) <= 1e-6
    # even wild latent noise stays inside the support
    wild = model.transform_noise(torch.randn(3, 500, 3) * 50, extreme_ctx).detach()
    assert bool(((wild[..., 0] >= 0) & (wild[..., 0] <= 1)).all())
    assert float((wild[..., 1:].sum(-1) - 1).abs().max()) <= 1e-6
    lp = model.log_prob(torch.tensor([[1.5, 0.2, 0.3, 0.5], [0.5, 0.2, 0.3, 0.5]]), ctx[:2])
    assert lp[0] == -np.inf
    assert torch.isfinite(lp[1])
    fresh = hepflow.ConditionalINN(
        theta_dim=4, context_dim=3, depth=1, width=8, constraints=[Box([0], low=0.0, high=1.0)]
    )
    with pytest.raises(InputError, match="outside the constraints"):
        hepflow.fit(fresh, theta + 1.0, ctx, epochs=1)


def test_dict_context_with_jets_and_dequantized_counts():
    torch.manual_seed(0)
    n, n_max = 2000, 10
    n_jets = torch.randint(0, n_max + 1, (n,))
    mask = torch.arange(n_max)[None] < n_jets[:, None]
    jets = torch.randn(n, n_max, 3) * mask[..., None]
    theta = torch.randn(n, 2)
    jets[..., 0] += theta[:, :1]  # jet feature carries theta_0
    flat = torch.stack([n_jets.float(), theta[:, 1] + 0.1 * torch.randn(n)], 1)
    summary = Combined(flat=MLPSummary(2, 8, width=16), jets=SetSummary(3, 8, width=16, heads=2))
    model = hepflow.ConditionalINN(theta_dim=2, summary=summary, depth=2, width=32, dequantize={"flat": [0]})
    assert model.context_keys == ["flat", "jets", "mask"]
    ctx = {"flat": flat, "jets": jets, "mask": mask}
    h = hepflow.fit(model, theta, ctx, epochs=3, seed=0, batch_size=128)
    assert h.val_loss[-1] < h.val_loss[0]
    sub = {k: v[:3] for k, v in ctx.items()}
    assert model.sample(10, sub).shape == (3, 10, 2)
    assert model.log_prob(theta[:3], {k: v.numpy() for k, v in sub.items()}).shape == (3,)
    with pytest.raises(InputError, match="missing key"):
        model.log_prob(theta[:3], {"flat": flat[:3]})


def test_flow_architecture_options_build_a_model():
    import pytest

    from hepflow.errors import ConfigError
    from hepflow.flows.config import FlowArchitecture

    arch = FlowArchitecture(blocks="affine", depth=2, width=8)
    model = hepflow.ConditionalINN(theta_dim=2, context_dim=3, **arch.inn_options())
    assert model.config()["depth"] == 2
    with pytest.raises(ConfigError, match=r"bins: expected an integer in \[1, 16384\], got 0"):
        FlowArchitecture(bins=0)


@pytest.mark.parametrize(
    ("context_dim", "kind"), [(3, "IdentitySummary"), (32, "IdentitySummary"), (33, "MLPSummary")]
)
def test_default_summary_for_flat_contexts(context_dim, kind, tmp_path):
    """A flat context of at most embedding_dim features conditions the couplings directly; a
    wider one is compressed to embedding_dim by an MLP. The choice is saved with the model."""
    model = hepflow.ConditionalINN(2, context_dim, depth=1, width=8, seed=0)
    summary = model.context_encoder.summary
    assert type(summary).__name__ == kind
    assert summary.output_dim == min(context_dim, 32)
    assert model.flow.transforms[0].subnet.in_features == 1 + min(context_dim, 32)
    hepflow.save_model(model, tmp_path / "m")
    assert type(hepflow.load_model(tmp_path / "m").context_encoder.summary).__name__ == kind
