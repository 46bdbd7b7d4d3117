"""FlowEnsemble: the mixture's sampling split, density, and the grouped density of ConditionalINN."""

from __future__ import annotations

import math

import pytest
import torch

import hepflow
from hepflow.errors import InputError, ModelError
from hepflow.flows import FlowEnsemble, Simplex


def member(seed: int, **kw) -> hepflow.ConditionalINN:
    kw.setdefault("depth", 2)
    kw.setdefault("width", 16)
    model = hepflow.ConditionalINN(3, 2, seed=seed, **kw).double().eval()  # float64: exact comparisons
    with torch.no_grad():  # move the members apart: an untrained flow is close to the identity
        g = torch.Generator().manual_seed(seed)
        for p in model.flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("blocks", ["affine", "spline"])
def test_grouped_density_equals_the_per_event_density(blocks):
    model = member(1, blocks=blocks, constraints=[Simplex([0, 1, 2])])
    ctx = torch.randn(4, 2, dtype=torch.float64)
    x, lp = model.sample(9, ctx, return_log_prob=True)
    grouped = model.log_prob_grouped(x, ctx)
    direct = model.log_prob(x.reshape(-1, 3), ctx.repeat_interleave(9, 0)).reshape(4, 9)
    torch.testing.assert_close(grouped, direct.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grouped, lp, atol=1e-4, rtol=1e-5)
    outside = x.clone()
    outside[0, 0, 0] = -0.5  # a negative fraction
    assert math.isinf(float(model.log_prob_grouped(outside, ctx)[0, 0]))
    with pytest.raises(InputError, match=r"expected \(n_obs, n, 3\)"):
        model.log_prob_grouped(x[0], ctx)
    with pytest.raises(InputError, match="4 observations but the context has 3"):
        model.log_prob_grouped(x, ctx[:3])


@pytest.mark.parametrize("k", [2, 3])
def test_mixture_density_and_sampling_split(k):
    members = [member(s) for s in range(k)]
    ens = FlowEnsemble(members)
    assert len(ens) == k
    assert ens.counts(10) == [10 // k + (1 if i < 10 % k else 0) for i in range(k)]
    assert sum(ens.counts(10)) == 10
    ctx = torch.randn(3, 2, dtype=torch.float64)
    theta = torch.randn(3 * 5, 3, dtype=torch.float64)
    rows = ctx.repeat_interleave(5, 0)
    direct = torch.logsumexp(torch.stack([m.log_prob(theta, rows) for m in members]), 0) - math.log(k)
    torch.testing.assert_close(ens.log_prob(theta, rows), direct)
    x, lp = ens.sample(10, ctx, return_log_prob=True, generator=torch.Generator().manual_seed(3))
    assert x.shape == (3, 10, 3)
    torch.testing.assert_close(
        lp, ens.log_prob(x.reshape(-1, 3), ctx.repeat_interleave(10, 0)).reshape(3, 10)
    )
    again = ens.sample(10, ctx, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, x)  # the density does not consume randomness


def test_samples_come_from_every_member_in_proportion():
    """Members with well separated posteriors: each sample is attributable to one member."""
    members = [member(s) for s in (1, 2)]
    with torch.no_grad():  # shift member 1 far away through its standardisation
        members[1].theta_scaler.mean.add_(50.0)
    ens = FlowEnsemble(members)
    ctx = torch.randn(2, 2, dtype=torch.float64)
    x = ens.sample(1001, ctx, generator=torch.Generator().manual_seed(0))
    far = x[..., 0] > 25
    assert far.sum(dim=1).tolist() == [500, 500]  # counts(1001) = [501, 500]
    assert not far[0, :500].all()  # shuffled, not member after member


def test_members_must_agree():
    with pytest.raises(ModelError, match="at least two"):
        FlowEnsemble([member(1)])
    other = hepflow.ConditionalINN(2, 2, depth=2, width=16)
    with pytest.raises(ModelError, match="theta_dim"):
        FlowEnsemble([member(1), other])
