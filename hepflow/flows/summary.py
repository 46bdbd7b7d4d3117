"""Summary (condition) networks: map the observed context to a flat embedding.

The embedding is computed once per batch and fed to every coupling subnet; the summary network
is trained jointly with the flow. A context is either one tensor or a dict of named tensors
(flat features, a padded set of jets plus its boolean mask, a histogram...). Every summary
reads its tensors by key (a plain tensor context has the key ``"context"``) and declares:

* :attr:`Summary.output_dim` -- the size of the embedding;
* :meth:`Summary.input_keys` -- the context tensors it reads, in a fixed order (the order of the
  inputs of an exported sampler);
* :meth:`Summary.scaling` -- how each tensor is standardised (per feature, global, or not at all,
  and which mask selects the valid elements of a set);
* :meth:`Summary.config` -- JSON-serialisable constructor arguments, so saved models are
  rebuilt without pickle. Custom summaries become serialisable with :func:`register_summary`.

Example:
    >>> import torch
    >>> summary = Combined(flat=MLPSummary(3, 16), jets=SetSummary(4, 16, mask_key="mask"))
    >>> summary.input_keys()
    ['flat', 'jets', 'mask']
    >>> ctx = {"flat": torch.randn(5, 3), "jets": torch.randn(5, 10, 4), "mask": torch.rand(5, 10) > 0.3}
    >>> summary(ctx).shape
    torch.Size([5, 32])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError
from hepflow.flows.base import MLP, activation

__all__ = [
    "CNNSummary",
    "Combined",
    "IdentitySummary",
    "MLPSummary",
    "SetSummary",
    "Summary",
    "register_summary",
    "summary_from_config",
]

_REGISTRY: dict[str, type[Summary]] = {}


def register_summary(cls: type[Summary]) -> type[Summary]:
    """Class decorator: make a :class:`Summary` subclass loadable by :func:`hepflow.load_model`.

    The class must implement ``config()`` returning the keyword arguments of its constructor.
    """
    _REGISTRY[cls.__name__] = cls
    return cls


def summary_from_config(cfg: Mapping[str, Any]) -> Summary:
    """Rebuild a summary network from ``{"type": name, "kwargs": {...}}``."""
    kind = cfg.get("type")
    if kind == "Combined":
        return Combined(**{name: summary_from_config(part) for name, part in cfg["parts"].items()})
    if kind not in _REGISTRY:
        raise ConfigError(
            f"unknown summary network {kind!r}; known: {sorted(_REGISTRY)} (see register_summary)"
        )
    return _REGISTRY[kind](**cfg.get("kwargs", {}))


class Summary(nn.Module):
    """Base class of summary networks; see the module docstring for the contract."""

    output_dim: int
    key: str

    def input_keys(self) -> list[str]:
        return [self.key]

    def scaling(self) -> dict[str, tuple[str, str | None]]:
        """``key -> (mode, mask_key)`` with mode ``"feature"``, ``"global"`` or ``"none"``."""
        return {self.key: ("feature", None)}

    def example(self, batch: int = 2) -> dict[str, Tensor]:
        """A zero context of ``batch`` events with the right shapes (for export tracing)."""
        raise NotImplementedError  # pragma: no cover

    def config(self) -> dict[str, Any]:
        raise NotImplementedError  # pragma: no cover

    def _config(self, **kwargs: Any) -> dict[str, Any]:
        return {"type": type(self).__name__, "kwargs": kwargs}


@register_summary
class IdentitySummary(Summary):
    """Pass a flat ``(batch, features)`` context through unchanged (raw conditioning).

    Example:
        >>> import torch
        >>> IdentitySummary(3)({"context": torch.ones(2, 3)}).shape
        torch.Size([2, 3])
    """

    def __init__(self, features: int, *, key: str = "context") -> None:
        super().__init__()
        self.features = features
        self.key = key
        self.output_dim = features

    def forward(self, context: Mapping[str, Tensor]) -> Tensor:
        return context[self.key]

    def example(self, batch: int = 2) -> dict[str, Tensor]:
        return {self.key: torch.zeros(batch, self.features)}

    def config(self) -> dict[str, Any]:
        return self._config(features=self.features, key=self.key)


@register_summary
class MLPSummary(Summary):
    """An MLP on flat features ``(batch, in_features)`` -> ``(batch, out_features)``.

    Example:
        >>> import torch
        >>> MLPSummary(3, 8)({"context": torch.randn(4, 3)}).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 32,
        *,
        width: int = 128,
        layers: int = 2,
        activation: str = "relu",
        key: str = "context",
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"MLPSummary needs positive sizes, got {in_features} -> {out_features}")
        self.key = key
        self.output_dim = out_features
        self._kwargs = {
            "in_features": in_features,
            "out_features": out_features,
            "width": width,
            "layers": layers,
            "activation": activation,
        }
        self.net = MLP(in_features, out_features, width=width, layers=layers, act=activation)

    def forward(self, context: Mapping[str, Tensor]) -> Tensor:
        return self.net(context[self.key])

    def example(self, batch: int = 2) -> dict[str, Tensor]:
        return {self.key: torch.zeros(batch, self._kwargs["in_features"])}

    def config(self) -> dict[str, Any]:
        return self._config(**self._kwargs, key=self.key)


