"""What produced an output: plain JSON descriptions of processors, models and input files.

Every chunk marker and every ``run.json`` of a processing run records its provenance (see
:mod:`hepflow.outputs.records`): the producer (the processor's class and settings, and for
inference the model's weights checksum, the samples per event and the seed), the chunking, the
hepflow version and the identity of the input file. Two records are compared key by key
(:func:`differences`), so a refusal can say what differs.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Selection:
    ...     max_jets: int = 10
    >>> class Proc:
    ...     def __init__(self, samples):
    ...         self.selection, self.samples = Selection(), samples
    >>> describe(Proc(8))["settings"]
    {'samples': 8, 'selection': {'max_jets': 10}}
    >>> differences(describe(Proc(8)), describe(Proc(64)))
    ['settings.samples: 8, this run 64']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.errors import ModelError

__all__ = ["describe", "differences", "file_identity", "fingerprint", "model_identity"]


def describe(value: Any) -> Any:
    """A plain-JSON description of ``value``: numbers, strings, lists and dicts as they are;
    dataclasses and numpy arrays by their content; paths as strings; an object with a
    ``provenance()`` method by what it returns; any other object by its class and attributes."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else str(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray):
        return describe(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        items = [describe(v) for v in value]
        return sorted(items, key=json.dumps) if isinstance(value, set | frozenset) else items
    if callable(getattr(value, "provenance", None)) and not isinstance(value, type):
        return describe(value.provenance())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    cls = type(value)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "settings": describe({k: v for k, v in vars(value).items() if not k.startswith("_")})
        if hasattr(value, "__dict__")
        else None,
    }


def fingerprint(value: Any) -> str:
    """The SHA-256 (hex) of the canonical JSON of :func:`describe` (``value``)."""
    text = json.dumps(describe(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_identity(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """``{"path": resolved directory, "sha256": ...}``: the weights checksums that the
    ``config.json`` of the model directory and of its sub-folders (``flow/``, ``regression/``,
    ``member_<k>/``) record, combined into one SHA-256 (the weights are not read again)."""
    root = Path(model_dir).resolve()
    sums = {}
    for config in sorted([root / "config.json", *root.glob("*/config.json")]):
        if not config.is_file():
            continue
        try:
            doc = json.loads(config.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ModelError(f"{config} is not valid JSON: {err}") from err
        if isinstance(doc, dict) and isinstance(doc.get("sha256"), str):
            sums[config.parent.relative_to(root).as_posix()] = doc["sha256"]
    if not sums:
        raise ModelError(f"no model at {model_dir}: no config.json with a weights checksum")
    return {"path": str(root), "sha256": fingerprint(sums)}


def file_identity(path: str, *, uuid: str | None = None) -> dict[str, Any]:
    """The identity of an input file: its resolved path (symlinks, ``..`` and relative paths give
    one name per file) and size, and the ROOT file's ``uuid`` when known (coffea's
    ``events.metadata["fileuuid"]``); a remote file (``root://...``) by its URL."""
    out: dict[str, Any] = {"path": path}
    if "://" not in path:
        p = Path(path).resolve()
        out["path"] = str(p)
        try:
            out["size"] = p.stat().st_size
        except OSError:
            out["size"] = None
    if uuid:
        out["uuid"] = str(uuid)
    return out


def differences(ours: Any, theirs: Any, *, prefix: str = "", limit: int = 4) -> list[str]:
    """``key: value, this run value`` for the keys in which the record ``ours`` (found on disk)
    and ``theirs`` (this run) differ (nested keys dotted; long values shortened; at most
    ``limit`` entries)."""
    out: list[str] = []
    _diff(ours, theirs, prefix, out)
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


def _diff(a: Any, b: Any, key: str, out: list[str]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b), key=str):
            _diff(a.get(k), b.get(k), f"{key}.{k}" if key else str(k), out)
    elif a != b:
        out.append(f"{key or 'value'}: {_short(a)}, this run {_short(b)}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}…"
    return text if len(text) <= 80 else text[:77] + "…"
