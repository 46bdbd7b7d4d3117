"""Conditional affine coupling (Real NVP / GLOW) with soft clamping of the log-scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hepflow.errors import ConfigError
from hepflow.flows.base import MLP, Transform

__all__ = ["AffineCoupling", "soft_clamp"]


def soft_clamp(s: Tensor, clamp: float, kind: str = "atan") -> Tensor:
    """Squash ``s`` smoothly into ``(-clamp, clamp)``; identity-like near zero.

    ``kind="atan"`` is ``clamp * 2/pi * atan(s / clamp)`` (Ardizzone et al.), ``"tanh"`` is
    ``clamp * tanh(s / clamp)``.
    """
    if kind == "atan":
        return torch.atan(s * (1.0 / clamp)) * (2.0 * clamp / math.pi)
    return torch.tanh(s * (1.0 / clamp)) * clamp


class AffineCoupling(Transform):
    """Affine coupling: the first half of the features conditions an affine map of the second.

    With ``x = (x1, x2)``: ``z1 = x1`` and ``z2 = x2 * exp(s) + t`` where ``(s_raw, t)`` come
    from a subnet of ``(x1, c)`` and ``s = soft_clamp(s_raw)`` keeps ``|s| < clamp``. The subnet
    is an MLP (``layers`` hidden layers of ``width`` units); its output is cast back to the
    dtype of ``x`` so the log-determinant math stays in fp32 under mixed precision.

    Arguments:
        features: number of features ``D`` transformed (the first ``D // 2`` condition the rest).
        context: size of the condition embedding ``c`` (0 for an unconditional block).

    Example:
        >>> import torch
        >>> block = AffineCoupling(4, 3, width=16)
        >>> x, c = torch.randn(8, 4), torch.randn(8, 3)
        >>> z, logdet = block(x, c)
        >>> x2, logdet_inv = block.inverse(z, c)
        >>> bool(torch.allclose(x, x2, atol=1e-6)), bool(torch.allclose(logdet, -logdet_inv))
        (True, True)
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        *,
        width: int = 128,
        layers: int = 2,
        clamp: float = 2.0,
        clamp_kind: str = "atan",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if features < 1:
            raise ConfigError(f"AffineCoupling needs features >= 1, got {features}")
        if clamp_kind not in ("atan", "tanh"):
            raise ConfigError(f"clamp_kind must be 'atan' or 'tanh', got {clamp_kind!r}")
        if clamp <= 0:
            raise ConfigError(f"clamp must be positive, got {clamp}")
        self.features = features
        self.split = features // 2
        if self.split + context == 0:
            raise ConfigError("an AffineCoupling of a single feature needs a context (context > 0)")
        self.clamp = float(clamp)
        self.clamp_kind = clamp_kind
        d2 = features - self.split
        self.subnet = MLP(
            self.split + context, 2 * d2, width=width, layers=layers, act=activation, last_scale=0.01
        )

    def _scale_shift(self, x1: Tensor, c: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        out = self.subnet(x1, c)
        if out.dtype != dtype:  # mixed precision: the coupling math runs in the dtype of x
            out = out.to(dtype)
        d2 = self.features - self.split
        return soft_clamp(out[:, :d2], self.clamp, self.clamp_kind), out[:, d2:]

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        s, t = self._scale_shift(x1, c, x.dtype)
        z2 = torch.addcmul(t, x2, s.exp())
        return torch.cat((x1, z2), 1), s.sum(1)

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z1, z2 = z[:, : self.split], z[:, self.split :]
        s, t = self._scale_shift(z1, c, z.dtype)
        x2 = (z2 - t) * torch.exp(-s)
        return torch.cat((z1, x2), 1), -s.sum(1)
