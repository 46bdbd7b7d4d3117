"""Inference: posterior summaries, importance weights and deployable (TorchScript / ONNX) samplers."""

from __future__ import annotations

from hepflow.inference.export import Sampler, export_onnx, export_torchscript, load_torchscript
from hepflow.inference.summaries import PosteriorSummary, posterior_summary
from hepflow.posterior.importance import ImportanceWeights, importance_weights

__all__ = [
    "ImportanceWeights",
    "PosteriorSummary",
    "Sampler",
    "export_onnx",
    "export_torchscript",
    "importance_weights",
    "load_torchscript",
    "posterior_summary",
]
