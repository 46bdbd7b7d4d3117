"""Standardisation stored inside the model as buffers, so a saved model is self-contained."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Standardize"]


class Standardize(nn.Module):
    """Affine map ``(x - mean) / std`` with buffers fitted on training data.

    ``shape`` is the shape of the statistics: ``(F,)`` for per-feature statistics of a
    ``(..., F)`` tensor (flat features, or the elements of a set), ``()`` for one global mean and
    standard deviation (histograms, images). Before :meth:`fit` the map is the identity.

    Example:
        >>> import torch
        >>> std = Standardize((2,))
        >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
        >>> std.fit(x)
        >>> std(x)
        tensor([[-1., -1.],
                [ 1.,  1.]])
    """

    def __init__(self, shape: tuple[int, ...] = (), *, eps: float = 1e-8) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.eps = eps
        self.register_buffer("mean", torch.zeros(self.shape))
        self.register_buffer("std", torch.ones(self.shape))

    @torch.no_grad()
    def fit(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Fit mean and standard deviation on ``x`` (elements where ``mask`` is true, if given).

        Constant features get ``std = 1``, so they are shifted but never blown up.
        """
        x = x.detach().to(torch.float64)
        if mask is not None:
            x = x[mask.bool()]
        n = len(self.shape)
        flat = x.reshape(-1, *x.shape[x.dim() - n :]) if n else x.reshape(-1)
        if flat.shape[0] == 0:
            return
        mean = flat.mean(0)
        std = flat.std(0, unbiased=False) if flat.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > self.eps * (1.0 + mean.abs()), std, torch.ones_like(std))
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, x: Tensor) -> Tensor:
        return x * self.std.to(x.dtype) + self.mean.to(x.dtype)

    def log_abs_det(self) -> Tensor:
        """``log|det|`` of the forward map for one sample (a scalar)."""
        return -torch.log(self.std).sum() if self.shape else -torch.log(self.std)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
