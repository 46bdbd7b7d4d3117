"""The model card of a pretrained neutrino model: what it was trained on, how well it does, and
the sha256 of every model file.

A pretrained model directory holds the files ``hepflow train neutrino`` writes that inference
needs (:data:`MODEL_FILES`), ``card.json`` (this module's record) and ``card.md`` (the same,
rendered for people). :func:`install_model` copies a trained model into such a directory and
writes the card; :func:`verify_model` checks it before the model is loaded: a missing card, a
missing, unlisted or altered file, or a model over :data:`MAX_BYTES` is refused with one line
naming the file.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "a.txt").write_text("weights")
    7
    >>> sha256_file(d / "a.txt")[:12]
    '9a129038d9a0'
    >>> card = {"hepflow_version": "0.1.0", "files": {"a.txt": {"sha256": sha256_file(d / "a.txt"),
    ...         "bytes": 7}}}
    >>> _ = write_json(d / CARD_JSON, card)
    >>> verify_model(d)["files"]["a.txt"]["bytes"]
    7
    >>> (d / "a.txt").write_text("altered")
    7
    >>> verify_model(d)
    Traceback (most recent call last):
    ...
    hepflow.errors.ModelError: .../a.txt: sha256 ... differs from the model card's ...: ...
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hepflow.errors import ModelError, OutputError
from hepflow.outputs import write_json

__all__ = [
    "CARD_JSON",
    "CARD_MD",
    "MAX_BYTES",
    "MODEL_FILES",
    "install_model",
    "render_card",
    "sha256_file",
    "verify_model",
]

CARD_JSON = "card.json"
CARD_MD = "card.md"
#: the files of a ``hepflow train neutrino`` output that inference needs, and that ship
MODEL_FILES: tuple[str, ...] = (
    "flow/config.json",
    "flow/model.safetensors",
    "regression/config.json",
    "regression/model.safetensors",
    "training.json",
)
#: the most a shipped model may weigh, all files together (package data: a few MB)
MAX_BYTES = 5 * 2**20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``card.json`` of a pretrained model directory, refused when missing or unreadable."""
    path = Path(directory) / CARD_JSON
    if not path.is_file():
        raise ModelError(
            f"{path} is missing: a pretrained model without its model card is refused "
            "(rebuild it: docs/training.md, 'The pretrained neutrino model')"
        )
    try:
        card = json.loads(path.read_text())
        files = card["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path} is not a model card: {err}") from err
    if not isinstance(files, dict) or not files:
        raise ModelError(f"{path}: 'files' must map each model file to its sha256")
    return card


