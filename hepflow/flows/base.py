"""The transform interface shared by every invertible block.

A :class:`Transform` maps data ``x`` towards the latent space, ``z = f(x; c)``, and returns
``log|det df/dx|`` per sample. :meth:`Transform.inverse` maps back and returns the log-determinant
of the inverse map. Blocks never change the batch dimension; only the support transforms of
:mod:`hepflow.flows.constraints` change the feature dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hepflow.errors import ConfigError

__all__ = ["MLP", "Flow", "Transform", "activation", "seeded"]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Draw from torch's global generator seeded with ``seed`` inside the block, and leave the
    caller's generator state as it was; with ``seed=None`` the block uses the global state.

    Build a whole model inside it (summary network included) so that its weights depend on
    ``seed`` only.

    Example:
        >>> import torch
        >>> with seeded(3):
        ...     a = torch.randn(2)
        >>> with seeded(3):
        ...     b = torch.randn(2)
        >>> bool(torch.equal(a, b))
        True
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


class Transform(nn.Module):
    """An invertible map ``x -> z`` with a tractable log-determinant, optionally conditioned on ``c``.

    Subclasses implement :meth:`forward` (data to latent) and :meth:`inverse` (latent to data).
    Both return ``(output, logdet)`` with ``logdet`` of shape ``(batch,)``. Volume-preserving
    transforms (``volume_preserving = True``) also implement :meth:`map` and :meth:`unmap`
    without the (zero) log-determinant, which :class:`Flow` uses to skip the bookkeeping.
    """

    volume_preserving: bool = False

    def map(self, x: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def unmap(self, z: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class Flow(Transform):
    """A sequence of transforms applied in order; the log-determinants add up.

    Example:
        >>> import torch
        >>> from hepflow.flows import AffineCoupling, RandomOrthogonal
        >>> flow = Flow([AffineCoupling(2, 3, width=16), RandomOrthogonal(2)])
        >>> x, c = torch.randn(5, 2), torch.randn(5, 3)
        >>> z, logdet = flow(x, c)
        >>> x2, _ = flow.inverse(z, c)
        >>> bool(torch.allclose(x, x2, atol=1e-5))
        True
    """

    def __init__(self, transforms: list[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for t in self.transforms:
            if t.volume_preserving:
                x = t.map(x)
                continue
            x, ld = t(x, c)
            total = ld if total is None else total + ld
        return x, x.new_zeros(x.shape[0]) if total is None else total

    def inverse(self, z: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for t in reversed(self.transforms):
            if t.volume_preserving:
                z = t.unmap(z)
                continue
            z, ld = t.inverse(z, c)
            total = ld if total is None else total + ld
        return z, z.new_zeros(z.shape[0]) if total is None else total


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "elu": F.elu,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name`` (``relu``, ``silu``, ``gelu``, ``elu``, ``tanh``, ...)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


class MLP(nn.Module):
    """A plain multilayer perceptron with ``layers`` hidden layers of ``width`` units.

    Weights are stored as ``(in, out)`` matrices and applied with :func:`torch.addmm` (no
    per-layer module call, no transposes in the forward pass), and ReLU runs in place: the
    subnets of a flow are small, so on CPU this per-operation overhead matters. ``last_scale``
    shrinks the initial output weights so that couplings start close to the identity while every
    parameter still receives a gradient. Initialisation follows :class:`torch.nn.Linear`.

    Example:
        >>> import torch
        >>> MLP(3, 2, width=8, layers=2)(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width: int = 128,
        layers: int = 2,
        act: str = "relu",
        last_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.act_name = act
        self._act = activation(act)
        self._inplace_relu = act == "relu"
        dims = [in_features] + [width] * layers + [out_features]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in pairwise(dims):
            bound = 1.0 / math.sqrt(a) if a else 0.0
            self.weights.append(nn.Parameter(torch.empty(a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(b).uniform_(-bound, bound)))
        if last_scale != 1.0:
            with torch.no_grad():
                self.weights[-1].mul_(last_scale)
                self.biases[-1].zero_()
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """Apply the network to ``x``, or to ``(x, c)`` concatenated along the features.

        ``c`` may have fewer rows than ``x``: each row of ``c`` then serves a consecutive group
        of ``len(x) // len(c)`` rows of ``x`` (the K samples of one observation), and its share
        of the first layer is computed once per group instead of once per row.
        """
        if c is not None:
            return self._forward_with_context(x, c)
        shape = x.shape
        if x.dim() != 2:
            x = x.reshape(-1, shape[-1])
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.addmm(b, x, w)
            if i < n - 1:
                x = torch.relu_(x) if self._inplace_relu else self._act(x)
        return x if len(shape) == 2 else x.reshape(*shape[:-1], x.shape[-1])

    def _forward_with_context(self, x: Tensor, c: Tensor) -> Tensor:
        # one context row per row (training): one fused matmul; traced exports keep the general path
        if not torch.jit.is_tracing() and c.shape[0] == x.shape[0]:
            return self.forward(torch.cat((x, c), 1))
        w0 = self.weights[0]
        d = x.shape[1]
        hc = torch.addmm(self.biases[0], c, w0[d:])  # (groups, width): once per context row
        hx = torch.mm(x, w0[:d])  # (rows, width)
        h = (hx.view(c.shape[0], -1, hx.shape[1]) + hc.unsqueeze(1)).view(-1, hx.shape[1])
        n = len(self.weights)
        if n == 1:
            return h
        h = torch.relu_(h) if self._inplace_relu else self._act(h)
        for i in range(1, n):
            h = torch.addmm(self.biases[i], h, self.weights[i])
            if i < n - 1:
                h = torch.relu_(h) if self._inplace_relu else self._act(h)
        return h
