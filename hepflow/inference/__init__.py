"""Inference: posterior summaries from samples and deployable (TorchScript / ONNX) samplers."""

from __future__ import annotations

from hepflow.inference.export import Sampler, export_onnx, export_torchscript, load_torchscript
from hepflow.inference.summaries import PosteriorSummary, posterior_summary

__all__ = [
    "PosteriorSummary",
    "Sampler",
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
    "posterior_summary",
]
