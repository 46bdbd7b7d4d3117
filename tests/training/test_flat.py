"""FlatParameters: one contiguous parameter/gradient buffer gives the same training as separate tensors."""

from __future__ import annotations

import pytest
import torch

import hepflow
from hepflow.training.fit import _clip, _make_optimizer
from hepflow.training.flat import FlatParameters


def _model() -> hepflow.ConditionalINN:
    return hepflow.ConditionalINN(3, 2, blocks="affine", depth=2, width=16, seed=4)


def _train(model: torch.nn.Module, *, flat: bool, steps: int = 5) -> None:
    gen = torch.Generator().manual_seed(0)
    theta, ctx = torch.randn(64, 3, generator=gen), torch.randn(64, 2, generator=gen)
    model.prepare(theta, ctx)
    holder = FlatParameters(model.parameters()) if flat else None
    params = holder.flat if holder else [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(params, 1e-2, 1e-5)
    for _ in range(steps):
        model.training_loss(theta, ctx).backward()
        _clip(params, 0.5)  # small: the clipping is active
        opt.step()
        if holder:
            holder.zero_grad()
        else:
            opt.zero_grad(set_to_none=True)
    if holder:
        holder.release()


def test_flat_training_equals_per_tensor_training():
    a, b = _model(), _model()
    _train(a, flat=False)
    _train(b, flat=True)
    changed = False
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
        changed |= not torch.equal(pa, _model().get_parameter(name))
    assert changed  # training moved the weights: the comparison is not between two initial states


def test_views_share_the_buffers_and_release_gives_own_storage():
    model = _model()
    params = [p for p in model.parameters() if p.requires_grad]
    flat = FlatParameters(model.parameters())
    assert len(flat.flat) == 1
    assert flat.flat[0].numel() == sum(p.numel() for p in params)
    base = flat.flat[0].data_ptr()
    assert all(base <= p.data_ptr() < base + 4 * flat.flat[0].numel() for p in params)
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        flat.flat[0].add_(1.0)  # an optimizer step on the buffer moves every parameter
    for p, old in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), old + 1.0)
    model.training_loss(torch.randn(8, 3), torch.randn(8, 2)).backward()
    assert flat.flat[0].grad.abs().sum() > 0
    flat.zero_grad()
    assert flat.flat[0].grad.abs().sum() == 0
    flat.release()
    ptrs = {p.data_ptr() for p in params}
    assert len(ptrs) == len(params)
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64)])
def test_groups_by_dtype(dtypes):
    net = torch.nn.ModuleList([torch.nn.Linear(2, 2).to(d) for d in dtypes])
    flat = FlatParameters(net.parameters())
    assert sorted(str(f.dtype) for f in flat.flat) == sorted(str(d) for d in dtypes)
    flat.release()
