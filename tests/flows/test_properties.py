"""Property-based tests of the coupling blocks: random sizes, contexts, batches and input scales.

For every drawn affine or spline coupling (weights moved far from the identity) and input
(values up to 1e6 in size): the outputs and log-determinants are finite both ways, the inverse
undoes the forward map, the log-determinants of the two directions cancel, and the forward
log-determinant equals the autograd Jacobian's.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hepflow.flows import AffineCoupling, SplineCoupling

from .conftest import jacobian_logdet

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def couplings(draw: st.DrawFn) -> tuple[torch.nn.Module, int, int]:
    kind = draw(st.sampled_from(["affine-atan", "affine-tanh", "spline"]))
    features = draw(st.integers(1, 6))
    context = draw(st.integers(1 if features == 1 else 0, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    torch.manual_seed(seed)
    if kind == "spline":
        block: torch.nn.Module = SplineCoupling(
            features,
            context,
            width=8,
            bins=draw(st.integers(2, 8)),
            bound=draw(st.sampled_from([1.0, 3.0, 5.0])),
        )
    else:
        block = AffineCoupling(features, context, width=8, clamp_kind=kind.split("-")[1])
    block = block.double().eval()
    with torch.no_grad():  # far from the identity, or the checks are trivial
        for p in block.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return block, features, context


@st.composite
def inputs(
    draw: st.DrawFn, features: int, context: int, max_batch: int = 16, special: bool = True
) -> tuple[torch.Tensor, ...]:
    batch = draw(st.integers(1, max_batch))
    scale = draw(st.sampled_from([1e-3, 1.0, 4.0, 100.0, 1e6]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(batch, features, generator=g, dtype=torch.float64)
    if special and draw(st.booleans()):  # some exact values: zeros, the spline bounds, huge
        values = torch.tensor([0.0, 1.0, -1.0, 3.0, -5.0, 5.0, 1e6, -1e6], dtype=torch.float64)
        idx = torch.randint(0, values.numel(), x.shape, generator=g)
        x = torch.where(torch.rand(x.shape, generator=g) < 0.3, values[idx], x)
    c = torch.randn(batch, context, generator=g, dtype=torch.float64) if context else None
    return x, c


@SETTINGS
@given(data=st.data())
def test_finite_invertible_and_consistent_log_det(data):
    block, features, context = data.draw(couplings())
    x, c = data.draw(inputs(features, context))
    with torch.no_grad():
        z, ld = block(x, c)
        x_back, ld_inv = block.inverse(z, c)
        _, ld_back = block(x_back, c)
        # the inverse direction from arbitrary points too
        y, ld_y = block.inverse(x, c)
        x_fwd, ld_fwd = block(y, c)
        _, ld_y_back = block.inverse(x_fwd, c)
    for t in (z, ld, x_back, ld_inv, ld_back, y, ld_y, x_fwd, ld_fwd, ld_y_back):
        assert torch.isfinite(t).all()
    assert z.shape == y.shape == x.shape
    assert ld.shape == ld_y.shape == (x.shape[0],)
    # the conditioning half passes through unchanged
    assert torch.equal(z[:, : features // 2], x[:, : features // 2])
    # round trips, to rounding relative to the largest value in the row
    size = 1.0 + torch.maximum(x.abs(), z.abs()).amax(1, keepdim=True)
    assert ((x_back - x).abs() <= 1e-9 * size).all()
    size = 1.0 + torch.maximum(x.abs(), y.abs()).amax(1, keepdim=True)
    assert ((x_fwd - x).abs() <= 1e-9 * size).all()
    # log-dets of the two directions cancel, to rounding where the map is well conditioned; an
    # input of 1e6 saturates the spline's bins (slopes down to e^-25, bins of 1e-3 of the
    # interval), where a rounding-sized position error moves the log-det: there only finiteness
    # and the round trips above are required
    moderate = x.abs().amax(1) <= 10.0
    for a, b in ((ld_back, ld_inv), (ld_y_back, ld_fwd), (ld, ld_inv), (ld_y, ld_fwd)):
        err, scale = (a + b).abs(), 1.0 + b.abs()
        assert (err[moderate] <= 1e-8 * scale[moderate]).all()


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_log_det_matches_autograd_jacobian(data):
    block, features, context = data.draw(couplings())
    # no exact spline bounds: autograd takes the clamp's one-sided derivative there
    x, c = data.draw(inputs(features, context, max_batch=3, special=False))
    x = x.clamp(-50.0, 50.0)  # moderate subnet inputs: a well-conditioned map
    expected = []
    for i in range(x.shape[0]):
        ci = None if c is None else c[i : i + 1]
        expected.append(jacobian_logdet(lambda row, ci=ci: block(row[None], ci)[0][0], x[i : i + 1])[0])
    _, ld = block(x, c)
    assert torch.allclose(ld.detach(), torch.stack(expected), atol=1e-7, rtol=1e-7)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_batch_rows_are_independent(data):
    """A row's output does not depend on the other rows of the batch (eval mode)."""
    block, features, context = data.draw(couplings())
    x, c = data.draw(inputs(features, context))
    with torch.no_grad():
        z, ld = block(x, c)
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        zp, ldp = block(x[perm], None if c is None else c[perm])
    assert torch.allclose(zp, z[perm], rtol=1e-10, atol=1e-10)
    assert torch.allclose(ldp, ld[perm], rtol=1e-10, atol=1e-10)
