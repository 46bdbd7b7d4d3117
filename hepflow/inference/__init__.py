"""Inference outputs: posterior summaries and deployable (TorchScript / ONNX, coffea) samplers.

The posteriors themselves (sampling, densities, ensembles, importance weights) are
:mod:`hepflow.posterior`.
"""

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
