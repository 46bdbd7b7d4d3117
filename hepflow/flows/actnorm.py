"""Activation normalisation (Kingma & Dhariwal 2018) with data-dependent initialisation."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError
from hepflow.flows.base import Transform

__all__ = ["ActNorm"]


class ActNorm(Transform):
    """Per-feature affine map ``z = x * exp(log_scale) + bias`` with a learned scale and shift.

    The first forward pass in training mode initialises the parameters from that batch so that
    the outputs have zero mean and unit variance per feature; afterwards they are trained like
    any other parameter. The ``initialized`` buffer travels with the state dict, so a loaded model
    is never re-initialised.

    Example:
        >>> import torch
        >>> norm = ActNorm(2)
        >>> z, _ = norm(3.0 + 2.0 * torch.randn(1000, 2))
        >>> bool(z.mean(0).abs().max() < 1e-5), bool((z.std(0) - 1).abs().max() < 1e-4)
        (True, True)
    """

    def __init__(self, features: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        if features < 1:
            raise ConfigError(f"ActNorm needs features >= 1, got {features}")
        self.features = features
        self.eps = eps
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # mirror of the buffer, so that the training step never synchronises on it
        self._initialized = False
        self.register_load_state_dict_post_hook(_sync_flag)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set scale and shift so that ``x`` maps to zero mean and unit variance per feature."""
        x = x.detach().to(self.log_scale.dtype)
        if x.shape[0] < 2:
            std = torch.ones_like(self.log_scale)
            mean = x.mean(0) if x.shape[0] else torch.zeros_like(self.bias)
        else:
            mean, std = x.mean(0), x.std(0)
        std = std.clamp_min(self.eps)
        self.log_scale.copy_(-torch.log(std))
        self.bias.copy_(-mean / std)
        self.initialized.fill_(True)
        self._initialized = True

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not self._initialized:
            self.initialize(x)
        bias, log_scale = self.bias, self.log_scale
        if bias.dtype != x.dtype:
            bias, log_scale = bias.to(x.dtype), log_scale.to(x.dtype)
        return torch.addcmul(bias, x, log_scale.exp()), log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (z - self.bias.to(z.dtype)) * torch.exp(-self.log_scale).to(z.dtype)
        return x, (-self.log_scale.sum()).to(z.dtype).expand(z.shape[0])


def _sync_flag(module: nn.Module, incompatible: Any) -> None:
    module._initialized = bool(module.initialized)
