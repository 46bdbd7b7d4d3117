"""Support transforms (box, simplex), dequantization and standardisation."""

from __future__ import annotations

import math

import pytest
import torch

from hepflow.errors import ConfigError, InputError
from hepflow.flows import Box, Dequantize, MomentumBound, Simplex, Standardize, Support
from hepflow.flows.constraints import constraint_from_config

from .conftest import jacobian_logdet

INF = math.inf


def _box_cases():
    return {
        "both": (Box([0, 1], low=[0.0, -2.0], high=[1.0, 5.0]), lambda n: torch.rand(n, 2) * 0.98 + 0.01),
        "lower": (Box([0], low=1.0), lambda n: 1.0 + torch.rand(n, 1) * 5 + 1e-3),
        "upper": (Box([0], high=-1.0), lambda n: -1.0 - torch.rand(n, 1) * 5 - 1e-3),
        "mixed": (
            Box([0, 1, 2, 3], low=[0.0, 0.0, -INF, -INF], high=[1.0, INF, 2.0, INF]),
            lambda n: torch.stack(
                [
                    torch.rand(n) * 0.9 + 0.05,
                    torch.rand(n) * 3 + 0.01,
                    2.0 - torch.rand(n) * 3 - 0.01,
                    torch.randn(n),
                ],
                1,
            ),
        ),
    }


@pytest.fixture(params=["both", "lower", "upper", "mixed"])
def box_case(request):
    torch.manual_seed(0)
    box, draw = _box_cases()[request.param]
    if request.param == "both":
        x = draw(8)
        x[:, 1] = x[:, 1] * 7 - 2
    else:
        x = draw(8)
    return box.double(), x.double()


def test_box_roundtrip_and_logdet(box_case):
    box, x = box_case
    assert bool(box.contains(x).all())
    u, ld = box(x)
    back, ld_inv = box.inverse(u)
    assert torch.allclose(back, x, atol=1e-9)
    assert torch.allclose(ld_inv, -ld, atol=1e-9)
    expected = jacobian_logdet(lambda r: box(r[None])[0][0], x)
    assert torch.allclose(ld, expected, atol=1e-8)


@pytest.mark.parametrize("name", ["both", "lower", "upper", "mixed"])
def test_box_inverse_never_leaves_support(name):
    box, _ = _box_cases()[name]
    u = torch.tensor([-1e6, -100.0, -30.0, 0.0, 30.0, 100.0, 1e6]).repeat_interleave(box.out_features)
    x, ld = box.inverse(u.reshape(-1, box.out_features))
    assert torch.isfinite(x).all()
    assert torch.isfinite(ld).all()
    assert bool(((x >= box.low) & (x <= box.high)).all())


def test_float32_rounding_onto_a_bound_stays_inside():
    """A float64 prior draw just inside a bound rounds onto it in float32: the model moves it to
    the nearest float32 inside (its log p stays finite), but a value on or beyond the bound in the
    input's own precision is still refused."""
    from hepflow import ConditionalINN

    box = Box([0], low=17.5, high=19.5)
    model = ConditionalINN(2, 1, constraints=[box], depth=1, width=8, seed=0)
    theta = torch.tensor([[19.5 - 1e-9, 0.0], [17.5 + 1e-9, 1.0], [18.0, 0.5]] * 4, dtype=torch.float64)
    assert not bool(box.contains(theta[:, :1].float()).all())  # what plain casting would do
    ctx = torch.zeros(12, 1, dtype=torch.float64)
    model.prepare(theta, ctx)
    lp = model.log_prob(theta, ctx)
    assert bool(torch.isfinite(lp).all())
    moved = model._theta(theta)[:, 0]
    assert float(moved[0]) < 19.5
    assert float(moved[1]) > 17.5
    on_bound = torch.tensor([[19.5, 0.0]] * 4, dtype=torch.float64)
    assert bool(torch.isinf(model.log_prob(on_bound, ctx[:4])).all())
    with pytest.raises(InputError, match="outside the constraints' support"):
        model.prepare(on_bound, ctx[:4], force=True)


def test_box_rejects_bad_bounds():
    with pytest.raises(ConfigError, match="low < high"):
        Box([0], low=1.0, high=0.0)
    with pytest.raises(ConfigError, match="2 values for 1 dims"):
        Box([0], low=[0.0, 1.0], high=2.0)