def verify_model(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file of a pretrained model directory against its card; returns the card.

    Refused (:class:`~hepflow.errors.ModelError`, one line naming the file): a missing card, a
    file the card lists that is missing or whose sha256 differs, a file the card does not list
    (besides the card itself), and a model of more than :data:`MAX_BYTES`.
    """
    d = Path(directory)
    card = read_card(d)
    for name, entry in sorted(card["files"].items()):
        path = d / name
        if not path.is_file():
            raise ModelError(
                f"{path} is missing: the model card lists it; the pretrained model is incomplete"
            )
        expected = entry.get("sha256") if isinstance(entry, Mapping) else None
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(
                f"{path}: sha256 {actual[:16]}... differs from the model card's {str(expected)[:16]}...: "
                "the pretrained model is damaged or altered; reinstall hepflow or rebuild it "
                "(docs/training.md)"
            )
    listed = {*card["files"], CARD_JSON, CARD_MD}
    for path in sorted(p for p in d.rglob("*") if p.is_file()):
        if path.relative_to(d).as_posix() not in listed and "__pycache__" not in path.parts:
            raise ModelError(f"{path} is not listed in the model card {d / CARD_JSON}: refused")
    total = sum(int(e.get("bytes", 0)) for e in card["files"].values())
    if total > MAX_BYTES:
        raise ModelError(f"{d}: the pretrained model weighs {total} bytes, more than {MAX_BYTES}")
    return card


def install_model(
    model_dir: str | os.PathLike[str], target: str | os.PathLike[str], *, card: Mapping[str, Any]
) -> dict[str, Any]:
    """Copy the :data:`MODEL_FILES` of a trained model into ``target`` with its card.

    ``card`` is the record of what the model was trained and tested on (see
    ``tools/build_pretrained.py``); ``files`` (path: sha256 and bytes of each copied file) is
    added here. ``target`` is written under a temporary name and replaces an earlier pretrained
    model (a directory with a ``card.json``, or an empty one) only when complete. A model over
    :data:`MAX_BYTES` is refused before anything is written. Returns the card as written.
    """
    src, out = Path(model_dir), Path(target)
    missing = [name for name in MODEL_FILES if not (src / name).is_file()]
    if missing:
        raise ModelError(f"{src / missing[0]} is missing: not a complete `hepflow train neutrino` output")
    sizes = {name: (src / name).stat().st_size for name in MODEL_FILES}
    if sum(sizes.values()) > MAX_BYTES:
        largest = max(sizes, key=sizes.__getitem__)
        raise ModelError(
            f"{src}: the model weighs {sum(sizes.values())} bytes, more than the {MAX_BYTES} a shipped "
            f"model may ({largest}: {sizes[largest]} bytes); use a smaller [flow]/[summary] config"
        )
    if out.exists() and not (out / CARD_JSON).is_file() and any(out.iterdir()):
        raise OutputError(f"{out} exists and holds no pretrained model ({CARD_JSON}): choose another target")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name in MODEL_FILES:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, tmp / name)
        files = {name: {"sha256": sha256_file(tmp / name), "bytes": sizes[name]} for name in MODEL_FILES}
        written = {**card, "files": files}
        write_json(tmp / CARD_JSON, written)
        (tmp / CARD_MD).write_text(render_card(written))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping | list):
        return f"`{json.dumps(v, sort_keys=True)}`"
    return str(v)


def render_card(card: Mapping[str, Any]) -> str:
    """The model card as markdown: summary, training data, detector, held-out metrics, files.

    Example:
        >>> print(render_card({"model": "m", "hepflow_version": "0.1.0", "date": "2026-12-06",
        ...                    "files": {"a": {"sha256": "ab", "bytes": 2}}}).splitlines()[0])
        # Pretrained neutrino model: m
    """
    lines = [f"# Pretrained neutrino model: {card.get('model', 'hepflow')}", ""]
    lines.append(f"Built {card.get('date', '?')} with hepflow {card.get('hepflow_version', '?')}.")
    if text := card.get("intended_use"):
        lines += ["", text]
    for key, title in (("training_data", "Training data"), ("held_out", "Held-out sample")):
        if section := card.get(key):
            lines += ["", f"## {title}", ""]
            lines += [f"- {k}: {_value(v)}" for k, v in section.items()]
    if detector := card.get("detector"):
        lines += ["", "## Detector", ""] + [f"- {k}: {_value(v)}" for k, v in detector.items()]
    if metrics := card.get("metrics"):
        lines += ["", "## Metrics on the held-out sample", ""]
        lines += [f"- {line}" for line in metrics.get("verdicts", [])]
        res = metrics.get("resolution", {})
        if res:
            lines += ["", "| estimate | component | bias (GeV) | RMS (GeV) | core width IQR/1.349 (GeV) |"]
            lines.append("|---|---|---|---|---|")
            for method, comps in res.items():
                for comp in ("px", "py", "pz"):
                    if r := comps.get(comp):
                        lines.append(
                            f"| {method} | {comp} | {r['bias']:.2f} | {r['rms']:.2f} | {r['iqr_width']:.2f} |"
                        )
        if cov := metrics.get("coverage"):
            lines += ["", "Coverage of the flow's central intervals (nominal: the level):", ""]
            for level, comps in cov.items():
                lines.append(f"- {level}: " + ", ".join(f"{k} {v:.3f}" for k, v in comps.items()))
        for key in sorted(set(metrics) - {"verdicts", "resolution", "coverage"}):
            lines.append(f"- {key}: {_value(metrics[key])}")
    if config := card.get("config"):
        lines += ["", "## Config", "", "```json", json.dumps(config, indent=1, sort_keys=True), "```"]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {name} | {e['bytes']} | `{e['sha256']}` |" for name, e in sorted(card["files"].items())]
    return "\n".join(lines) + "\n"
