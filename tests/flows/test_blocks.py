"""Every invertible block: invertibility, log-det against autograd, shapes, gradients, extremes."""

from __future__ import annotations

import pytest
import torch

from hepflow.flows import ActNorm, AffineCoupling, Flow, Permutation, RandomOrthogonal, SplineCoupling
from hepflow.flows.spline import rational_quadratic_spline

from .conftest import jacobian_logdet

D, C = 4, 3


def _affine():
    return AffineCoupling(D, C, width=16)


def _affine_tanh():
    return AffineCoupling(D, C, width=16, clamp_kind="tanh", clamp=1.5)


def _spline():
    return SplineCoupling(D, C, width=16, bins=6, bound=3.0)


def _spline_1d():
    return SplineCoupling(1, C, width=16, bins=5, bound=3.0)


def _actnorm():
    block = ActNorm(D)
    block.initialize(2.0 + 3.0 * torch.randn(64, D))
    return block


def _orthogonal():
    return RandomOrthogonal(D, generator=torch.Generator().manual_seed(1))


def _permutation():
    return Permutation(D, generator=torch.Generator().manual_seed(1))


def _flow():
    return Flow([_spline(), _actnorm(), _orthogonal(), _affine(), _permutation()])


BLOCKS = {
    "affine": _affine,
    "affine-tanh": _affine_tanh,
    "spline": _spline,
    "spline-1d": _spline_1d,
    "actnorm": _actnorm,
    "orthogonal": _orthogonal,
    "permutation": _permutation,
    "flow": _flow,
}


def _make(name: str, scale: float = 0.3) -> torch.nn.Module:
    torch.manual_seed(0)
    block = BLOCKS[name]().double().eval()
    # make the couplings far from the identity so the checks mean something
    with torch.no_grad():
        for p in block.parameters():
            p.add_(scale * torch.randn_like(p))
    return block


def _dim(block) -> int:
    return 1 if isinstance(block, SplineCoupling) and block.features == 1 else D


@pytest.fixture(params=list(BLOCKS))
def block(request):
    return _make(request.param)


def test_shapes_and_invertibility(block):
    d = _dim(block)
    x, c = torch.randn(32, d, dtype=torch.float64) * 2, torch.randn(32, C, dtype=torch.float64)
    z, ld = block(x, c)
    assert z.shape == (32, d)
    assert ld.shape == (32,)
    x2, ld_inv = block.inverse(z, c)
    assert torch.allclose(x2, x, atol=1e-5)
    assert torch.allclose(ld_inv, -ld, atol=1e-5)


def test_logdet_matches_autograd_jacobian(block):
    d = _dim(block)
    x, c = torch.randn(5, d, dtype=torch.float64) * 2, torch.randn(5, C, dtype=torch.float64)
    _, ld = block(x, c)
    expected = torch.stack(
        [
            jacobian_logdet(lambda r, i=i: block(r[None], c[i : i + 1])[0][0], x[i : i + 1])[0]
            for i in range(5)
        ]
    )
    assert torch.allclose(ld, expected, atol=1e-6)
    z, _ = block(x, c)
    _, ld_inv = block.inverse(z, c)
    expected_inv = torch.stack(
        [
            jacobian_logdet(lambda r, i=i: block.inverse(r[None], c[i : i + 1])[0][0], z[i : i + 1])[0]
            for i in range(5)
        ]
    )
    assert torch.allclose(ld_inv, expected_inv, atol=1e-6)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_float32_invertibility(name):
    # a moderately trained-looking block: strongly perturbed splines get flat bins whose float32
    # inverse is ill-conditioned (the float64 tests above cover those)
    block = _make(name, scale=0.1).float()
    d = _dim(block)
    x, c = torch.randn(256, d), torch.randn(256, C)
    z, _ = block(x, c)
    assert torch.allclose(block.inverse(z, c)[0], x, atol=1e-5)


