"""Training checkpoints: everything needed to resume an interrupted run exactly.

A checkpoint holds the model, optimizer, scheduler and gradient-scaler states, the random number
generator states, the completed epoch, the history so far and the early-stopping state. It is
written with :func:`torch.save` to a temporary file and renamed over the previous one, so a run
killed while writing leaves the last complete checkpoint intact. It is read with
``torch.load(weights_only=True)``, which never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from hepflow.errors import ModelError

__all__ = ["CHECKPOINT_NAME", "get_rng_state", "load_checkpoint", "save_checkpoint", "set_rng_state"]

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "hepflow-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically to ``path``.

    Temporaries of an earlier save that was killed (``.hepflow-tmp-*.pt`` beside ``path``) are
    removed first.
    """
    from hepflow.outputs.atomic import TMP_PREFIX, atomic_write

    final = Path(path)
    if final.parent.is_dir():
        for stale in final.parent.glob(f"{TMP_PREFIX}*{final.suffix}"):
            stale.unlink(missing_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`ModelError` if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"no checkpoint at {p}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise ModelError(f"checkpoint {p} is truncated or not a hepflow checkpoint: {_reason(err)}") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelError(f"{p} is not a hepflow training checkpoint")
    if state.get("version") != VERSION:
        raise ModelError(
            f"checkpoint {p} has format version {state.get('version')!r}; this hepflow reads {VERSION}"
        )
    return state


def _reason(err: BaseException) -> str:
    """One sentence from torch's error: the refused pickle content, else the first line.

    (torch's full message for a refused pickle suggests ``weights_only=False``, which would run
    the file's code: hepflow never does that.)
    """
    text = str(err)
    refused = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if refused:
        return _first_sentence(refused.group(1)) + " (refused, nothing was unpickled)"
    return _first_sentence(next((x for x in text.splitlines() if x.strip()), type(err).__name__))


def _first_sentence(text: str) -> str:
    return text.split(". ", maxsplit=1)[0].strip().rstrip(".")


def get_rng_state(generator: torch.Generator) -> dict[str, Any]:
    """States of torch's global CPU (and CUDA) generators and of the data-order ``generator``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