@pytest.mark.parametrize("coordinates", ["log_ratio", "stick_breaking"])
def test_simplex_roundtrip_logdet_and_support(coordinates):
    torch.manual_seed(0)
    simplex = Simplex([0, 1, 2, 3], coordinates=coordinates).double()
    x = torch.distributions.Dirichlet(torch.ones(4)).sample((6,)).double()
    u, ld = simplex(x)
    assert u.shape == (6, 3)
    back, ld_inv = simplex.inverse(u)
    assert torch.allclose(back, x, atol=1e-10)
    assert torch.allclose(ld_inv, -ld, atol=1e-10)

    # density with respect to the first K-1 components: x_K = 1 - sum(x_1..x_{K-1})
    def reduced(r):
        full = torch.cat([r, 1 - r.sum(0, keepdim=True)])
        return simplex(full[None])[0][0]

    expected = jacobian_logdet(reduced, x[:, :3])
    assert torch.allclose(ld, expected, atol=1e-8)
    x_ext, ld_ext = simplex.float().inverse(
        torch.tensor([[1e6, -1e6, 0.0], [-80.0, 80.0, 3.0], [0.0, 0.0, 0.0]])
    )
    assert bool((x_ext >= 0).all())
    assert torch.isfinite(ld_ext).all()
    assert torch.allclose(x_ext.sum(1), torch.ones(3), atol=1e-6)
    # gradients of the log-density through the inverse are finite at the extremes too
    u = torch.tensor([[1e3, -1e3, 0.0], [-80.0, 80.0, 3.0]], requires_grad=True)
    x_g, ld_g = simplex.float().inverse(u)
    (x_g.square().sum() + ld_g.sum()).backward()
    assert torch.isfinite(u.grad).all()


def test_simplex_stick_breaking_keeps_coordinates_finite_at_an_edge():
    """The last two fractions near zero: three log-ratio coordinates are extreme, one stick one is."""
    x = torch.tensor([[0.3, 0.5, 0.2 - 2e-9, 1e-9, 1e-9]], dtype=torch.float64)
    ratio, _ = Simplex(range(5)).double()(x)
    stick, _ = Simplex(range(5), coordinates="stick_breaking").double()(x)
    assert (ratio[0, :3] > 15).all()  # H, He, N against Fe
    assert stick[0, 0] == pytest.approx(math.log(0.3 / 0.7))
    assert stick[0, 1] == pytest.approx(math.log(0.5 / 0.2))
    assert stick[0, 2] > 15  # N against Si + Fe
    assert stick[0, 3] == pytest.approx(0.0, abs=1e-9)  # Si against Fe: equal
    with pytest.raises(ConfigError, match="'log_ratio' or 'stick_breaking'"):
        Simplex([0, 1], coordinates="ilr")


def test_support_combines_constraints_and_free_dims():
    torch.manual_seed(0)
    support = Support(6, [Simplex([5, 1, 3]), Box([0], low=0.0, high=2.0)]).double()
    assert support.out_features == 5
    frac = torch.distributions.Dirichlet(torch.ones(3)).sample((7,)).double()
    theta = torch.randn(7, 6, dtype=torch.float64)
    theta[:, [5, 1, 3]] = frac
    theta[:, 0] = torch.rand(7, dtype=torch.float64) * 1.8 + 0.1
    assert bool(support.contains(theta).all())
    u, ld = support(theta)
    back, ld_inv = support.inverse(u)
    assert torch.allclose(back, theta, atol=1e-10)
    assert torch.allclose(ld, -ld_inv, atol=1e-10)
    assert not bool(support.contains(theta + 5).any())
    inside = support.interior(torch.float64)
    assert bool(support.contains(inside[None]).all())


def test_support_validation():
    with pytest.raises(ConfigError, match="outside"):
        Support(2, [Box([2], low=0.0, high=1.0)])
    with pytest.raises(ConfigError, match="two constraints"):
        Support(3, [Box([0], low=0.0, high=1.0), Simplex([0, 1])])


@pytest.mark.parametrize(
    "con",
    [
        Box([0, 2], low=[0.0, -INF], high=[1.0, 3.0]),
        Simplex([1, 2, 3], atol=1e-3),
        Simplex([1, 2, 3], coordinates="stick_breaking"),
        MomentumBound([2, 0, 1], pt_max=1500.0, pz_max=4000.0),
    ],
)
def test_constraint_config_roundtrip(con):
    import json

    rebuilt = constraint_from_config(json.loads(json.dumps(con.config())))
    assert rebuilt.config() == con.config()


def _momenta(n: int) -> torch.Tensor:
    """(px, py, eta) of neutrino-like particles inside |px|, |py| < 2000 and |pz| < 5000."""
    g = torch.Generator().manual_seed(4)
    pt = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * 3)  # 1 GeV to 1 TeV
    phi = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    eta_max = torch.asinh(5000.0 / pt)
    eta = (torch.rand(n, generator=g, dtype=torch.float64) * 1.98 - 0.99) * eta_max
    return torch.stack((pt * torch.cos(phi), pt * torch.sin(phi), eta), 1)