class _MaskedAttention(nn.Module):
    """Multi-head self-attention over set elements; padded elements are never attended to."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.width = width
        self.scale = 1.0 / math.sqrt(width // heads)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n = x.shape[0], x.shape[1]
        w, h = self.width, self.heads
        q, k, v = self.qkv(x).view(b, n, 3, h, w // h).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill(~mask[:, None, None, :], -1e9)
        att = torch.softmax(scores.float(), -1).to(v.dtype)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, w))


@register_summary
class SetSummary(Summary):
    """Permutation-invariant encoder of a padded set (e.g. up to ten jets) with a boolean mask.

    Input: ``context[key]`` of shape ``(batch, n_max, features)`` and ``context[mask_key]`` of
    shape ``(batch, n_max)`` (true for real elements). Each element is embedded by an MLP,
    ``blocks`` pre-norm transformer blocks (masked multi-head self-attention plus an MLP) let the
    elements interact, and multi-head attention pooling with learned queries reduces the set to
    one vector. The multiplicity ``log(1 + n)`` is appended before the output MLP, and an empty
    set gives a finite embedding. Padded elements (whatever their values) never change the result.

    Example:
        >>> import torch
        >>> enc = SetSummary(4, 8, width=16, heads=2)
        >>> jets, mask = torch.randn(3, 10, 4), torch.rand(3, 10) > 0.5
        >>> out = enc({"jets": jets, "mask": mask})
        >>> perm = torch.randperm(10)
        >>> bool(torch.allclose(out, enc({"jets": jets[:, perm], "mask": mask[:, perm]}), atol=1e-5))
        True
    """

    def __init__(
        self,
        features: int,
        out_features: int = 32,
        *,
        key: str = "jets",
        mask_key: str = "mask",
        width: int = 64,
        heads: int = 4,
        blocks: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"SetSummary: width={width} must be divisible by heads={heads}")
        self.key = key
        self.mask_key = mask_key
        self.output_dim = out_features
        self._kwargs = {
            "features": features,
            "out_features": out_features,
            "width": width,
            "heads": heads,
            "blocks": blocks,
            "activation": activation,
        }
        self.heads = heads
        self.width = width
        self.embed = MLP(features, width, width=width, layers=1, act=activation)
        self.norms1 = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.attn = nn.ModuleList(_MaskedAttention(width, heads) for _ in range(blocks))
        self.norms2 = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.ffn = nn.ModuleList(
            MLP(width, width, width=2 * width, layers=1, act=activation) for _ in range(blocks)
        )
        self.pool_norm = nn.LayerNorm(width)
        self.pool_query = nn.Parameter(torch.randn(heads, width // heads) / math.sqrt(width // heads))
        self.pool_kv = nn.Linear(width, 2 * width)
        self.head = MLP(width + 1, out_features, width=width, layers=1, act=activation)

    def input_keys(self) -> list[str]:
        return [self.key, self.mask_key]

    def scaling(self) -> dict[str, tuple[str, str | None]]:
        return {self.key: ("feature", self.mask_key), self.mask_key: ("none", None)}

    def forward(self, context: Mapping[str, Tensor]) -> Tensor:
        x, mask = context[self.key], context[self.mask_key].bool()
        b, n = x.shape[0], x.shape[1]
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = self.embed(x * keep)
        for norm1, attn, norm2, ffn in zip(self.norms1, self.attn, self.norms2, self.ffn, strict=True):
            h = h + attn(norm1(h), mask)
            h = h + ffn(norm2(h))
        hn = self.pool_norm(h)
        w = self.width
        k, v = self.pool_kv(hn).view(b, n, 2, self.heads, w // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (k @ self.pool_query.to(k.dtype).unsqueeze(-1)).squeeze(-1)  # (b, heads, n)
        scores = scores.masked_fill(~mask[:, None, :], -1e9)
        att = torch.softmax(scores.float(), -1).to(v.dtype)
        pooled = (att.unsqueeze(2) @ v).squeeze(2).reshape(b, w)  # (b, width)
        count = mask.sum(1, keepdim=True).to(pooled.dtype)
        pooled = pooled * (count > 0).to(pooled.dtype)
        return self.head(torch.cat((pooled, torch.log1p(count)), 1))

    def example(self, batch: int = 2) -> dict[str, Tensor]:
        return {
            self.key: torch.zeros(batch, 3, self._kwargs["features"]),
            self.mask_key: torch.ones(batch, 3, dtype=torch.bool),
        }

    def config(self) -> dict[str, Any]:
        return self._config(**self._kwargs, key=self.key, mask_key=self.mask_key)


@register_summary
class CNNSummary(Summary):
    """A small 1D or 2D CNN for histograms: ``shape=(n_bins,)`` or ``shape=(height, width)``.

    Input ``(batch, *shape)``, or ``(batch, in_channels, *shape)`` when ``in_channels > 1``.
    Each stage is a 3-wide convolution, the activation and a 2-wide max pool; the flattened
    maps go through an MLP to ``out_features``. Histograms are standardised globally (one mean,
    one std), which keeps their shape.

    Example:
        >>> import torch
        >>> CNNSummary((40,), 8)({"context": torch.rand(5, 40)}).shape
        torch.Size([5, 8])
        >>> CNNSummary((16, 16), 8, channels=(4,))({"context": torch.rand(5, 16, 16)}).shape
        torch.Size([5, 8])
    """

    def __init__(
        self,
        shape: Sequence[int],
        out_features: int = 32,
        *,
        channels: Sequence[int] = (16, 32),
        in_channels: int = 1,
        width: int = 64,
        activation: str = "relu",
        key: str = "context",
    ) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (1, 2):
            raise ConfigError(f"CNNSummary handles 1D or 2D histograms, got shape={self.shape}")
        self.key = key
        self.output_dim = out_features
        self.in_channels = in_channels
        self._kwargs = {
            "shape": list(self.shape),
            "out_features": out_features,
            "channels": list(channels),
            "in_channels": in_channels,
            "width": width,
            "activation": activation,
        }
        conv = nn.Conv1d if len(self.shape) == 1 else nn.Conv2d
        pool = nn.MaxPool1d if len(self.shape) == 1 else nn.MaxPool2d
        mods: list[nn.Module] = []
        c_in, size = in_channels, min(self.shape)
        for c_out in channels:
            mods += [conv(c_in, c_out, 3, padding=1), _Act(activation)]
            if size >= 2:
                mods.append(pool(2))
                size //= 2
            c_in = c_out
        self.convs = nn.Sequential(*mods)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, *self.shape)).numel()
        self.head = MLP(flat, out_features, width=width, layers=1, act=activation)

    def scaling(self) -> dict[str, tuple[str, str | None]]:
        return {self.key: ("global", None)}

    def forward(self, context: Mapping[str, Tensor]) -> Tensor:
        x = context[self.key]
        if x.dim() == len(self.shape) + 1:
            x = x.unsqueeze(1)
        return self.head(self.convs(x).flatten(1))

    def example(self, batch: int = 2) -> dict[str, Tensor]:
        shape = self.shape if self.in_channels == 1 else (self.in_channels, *self.shape)
        return {self.key: torch.zeros(batch, *shape)}

    def config(self) -> dict[str, Any]:
        return self._config(**self._kwargs, key=self.key)


class _Act(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.fn = activation(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class Combined(Summary):
    """Concatenate the embeddings of several summaries, each reading its own context keys.

    Keyword names become the context keys of the parts (a :class:`SetSummary` keeps its own
    ``mask_key``).

    Example:
        >>> import torch
        >>> s = Combined(flat=IdentitySummary(2), hist=CNNSummary((8,), 4, channels=(2,)))
        >>> s({"flat": torch.randn(3, 2), "hist": torch.rand(3, 8)}).shape
        torch.Size([3, 6])
    """

    def __init__(self, **parts: Summary) -> None:
        super().__init__()
        if not parts:
            raise ConfigError("Combined needs at least one summary network")
        for name, part in parts.items():
            if not isinstance(part, Summary):
                raise ConfigError(f"Combined: part {name!r} is a {type(part).__name__}, not a Summary")
            part.key = name
        self.parts = nn.ModuleDict(parts)
        self.key = ""
        self.output_dim = sum(p.output_dim for p in parts.values())

    def input_keys(self) -> list[str]:
        keys: list[str] = []
        for part in self.parts.values():
            keys += [k for k in part.input_keys() if k not in keys]
        return keys

    def scaling(self) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for part in self.parts.values():
            out.update(part.scaling())
        return out

    def forward(self, context: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([part(context) for part in self.parts.values()], 1)

    def example(self, batch: int = 2) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for part in self.parts.values():
            out.update(part.example(batch))
        return out

    def config(self) -> dict[str, Any]:
        return {"type": "Combined", "parts": {name: part.config() for name, part in self.parts.items()}}
