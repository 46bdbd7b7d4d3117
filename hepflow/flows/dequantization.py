"""Uniform dequantization of discrete context columns (counts, multiplicities, flavour codes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError

__all__ = ["Dequantize"]


class Dequantize(nn.Module):
    """Add uniform noise ``u ~ U[0, 1)`` to the integer columns ``columns`` of a ``(batch, F)`` tensor.

    A network conditioned on integers sees a few isolated values; dequantization spreads each
    integer ``k`` over ``[k, k + 1)`` so the conditional density is smooth in the context. In
    training mode the noise is random (drawn from torch's global generator, so seeded runs
    repeat); in evaluation mode the column is shifted to the cell centre ``k + 0.5``, so inference
    is deterministic. :meth:`inverse` recovers the integers with ``floor``.

    Example:
        >>> import torch
        >>> deq = Dequantize([1], features=2).eval()
        >>> deq(torch.tensor([[0.3, 4.0]]))
        tensor([[0.3000, 4.5000]])
    """

    def __init__(self, columns: Sequence[int], *, features: int) -> None:
        super().__init__()
        cols = sorted({int(c) for c in columns})
        for c in cols:
            if not 0 <= c < features:
                raise ConfigError(f"dequantize column {c} is outside the {features} context columns")
        self.columns = tuple(cols)
        self.features = features
        mask = torch.zeros(features)
        mask[list(cols)] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.mask.to(x.dtype)
        if self.training:
            return x + torch.rand_like(x) * mask
        return x + 0.5 * mask

    def inverse(self, x: Tensor) -> Tensor:
        """Back to the integers: ``floor`` on the discrete columns, identity elsewhere."""
        return torch.where(self.mask.bool(), torch.floor(x), x)

    def extra_repr(self) -> str:
        return f"columns={list(self.columns)}"