def test_momentum_bound_roundtrip_and_logdet():
    bound = MomentumBound([0, 1, 2], pt_max=2000.0, pz_max=5000.0)
    x = _momenta(16)
    assert bool(bound.contains(x).all())
    u, ld = bound(x)
    back, ld_inv = bound.inverse(u)
    assert torch.allclose(back, x, rtol=1e-9, atol=1e-9)
    assert torch.allclose(ld_inv, -ld, atol=1e-8)
    assert torch.allclose(ld, jacobian_logdet(lambda r: bound(r[None])[0][0], x), atol=1e-8)
    assert torch.allclose(ld_inv, jacobian_logdet(lambda r: bound.inverse(r[None])[0][0], u), atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_momentum_bound_inverse_never_leaves_the_bounds(dtype):
    """Even at u = +-1e6 (tanh saturated) every value is strictly inside, pz included, and
    contains() agrees: float32 rounding never lands a sample on a bound."""
    bound = MomentumBound([0, 1, 2], pt_max=2000.0, pz_max=5000.0)
    grid = torch.tensor([-1e6, -40.0, -3.0, 0.0, 3.0, 40.0, 1e6], dtype=dtype)
    u = torch.cartesian_prod(grid, grid, grid)
    x, _ = bound.inverse(u)
    pz = torch.hypot(x[:, 0], x[:, 1]) * torch.sinh(x[:, 2])
    assert torch.isfinite(x).all()
    assert bool((x[:, :2].abs() < 2000).all())
    assert bool((pz.abs() < 5000).all())
    assert float(pz.abs().max()) > 4999  # the bound is reached, not a narrower one
    assert bool(bound.contains(x).all())


def test_momentum_bound_contains():
    bound = MomentumBound([0, 1, 2], pt_max=2000.0, pz_max=5000.0)
    x = torch.tensor(
        [
            [100.0, 0.0, 4.5],  # pz 4500
            [100.0, 0.0, -4.7],  # pz -5497
            [2100.0, 0.0, 0.0],  # px beyond pt_max
            [0.0, -2001.0, 0.0],
            [0.0, 0.0, 20.0],  # pT = 0 counts as 1e-6 GeV: |eta| < asinh(5e9) = 23.0
            [float("nan"), 0.0, 0.0],
        ]
    )
    assert bound.contains(x).tolist() == [True, False, False, False, True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dims": [0, 1], "pt_max": 1.0, "pz_max": 1.0}, "MomentumBound needs 3 dims"),
        ({"dims": [0, 1, 2], "pt_max": 0.0, "pz_max": 1.0}, "pt_max must be finite and positive, got 0.0"),
        ({"dims": [0, 1, 2], "pt_max": 1.0, "pz_max": INF}, "pz_max must be finite and positive, got inf"),
    ],
)
def test_momentum_bound_rejects_bad_bounds(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MomentumBound(kwargs.pop("dims"), **kwargs)


def test_simplex_config_without_coordinates_is_the_log_ratio():
    """Models saved before the stick-breaking choice existed load with the log-ratio."""
    assert constraint_from_config({"type": "Simplex", "dims": [0, 1, 2]}).coordinates == "log_ratio"


def test_dequantize_train_and_eval():
    torch.manual_seed(0)
    deq = Dequantize([0, 2], features=3)
    x = torch.tensor([[3.0, 0.25, 7.0]]).repeat(1000, 1)
    y = deq(x)
    assert torch.equal(y[:, 1], x[:, 1])
    noise = y[:, [0, 2]] - x[:, [0, 2]]
    assert bool(((noise >= 0) & (noise < 1)).all())
    assert noise.std() > 0.2
    assert torch.equal(deq.inverse(y), x)
    deq.eval()
    assert torch.equal(deq(x), x + torch.tensor([0.5, 0.0, 0.5]))
    assert torch.isfinite(deq(torch.full((2, 3), 1e30))).all()
    with pytest.raises(ConfigError, match="column 5"):
        Dequantize([5], features=3)


def test_dequantize_sets():
    deq = Dequantize([1], features=2).eval()
    jets = torch.zeros(4, 10, 2)
    assert torch.equal(deq(jets)[..., 1], torch.full((4, 10), 0.5))


def test_standardize_fit_masked_and_inverse():
    torch.manual_seed(0)
    std = Standardize((2,))
    x = torch.randn(3000, 2) * torch.tensor([3.0, 0.1]) + torch.tensor([10.0, -4.0])
    std.fit(x)
    z = std(x)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(2), atol=1e-3)
    assert torch.allclose(std.inverse(z), x, atol=1e-4)
    # sets: statistics over the valid elements only
    jets = torch.randn(500, 10, 2) + 5.0
    mask = torch.rand(500, 10) > 0.5
    jets[~mask] = 0.0
    sset = Standardize((2,))
    sset.fit(jets, mask)
    assert torch.allclose(sset.mean, torch.full((2,), 5.0), atol=0.1)
    # constant features are shifted, not blown up
    const = Standardize((1,))
    const.fit(torch.full((10, 1), 3.0))
    assert float(const.std) == 1.0
    glob = Standardize(())
    glob.fit(torch.rand(100, 8, 8) * 4)
    assert glob.mean.shape == ()