def test_gradients_reach_every_parameter(block):
    d = _dim(block)
    block.train()
    x = torch.randn(64, d, dtype=torch.float64, requires_grad=True)
    c = torch.randn(64, C, dtype=torch.float64)
    z, ld = block(x, c)
    (0.5 * (z**2).sum(1) - ld).mean().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_extreme_inputs_stay_finite(block, direction):
    d = _dim(block)
    bound = block.transforms[0].bound if isinstance(block, Flow) else getattr(block, "bound", 3.0)
    vals = torch.tensor([1e6, -1e6, bound, -bound, 0.0, 1e-30, bound * (1 + 1e-7), -bound * (1 - 1e-7)])
    x = vals.repeat_interleave(d).reshape(-1, d).double()
    x = torch.cat([x, x.roll(1, 1)]).requires_grad_(True)
    c = torch.randn(x.shape[0], C, dtype=torch.float64)
    fn = block if direction == "forward" else block.inverse
    z, ld = fn(x, c)
    assert torch.isfinite(z).all()
    assert torch.isfinite(ld).all()
    (z.sum() + ld.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_spline_tails_are_identity_and_continuous():
    torch.manual_seed(0)
    u = torch.randn(4, 2, 8, dtype=torch.float64)
    x = torch.tensor([[-7.0, 9.0], [1e6, -1e6], [5.0, -5.0], [5.0 - 1e-9, -5.0 + 1e-9]], dtype=torch.float64)
    y, ld = rational_quadratic_spline(x, u, u.flip(-1), u[..., :7], bound=5.0)
    assert torch.equal(y[:2], x[:2])
    assert torch.equal(ld[:2], torch.zeros_like(ld[:2]))
    assert torch.allclose(y[2:], x[2:], atol=1e-6)  # the spline maps the bounds to themselves
    assert torch.allclose(ld[2:], torch.zeros_like(ld[2:]), atol=1e-6)  # slope 1 at the bounds


def test_spline_inverse_at_bins_edges():
    torch.manual_seed(1)
    u = torch.randn(1, 1, 4)
    ud = torch.randn(1, 1, 3)
    from hepflow.flows.spline import _knots

    knots = _knots(u, 2.0)[0, 0]
    x = knots.reshape(-1, 1)
    uu = u.expand(x.shape[0], 1, 4)
    y, _ = rational_quadratic_spline(x, uu, uu.flip(-1), ud.expand(x.shape[0], 1, 3), bound=2.0)
    back, _ = rational_quadratic_spline(
        y, uu, uu.flip(-1), ud.expand(x.shape[0], 1, 3), bound=2.0, inverse=True
    )
    assert torch.allclose(back, x, atol=1e-5)


def test_couplings_start_near_identity():
    torch.manual_seed(0)
    x, c = torch.randn(16, D), torch.randn(16, C)
    for block in (AffineCoupling(D, C), SplineCoupling(D, C)):
        z, ld = block(x, c)
        assert torch.allclose(z, x, atol=0.1)
        assert ld.abs().max() < 0.1


def test_actnorm_data_initialisation():
    torch.manual_seed(0)
    norm = ActNorm(3)
    x = torch.randn(500, 3) * torch.tensor([0.1, 2.0, 30.0]) + torch.tensor([5.0, -1.0, 100.0])
    z, _ld = norm(x)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(3), atol=1e-3)
    assert bool(norm.initialized)
    before = norm.log_scale.detach().clone()
    norm(torch.randn(10, 3))  # no re-initialisation on later batches
    assert torch.equal(norm.log_scale.detach(), before)
    fresh = ActNorm(3)
    fresh.load_state_dict(norm.state_dict())
    assert fresh._initialized
    fresh(torch.randn(10, 3))
    assert torch.equal(fresh.log_scale.detach(), before)


def test_actnorm_no_init_in_eval_mode():
    norm = ActNorm(2).eval()
    x = torch.randn(8, 2) * 5
    z, _ld = norm(x)
    assert torch.equal(z, x)
    assert not norm._initialized


def test_orthogonal_is_orthogonal():
    mix = RandomOrthogonal(6, generator=torch.Generator().manual_seed(3))
    q = mix.weight.double()
    assert torch.allclose(q @ q.T, torch.eye(6, dtype=torch.float64), atol=1e-6)


def test_orthogonal_keeps_fp32_under_autocast():
    mix = RandomOrthogonal(3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(10, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, _ = mix(x)
        back, _ = mix.inverse(z)
    assert z.dtype == torch.float32
    assert torch.allclose(back, x, atol=1e-5)


def test_affine_clamp_bounds_the_log_scale():
    block = AffineCoupling(2, 1, width=8, clamp=0.5)
    with torch.no_grad():
        block.subnet.biases[-1].fill_(1e4)
    _, ld = block(torch.randn(5, 2), torch.randn(5, 1))
    assert (ld.abs() <= 0.5 + 1e-6).all()
