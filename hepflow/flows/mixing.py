"""Fixed (non-trainable) mixing of the features between couplings.

Each coupling transforms only half of the features; a fixed mixing between couplings lets every
feature condition and be transformed in turn. Both maps are volume preserving (log-det 0) and
stored as buffers, so a saved model reproduces them exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hepflow.errors import ConfigError
from hepflow.flows.base import Transform

__all__ = ["Permutation", "RandomOrthogonal", "random_orthogonal"]


def random_orthogonal(n: int, *, generator: torch.Generator | None = None) -> Tensor:
    """A Haar-distributed random orthogonal ``n x n`` matrix (QR of a Gaussian, sign-fixed), float64.

    The buffer stays float64 (exactly orthogonal, so ``Q^T`` inverts it in double precision
    too) and is cast to the dtype of the input when applied.
    """
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def _fp32_mm(x: Tensor, m: Tensor) -> Tensor:
    # keep the mixing in the dtype of x under autocast (the flow's invertibility needs it)
    if m.dtype != x.dtype:
        m = m.to(x.dtype)
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return x @ m
    return x @ m


class RandomOrthogonal(Transform):
    """Multiply by a fixed random orthogonal matrix ``Q``: ``z = x Q``, ``|det Q| = 1``.

    Example:
        >>> import torch
        >>> mix = RandomOrthogonal(3, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(4, 3)
        >>> z, logdet = mix(x)
        >>> bool(torch.allclose(mix.inverse(z)[0], x, atol=1e-6)), float(logdet.abs().max())
        (True, 0.0)
    """

    def __init__(self, features: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if features < 1:
            raise ConfigError(f"RandomOrthogonal needs features >= 1, got {features}")
        self.features = features
        self.register_buffer("weight", random_orthogonal(features, generator=generator))

    volume_preserving = True

    def map(self, x: Tensor) -> Tensor:
        return _fp32_mm(x, self.weight)

    def unmap(self, z: Tensor) -> Tensor:
        return _fp32_mm(z, self.weight.t())

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.map(x), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.unmap(z), z.new_zeros(z.shape[0])


class Permutation(Transform):
    """Permute the features with a fixed random permutation (a reversal if ``generator`` is None).

    Example:
        >>> import torch
        >>> perm = Permutation(3)
        >>> perm(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, features: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if features < 1:
            raise ConfigError(f"Permutation needs features >= 1, got {features}")
        self.features = features
        if generator is None:
            perm = torch.arange(features - 1, -1, -1)
        else:
            perm = torch.randperm(features, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    volume_preserving = True

    def map(self, x: Tensor) -> Tensor:
        return x[:, self.perm]

    def unmap(self, z: Tensor) -> Tensor:
        return z[:, self.inverse_perm]

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.map(x), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.unmap(z), z.new_zeros(z.shape[0])
