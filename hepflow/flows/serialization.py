"""Save and load models without pickle: safetensors weights plus a JSON config.

``save_model(model, path)`` creates the directory ``path`` with

* ``model.safetensors`` -- every parameter and buffer (safetensors never executes code);
* ``config.json`` -- ``format``, ``format_version``, the hepflow version, the model class and its
  constructor arguments (summary network and constraints included), the SHA-256 of the weights
  file, and a free-form ``metadata`` dict (analysis name, feature specification, ...).

:func:`load_model` rebuilds the model from the config and loads the weights strictly; a missing,
truncated or tampered file, an unknown version or a config that does not match the weights raise
:class:`~hepflow.errors.ModelError` with the reason. A model directory names only files inside
itself: ``weights`` must be a plain file name (no path, no ``..``, not ``config.json``), checked
before any file but ``config.json`` is opened; sizes in the config larger than
:data:`hepflow.config.MAX_SIZE` are refused before anything is allocated, and weights with NaN or
infinite values are refused after reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hepflow.errors import ConfigError, ModelError

__all__ = ["FORMAT_VERSION", "check_model_target", "is_plain_name", "load_model", "read_config", "save_model"]

FORMAT = "hepflow-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _classes() -> dict[str, Any]:
    from hepflow.flows.inn import ConditionalINN
    from hepflow.flows.regression import Regressor

    return {"ConditionalINN": ConditionalINN, "Regressor": Regressor}


def is_plain_name(name: object) -> bool:
    """Whether ``name`` names an entry of a folder itself: a non-empty string without a path
    separator that is neither ``.`` nor ``..`` (what model and ensemble files may refer to).

    Example:
        >>> [is_plain_name(n) for n in ("model.safetensors", "../w", "/etc/passwd", "..", "", 3)]
        [True, False, False, False, False, False]
    """
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_model_target(path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Refuse (:class:`~hepflow.errors.OutputError`) to write a model to ``path`` when it holds a
    model already (``config.json`` or ``model.safetensors``) and not ``overwrite``, or is a file.
    Commands that train call it before training, :func:`save_model` before writing."""
    from hepflow.errors import OutputError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"model directory {out} is a file; choose a directory")
    if not overwrite and any((out / name).exists() for name in (CONFIG_NAME, WEIGHTS_NAME)):
        raise OutputError(f"{out} holds a trained model already; pass --overwrite to replace it")


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` to the directory ``path`` (created); returns the directory.

    ``metadata`` must be JSON-serialisable; it is returned by :func:`read_config` and attached to
    the loaded model as ``model.metadata``. A model trained by :func:`hepflow.fit` carries the
    summary of its training context (:mod:`hepflow.posterior.shift`), stored as
    ``metadata["training_summary"]`` unless ``metadata`` gives one. A directory that holds a
    model already is refused unless ``overwrite``, which replaces its ``config.json`` and
    ``model.safetensors`` and nothing else.

    Example:
        >>> import tempfile, torch, hepflow
        >>> model = hepflow.ConditionalINN(2, 3, depth=2, width=8).eval()
        >>> d = hepflow.save_model(model, tempfile.mkdtemp() + "/m", metadata={"analysis": "demo"})
        >>> loaded = hepflow.load_model(d)
        >>> theta, ctx = torch.randn(4, 2), torch.randn(4, 3)
        >>> bool(torch.equal(model.log_prob(theta, ctx), loaded.log_prob(theta, ctx)))
        True
        >>> loaded.metadata
        {'analysis': 'demo'}
    """
    from safetensors.torch import save_file

    from hepflow.outputs.atomic import atomic_write

    name = type(model).__name__
    if name not in _classes():
        raise ModelError(f"save_model handles {sorted(_classes())}, not {name}")
    try:
        cfg = model.config()
    except NotImplementedError as err:
        raise ModelError(
            f"{name} uses a summary network without config(); register it with "
            "hepflow.flows.summary.register_summary and implement config()"
        ) from err
    meta = {} if metadata is None else dict(metadata)
    recorded = getattr(model, "training_summary", None)  # set by hepflow.fit
    if "training_summary" not in meta and recorded is not None:
        meta["training_summary"] = recorded.to_dict()
    try:
        json.dumps(meta, allow_nan=False)
        json.dumps(cfg, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model metadata/config is not plain JSON: {err}") from err
    out = Path(path)
    check_model_target(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = out / WEIGHTS_NAME
    with atomic_write(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        digest = _sha256(tmp)
    from hepflow import __version__

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hepflow_version": __version__,
        "class": name,
        "config": cfg,
        "weights": WEIGHTS_NAME,
        "sha256": digest,
        "metadata": meta,
    }
    with atomic_write(out / CONFIG_NAME) as tmp:
        tmp.write_text(dumps(doc) + "\n")
    return out


#: a JSON array of numbers (or true/false/null) that json.dumps(indent=2) spread over lines
_SCALAR_ARRAY = re.compile(r"\[\n\s+([^\[\]{}\"]*?)\n\s*\]")


def dumps(doc: Any) -> str:
    """``doc`` as indented JSON with arrays of numbers on one line (a model's training summary
    holds many short ones).

    Example:
        >>> print(dumps({"q": [1, 2.5], "m": {"a": [[1], [2]]}}))
        {
          "q": [1, 2.5],
          "m": {
            "a": [
              [1],
              [2]
            ]
          }
        }
    """
    text = json.dumps(doc, indent=2, allow_nan=False)
    return _SCALAR_ARRAY.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``config.json`` of a saved model (class, config, metadata, ...)."""
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise ModelError(f"no model at {path}: {CONFIG_NAME} is missing")
    try:
        doc = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"{cfg_path} is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ModelError(
            f"{cfg_path} is not a hepflow model config: a JSON {type(doc).__name__}, not an object"
        )
    if doc.get("format") != FORMAT:
        raise ModelError(f"{cfg_path} is not a hepflow model config (format={doc.get('format')!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{cfg_path} has format_version {doc.get('format_version')!r}; "
            f"this hepflow reads version {FORMAT_VERSION}"
        )
    for key in ("class", "config", "sha256"):
        if key not in doc:
            raise ModelError(f"{cfg_path} lacks the {key!r} entry")
    if doc["class"] not in _classes():
        raise ModelError(f"{cfg_path} names an unknown model class {doc['class']!r}")
    weights = doc.setdefault("weights", WEIGHTS_NAME)
    if not is_plain_name(weights) or weights == CONFIG_NAME:
        raise ModelError(f"{cfg_path}: 'weights' must name a file inside the model folder, got {weights!r}")
    if not isinstance(doc["config"], Mapping):
        raise ModelError(f"{cfg_path}: 'config' must be an object, got {type(doc['config']).__name__}")
    _check_sizes(doc["config"], f"{cfg_path}: config")
    return doc


def _check_sizes(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse a size beyond :data:`~hepflow.config.MAX_SIZE` (a width of 1e9 would allocate tens of
    GB) before the model is built; seeds and constraint bounds are not sizes."""
    from hepflow.config import MAX_SIZE

    for key, value in cfg.items():
        if key in ("seed", "constraints"):
            continue
        if isinstance(value, Mapping):
            _check_sizes(value, f"{where}.{key}")
        elif isinstance(value, list):
            _check_sizes({f"{key}[{i}]": v for i, v in enumerate(value)}, where)
        elif isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
            raise ModelError(f"{where}.{key} is {value!r}, larger than any model hepflow builds ({MAX_SIZE})")


def _check_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], weights: Path) -> None:
    """One line naming the first tensor that is missing, unexpected, of another shape, or with NaN
    (or, for a parameter, infinite) values."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in tensors:
            raise ModelError(f"the weights in {weights} do not match the config: {key} is missing")
        if tensors[key].shape != value.shape:
            raise ModelError(
                f"the weights in {weights} do not match the config: {key} has shape "
                f"{tuple(tensors[key].shape)} in the file, {tuple(value.shape)} for the config"
            )
    if unexpected := sorted(set(tensors) - set(expected)):
        raise ModelError(
            f"the weights in {weights} do not match the config: the file has {unexpected[0]}, "
            "which the config does not"
        )
    # parameters are finite; buffers may hold infinite bounds (one-sided constraints), never NaN
    parameters = {name for name, _ in model.named_parameters()}
    for key, value in tensors.items():
        if not value.is_floating_point():
            continue
        bad = ~torch.isfinite(value) if key in parameters else torch.isnan(value)
        if bool(bad.any()):
            raise ModelError(
                f"{weights}: {key} has {int(bad.sum())} NaN or infinite value(s); the model is damaged"
            )


def load_model(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (in eval mode, on ``map_location``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    doc = read_config(path)
    folder = Path(path)
    weights = folder / doc["weights"]
    if not weights.is_file():
        raise ModelError(f"no weights at {weights}")
    if weights.resolve().parent != folder.resolve():
        raise ModelError(f"{weights} links to {weights.resolve()}, outside the model folder {folder}")
    digest = _sha256(weights)
    if digest != doc["sha256"]:
        raise ModelError(
            f"{weights} does not match its checksum in {CONFIG_NAME}: the file is truncated or modified"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"cannot read {weights}: {err}") from err
    try:
        model = _classes()[doc["class"]].from_config(doc["config"])
    except (ConfigError, TypeError, KeyError, ValueError) as err:
        raise ModelError(f"the config in {Path(path) / CONFIG_NAME} is invalid: {err}") from err
    _check_tensors(model, tensors, weights)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # pragma: no cover - _check_tensors found every mismatch
        raise ModelError(f"the weights in {weights} do not match the config: {err}") from err
    model.metadata = doc.get("metadata", {})
    return model.to(map_location).eval()
