"""Training: the generic maximum-likelihood loop, its history and checkpoints."""

from __future__ import annotations

from hepflow.training.checkpoint import load_checkpoint, save_checkpoint
from hepflow.training.fit import fit, resolve_device
from hepflow.training.history import History, plot_history

__all__ = ["History", "fit", "load_checkpoint", "plot_history", "resolve_device", "save_checkpoint"]
