"""Conditional rational-quadratic spline coupling (Durkan et al. 2019, "Neural Spline Flows").

Inside ``[-bound, bound]`` each transformed feature goes through a monotonic rational-quadratic
spline with ``bins`` bins; outside it the map is the identity (linear tails with slope 1, which
the boundary derivatives of the spline match). Every intermediate quantity is computed from
inputs clamped to the interval, so no finite input produces NaN or inf, and gradients of the
unused branch stay finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hepflow.errors import ConfigError
from hepflow.flows.base import MLP, Transform

__all__ = ["SplineCoupling", "rational_quadratic_spline"]

# softplus(_DERIV_SHIFT) + MIN_DERIVATIVE == 1: a zero subnet output gives the identity map
MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
_DERIV_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _softmax(u: Tensor) -> Tensor:
    # softmax over the (short) last dimension written out: torch's CPU kernel is up to 7x slower
    # for a last dimension of ~10 bins, and sampling time is dominated by it
    e = torch.exp(u - u.amax(-1, keepdim=True).detach())
    return e / e.sum(-1, keepdim=True)


def _knots(u: Tensor, bound: float) -> Tensor:
    """Knot positions ``(..., K+1)`` from unnormalised bin sizes ``(..., K)``."""
    k = u.shape[-1]
    p = _softmax(u) * (1.0 - MIN_BIN * k) + MIN_BIN
    cum = torch.cat((torch.zeros_like(p[..., :1]), torch.cumsum(p, -1)), -1)
    return cum * (2.0 * bound) - bound


def rational_quadratic_spline(
    x: Tensor, uw: Tensor, uh: Tensor, ud: Tensor, *, bound: float, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Apply a monotonic rational-quadratic spline elementwise, identity outside ``[-bound, bound]``.

    Arguments:
        x: inputs ``(..., D)``.
        uw, uh: unnormalised bin widths and heights ``(..., D, K)``.
        ud: unconstrained interior knot derivatives ``(..., D, K-1)``.
        bound: half-width of the spline interval.
        inverse: evaluate the inverse spline.

    Returns:
        ``(y, logabsdet)`` with ``logabsdet`` elementwise ``(..., D)`` (of the map applied).

    Example:
        >>> import torch
        >>> x = torch.tensor([[-1e6, -5.0, 0.3, 5.0, 1e6]])
        >>> u = torch.randn(1, 5, 8)
        >>> y, ld = rational_quadratic_spline(x, u, u, u[..., :7], bound=5.0)
        >>> bool(torch.isfinite(y).all() and torch.isfinite(ld).all())
        True
    """
    kx = _knots(uw, bound)
    ky = _knots(uh, bound)
    inner = F.softplus(ud + _DERIV_SHIFT) + MIN_DERIVATIVE
    one = torch.ones_like(inner[..., :1])
    d = torch.cat((one, inner, one), -1)  # slope 1 at both ends matches the linear tails

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots = ky if inverse else kx
    # bin index by counting interior knots below the input: no searchsorted, ONNX-friendly
    idx = (xc.unsqueeze(-1) >= knots[..., 1:-1]).sum(-1, keepdim=True)

    # the two knots around each input: gathering them from the knot tensors is cheaper than
    # stacking a per-bin table of all six quantities first (~35 % of this function on CPU)
    pair = torch.cat((idx, idx + 1), -1)
    x_k, x_k1 = torch.gather(kx, -1, pair).unbind(-1)
    y_k, y_k1 = torch.gather(ky, -1, pair).unbind(-1)
    d_k, d_k1 = torch.gather(d, -1, pair).unbind(-1)
    w_k, h_k = x_k1 - x_k, y_k1 - y_k
    s = h_k / w_k
    c1 = d_k1 + d_k - 2.0 * s

    if inverse:
        dy = xc - y_k
        a = h_k * (s - d_k) + dy * c1
        b = h_k * d_k - dy * c1
        cc = -s * dy
        disc = (b * b - 4.0 * a * cc).clamp_min(0.0)
        xi = ((2.0 * cc) / (-b - disc.sqrt())).clamp(0.0, 1.0)
        out = x_k + xi * w_k
    else:
        xi = ((xc - x_k) / w_k).clamp(0.0, 1.0)

    xi1 = xi * (1.0 - xi)
    den = s + c1 * xi1
    if not inverse:
        out = y_k + h_k * (s * xi * xi + d_k * xi1) / den
    num = d_k1 * xi * xi + 2.0 * s * xi1 + d_k * (1.0 - xi) * (1.0 - xi)
    logdet = 2.0 * torch.log(s) + torch.log(num) - 2.0 * torch.log(den)
    if inverse:
        logdet = -logdet
    return torch.where(inside, out, x), torch.where(inside, logdet, torch.zeros_like(logdet))


class SplineCoupling(Transform):
    """Rational-quadratic spline coupling: the first half of the features conditions the second.

    A subnet of ``(x1, c)`` predicts, for each feature of ``x2``, ``bins`` widths and heights
    and ``bins - 1`` interior derivatives of a monotonic spline on ``[-bound, bound]``; outside
    the interval the map is the identity. The spline math runs in the dtype of ``x`` (fp32
    under mixed precision).

    Example:
        >>> import torch
        >>> block = SplineCoupling(3, 2, width=16)
        >>> x, c = torch.randn(8, 3), torch.randn(8, 2)
        >>> z, logdet = block(x, c)
        >>> x2, _ = block.inverse(z, c)
        >>> bool(torch.allclose(x, x2, atol=1e-5))
        True
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        bins: int = 8,
        bound: float = 5.0,
        width: int = 128,
        layers: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if features < 1:
            raise ConfigError(f"SplineCoupling needs features >= 1, got {features}")
        if bins < 2:
            raise ConfigError(f"a spline needs bins >= 2, got {bins}")
        if not bound > 0:
            raise ConfigError(f"the spline bound must be positive, got {bound}")
        self.features = features
        self.split = features // 2
        if self.split + context == 0:
            raise ConfigError("a SplineCoupling of a single feature needs a context (context > 0)")
        self.bins = bins
        self.bound = float(bound)
        d2 = features - self.split
        self.subnet = MLP(
            self.split + context,
            d2 * (3 * bins - 1),
            width=width,
            layers=layers,
            act=activation,
            last_scale=0.01,
        )

    def _transform(self, x: Tensor, c: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        k = self.bins
        p = self.subnet(x1, c)
        if p.dtype != x.dtype:  # mixed precision: the spline math runs in the dtype of x
            p = p.to(x.dtype)
        p = p.view(-1, self.features - self.split, 3 * k - 1)
        y2, ld = rational_quadratic_spline(
            x2, p[..., :k], p[..., k : 2 * k], p[..., 2 * k :], bound=self.bound, inverse=inverse
        )
        return torch.cat((x1, y2), 1), ld.sum(1)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(x, c, inverse=False)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._transform(z, c, inverse=True)
