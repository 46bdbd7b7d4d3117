"""Deployable samplers: TorchScript and ONNX files of ``forward(*context, noise) -> samples``.

The exported module contains the whole sampling path of a trained
:class:`~hepflow.flows.inn.ConditionalINN` in plain tensors: context dequantization (cell
centres) and standardisation, the summary network, the inverse flow, the target
de-standardisation and the support transforms. Randomness stays outside: the caller passes the
latent noise, so exported and eager samples agree for the same noise.

Signature of the exported ``forward`` (inputs in this order):

* one tensor per context key of the model (:attr:`ConditionalINN.context_keys`): for a flat
  context ``context`` of shape ``(n_obs, context_dim)``; for a dict context its tensors in the
  summary network's :meth:`~hepflow.flows.summary.Summary.input_keys` order, e.g.
  ``forward(flat, jets, mask, noise)`` with ``jets (n_obs, n_max, features)`` and a boolean
  ``mask (n_obs, n_max)``;
* ``noise``: standard normal ``(n_obs, n_samples, latent_dim)`` (``latent_dim`` is
  ``theta_dim`` minus one per simplex constraint);

and it returns ``samples (n_obs, n_samples, theta_dim)``. ``n_obs``, ``n_samples`` and ``n_max``
are dynamic. The TorchScript file loads with :func:`torch.jit.load`, the format
``coffea.ml_tools.torch_wrapper`` expects; the ONNX file runs in onnxruntime.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError

__all__ = ["Sampler", "export_onnx", "export_torchscript", "load_torchscript"]


class Sampler(nn.Module):
    """Eval-mode copy of a model with ``forward(*context_tensors, noise) -> samples``.

    ``model``: a :class:`~hepflow.flows.inn.ConditionalINN`, or a
    :class:`~hepflow.posterior.FlowPosterior` (its flow is exported; an ensemble has no single
    sampling path and is refused).

    Example:
        >>> import torch, hepflow
        >>> model = hepflow.ConditionalINN(2, 3, depth=2, width=8)
        >>> sampler = Sampler(model)
        >>> sampler.input_names
        ['context', 'noise']
        >>> sampler(torch.zeros(4, 3), torch.randn(4, 10, 2)).shape
        torch.Size([4, 10, 2])
    """

    def __init__(self, model: nn.Module | Any) -> None:
        super().__init__()
        from hepflow.posterior import FlowPosterior

        if isinstance(model, FlowPosterior):  # a posterior exports the flow behind it
            model = model.model
        if not hasattr(model, "_transform_noise"):
            raise ConfigError(f"cannot export a {type(model).__name__}: it has no sampling path")
        self.model = copy.deepcopy(model).eval()
        self.keys: list[str] = list(model.context_keys)
        self.latent_dim: int = int(model.latent_dim)
        self.theta_dim: int = int(model.theta_dim)

    @property
    def input_names(self) -> list[str]:
        return [*self.keys, "noise"]

    def forward(self, *inputs: Tensor) -> Tensor:
        *ctx, noise = inputs
        context = dict(zip(self.keys, ctx, strict=True)) if self.keys else None
        return self.model._transform_noise(noise, context)

    def example_inputs(self, n_obs: int = 2, n_samples: int = 3) -> tuple[Tensor, ...]:
        """Inputs of the right shapes (zeros and unit noise) to trace with."""
        ctx: Mapping[str, Tensor] = {}
        if self.keys:
            ctx = self.model.context_encoder.summary.example(n_obs)
        dtype, device = self.model.theta_scaler.mean.dtype, self.model.theta_scaler.mean.device
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(n_obs, n_samples, self.latent_dim, generator=g, dtype=dtype).to(device)
        ctx_t = [
            ctx[k].to(device, dtype) if ctx[k].dtype.is_floating_point else ctx[k].to(device)
            for k in self.keys
        ]
        return (*ctx_t, noise)


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    # TorchScript and the TorchScript-based ONNX exporter are deprecated in torch >= 2.9, but
    # TorchScript is the format coffea's torch_wrapper loads, and the newer ONNX exporter needs
    # onnxscript; silence deprecation notices for the duration of the export call only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def export_torchscript(
    model: nn.Module, path: str | os.PathLike[str], *, example: tuple[Tensor, ...] | None = None
) -> Path:
    """Trace the sampler of ``model`` and save it as TorchScript (``torch.jit.load``-able).

    ``example`` overrides the tracing inputs (default: :meth:`Sampler.example_inputs`).

    Example:
        >>> import tempfile, torch, hepflow
        >>> model = hepflow.ConditionalINN(2, 3, depth=2, width=8)
        >>> f = export_torchscript(model, tempfile.mkdtemp() + "/sampler.pt")
        >>> noise = torch.randn(4, 10, 2)
        >>> ts = load_torchscript(f)  # torch.jit.load, minus the deprecation notice
        >>> eager = Sampler(model)(torch.zeros(4, 3), noise)
        >>> bool(torch.allclose(ts(torch.zeros(4, 3), noise), eager, atol=1e-5))
        True
    """
    from hepflow.outputs.atomic import atomic_write

    sampler = Sampler(model)
    inputs = sampler.example_inputs() if example is None else example
    with _quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace(sampler, inputs, check_trace=False)
        with atomic_write(path) as tmp:
            torch.jit.save(traced, str(tmp))
    return Path(path)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example: tuple[Tensor, ...] | None = None,
    opset: int = 17,
) -> Path:
    """Export the sampler of ``model`` to ONNX with dynamic ``n_obs``, ``n_samples`` and set sizes.

    Input names are the context keys and ``noise``; the output is ``samples``.
    """
    from hepflow.outputs.atomic import atomic_write

    sampler = Sampler(model)
    inputs = sampler.example_inputs() if example is None else example
    names = sampler.input_names
    dynamic: dict[str, dict[int, str]] = {
        "noise": {0: "n_obs", 1: "n_samples"},
        "samples": {0: "n_obs", 1: "n_samples"},
    }
    for name, tensor in zip(names[:-1], inputs[:-1], strict=True):
        axes = {0: "n_obs"}
        if tensor.dim() >= 2 and _is_set_key(sampler, name):
            axes[1] = f"n_{name}"
        dynamic[name] = axes
    with _quiet_torchscript(), torch.no_grad(), atomic_write(path) as tmp:
        torch.onnx.export(
            sampler,
            inputs,
            str(tmp),
            input_names=names,
            output_names=["samples"],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    return Path(path)


def _is_set_key(sampler: Sampler, key: str) -> bool:
    enc = sampler.model.context_encoder
    masks = getattr(enc, "_mask_of", {})
    return key in masks or key in masks.values()


def load_torchscript(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.jit.load`` of an exported sampler, without torch's TorchScript deprecation notice."""
    with _quiet_torchscript():
        return torch.jit.load(str(path), map_location=map_location)
