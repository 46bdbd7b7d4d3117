"""Context preprocessing shared by every conditional model: dequantize, standardise, summarise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError, InputError
from hepflow.flows.dequantization import Dequantize
from hepflow.flows.standardization import Standardize
from hepflow.flows.summary import Summary

__all__ = ["Context", "ContextEncoder", "as_tensor", "batch_size_of", "index_context"]

#: a context: one tensor (flat features, a histogram) or named tensors (flat + jets + mask, ...)
Context = Tensor | Mapping[str, Tensor]


def as_tensor(
    x: Any, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> Tensor:
    """A tensor from a tensor or array-like; non-bool inputs are cast to ``dtype`` when given."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if dtype is not None and t.dtype not in (torch.bool, dtype):
        t = t.to(dtype)
    return t if device is None else t.to(device)


def batch_size_of(context: Context) -> int:
    """Number of events in a context (the first dimension of its tensors)."""
    if isinstance(context, Mapping):
        return int(next(iter(context.values())).shape[0])
    return int(context.shape[0])


def index_context(context: Context, idx: Tensor | slice) -> Context:
    """Select events ``idx`` of a tensor or of every tensor of a dict context."""
    if isinstance(context, Mapping):
        return {k: v[idx] for k, v in context.items()}
    return context[idx]


class ContextEncoder(nn.Module):
    """Dequantize discrete columns, standardise (buffers fitted on training data), summarise.

    Arguments:
        summary: the summary network; its :meth:`~hepflow.flows.summary.Summary.scaling`
            decides how each context tensor is standardised.
        dequantize: integer columns to dequantize: a list of column indices for a plain tensor
            context, or ``{key: [columns]}`` for a dict context.
    """

    def __init__(
        self, summary: Summary, *, dequantize: Sequence[int] | Mapping[str, Sequence[int]] | None = None
    ) -> None:
        super().__init__()
        self.summary = summary
        self.keys = summary.input_keys()
        for key in self.keys:
            if not key or "." in key:
                raise ConfigError(f"context key {key!r} must be a non-empty name without '.'")
        example = summary.example(1)
        self._shapes = {k: tuple(v.shape[1:]) for k, v in example.items()}
        self._bool_keys = {k for k, v in example.items() if v.dtype == torch.bool}
        self.scalers = nn.ModuleDict()
        self._mask_of: dict[str, str] = {}
        for key, (mode, mask_key) in summary.scaling().items():
            if mode == "none":
                continue
            shape = (self._shapes[key][-1],) if mode == "feature" else ()
            self.scalers[key] = Standardize(shape)
            if mask_key is not None:
                self._mask_of[key] = mask_key
        if dequantize is None:
            dequantize = {}
        if not isinstance(dequantize, Mapping):
            if self.keys != ["context"]:
                raise ConfigError(
                    f"dequantize={list(dequantize)} names columns of a plain tensor context, but the context "
                    f"has keys {self.keys}; pass {{key: [columns]}}"
                )
            dequantize = {"context": list(dequantize)}
        self.dequantizers = nn.ModuleDict()
        for key, cols in dequantize.items():
            if key not in self._shapes or key in self._bool_keys:
                raise ConfigError(f"dequantize names context key {key!r}; the context has {self.keys}")
            if cols:
                self.dequantizers[key] = Dequantize(cols, features=self._shapes[key][-1])
        self.dequantize_config = {k: list(d.columns) for k, d in self.dequantizers.items()}
        self.output_dim = summary.output_dim

    @property
    def masks(self) -> dict[str, str]:
        """``{set key: its mask key}`` of the padded sets in the context."""
        return dict(self._mask_of)

    def as_dict(
        self, context: Any, *, dtype: torch.dtype, device: torch.device | None = None
    ) -> dict[str, Tensor]:
        """Check a user context against the expected keys and shapes; return a dict of tensors."""
        if isinstance(context, Mapping):
            missing = [k for k in self.keys if k not in context]
            if missing:
                raise InputError(f"context is missing key(s) {missing}; the model reads {self.keys}")
            out = {k: as_tensor(context[k], dtype=dtype, device=device) for k in self.keys}
        else:
            if self.keys != ["context"]:
                raise InputError(
                    f"the model needs a dict context with keys {self.keys}, got a {type(context).__name__}"
                )
            out = {"context": as_tensor(context, dtype=dtype, device=device)}
        n = None
        for k, v in out.items():
            expected = self._shapes[k]
            if k in self._mask_of:
                fixed = expected[-1:]  # a set: any number of elements
            elif k in self._mask_of.values():
                fixed = ()  # a set mask
            else:
                fixed = expected
            if v.dim() != len(expected) + 1 or (fixed and tuple(v.shape[-len(fixed) :]) != fixed):
                raise InputError(
                    f"context {k!r} has shape {tuple(v.shape)}; "
                    f"expected (batch, {', '.join(map(str, expected))})"
                    + (" with any set size" if k in self._mask_of else "")
                )
            if n is None:
                n = v.shape[0]
            elif v.shape[0] != n:
                raise InputError(
                    f"context tensors disagree on the number of events: {k!r} has {v.shape[0]}, not {n}"
                )
            if k in self._bool_keys and v.dtype != torch.bool:
                out[k] = v.bool()
        return out

    @torch.no_grad()
    def fit(self, context: Mapping[str, Tensor]) -> None:
        """Fit the standardisation buffers on (dequantized, cell-centred) training contexts."""
        for key, scaler in self.scalers.items():
            x = context[key]
            if key in self.dequantizers:
                x = x + 0.5 * self.dequantizers[key].mask.to(x.dtype)
            mask = context[self._mask_of[key]] if key in self._mask_of else None
            scaler.fit(x, mask)

    def forward(self, context: Mapping[str, Tensor]) -> Tensor:
        ctx = dict(context)
        for key, deq in self.dequantizers.items():
            ctx[key] = deq(ctx[key])
        for key, scaler in self.scalers.items():
            ctx[key] = scaler(ctx[key])
        return self.summary(ctx)
