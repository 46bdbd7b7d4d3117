"""Model cards of the pretrained models hepflow ships: what a model was trained on, how well it
does, and the sha256 of every model file.

A pretrained model directory holds the files of a trained model that inference needs,
``card.json`` (the record) and ``card.md`` (the same, rendered for people). :func:`install_files`
copies a trained model into such a directory and writes the card; :func:`verify_model` checks it
before the model is loaded: a missing card, a missing, unlisted or altered file, or a model over
``max_bytes`` is refused with one line naming the file. Each analysis says which files ship and
how its card renders (:mod:`hepflow.neutrino.pretrained.card`,
:mod:`hepflow.cosmic.pretrained`).

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hepflow.errors import ModelError, OutputError
from hepflow.outputs import write_json

__all__ = [
    "CARD_JSON",
    "CARD_MD",
    "MAX_BYTES",
    "PRETRAINED",
    "install_files",
    "is_pretrained",
    "read_card",
    "render_files",
    "render_sections",
    "sha256_file",
    "value_text",
    "verify_model",
]

CARD_JSON = "card.json"
CARD_MD = "card.md"
#: the name that selects an analysis's shipped model (``--model pretrained``); ``./pretrained``
#: is a folder
PRETRAINED = "pretrained"
#: the most a shipped model may weigh, all files together (package data: a few MB)
MAX_BYTES = 5 * 2**20


def is_pretrained(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` names the shipped model (exactly ``"pretrained"``, not a path).

    Example:
        >>> is_pretrained("pretrained"), is_pretrained("./pretrained"), is_pretrained(Path("pretrained"))
        (True, False, False)
    """
    return isinstance(model, str) and model == PRETRAINED


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(directory: str | os.PathLike[str], *, rebuild: str = "rebuild it") -> dict[str, Any]:
    """The ``card.json`` of a pretrained model directory, refused when missing or unreadable
    (``rebuild`` says how to make the model again)."""
    path = Path(directory) / CARD_JSON
    if not path.is_file():
        raise ModelError(
            f"{path} is missing: a pretrained model without its model card is refused ({rebuild})"
        )
    try:
        card = json.loads(path.read_text())
        files = card["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path} is not a model card: {err}") from err
    if not isinstance(files, dict) or not files:
        raise ModelError(f"{path}: 'files' must map each model file to its sha256")
    return card


def verify_model(
    directory: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES, rebuild: str = "rebuild it"
) -> dict[str, Any]:
    """Check every file of a pretrained model directory against its card; returns the card.

    Refused (:class:`~hepflow.errors.ModelError`, one line naming the file): a missing card, a
    file the card lists that is missing or whose sha256 differs, a file the card does not list
    (besides the card itself), and a model of more than ``max_bytes``.
    """
    d = Path(directory)
    card = read_card(d, rebuild=rebuild)
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
                f"the pretrained model is damaged or altered; reinstall hepflow or {rebuild}"
            )
    listed = {*card["files"], CARD_JSON, CARD_MD}
    for path in sorted(p for p in d.rglob("*") if p.is_file()):
        if path.relative_to(d).as_posix() not in listed and "__pycache__" not in path.parts:
            raise ModelError(f"{path} is not listed in the model card {d / CARD_JSON}: refused")
    total = sum(int(e.get("bytes", 0)) for e in card["files"].values())
    if total > max_bytes:
        raise ModelError(f"{d}: the pretrained model weighs {total} bytes, more than {max_bytes}")
    return card


def install_files(
    model_dir: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    files: Sequence[str],
    card: Mapping[str, Any],
    render: Callable[[Mapping[str, Any]], str],
    what: str,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """Copy ``files`` of a trained model into ``target`` with its card.

    ``card`` is the record of what the model was trained and tested on; ``files`` (path: sha256
    and bytes of each copied file) is added here, and ``render`` writes ``card.md``. ``target``
    is written under a temporary name and replaces an earlier pretrained model (a directory with
    a ``card.json``, or an empty one) only when complete. A model over ``max_bytes`` is refused
    before anything is written; ``what`` names the command whose output ``model_dir`` must be.
    Returns the card as written.
    """
    src, out = Path(model_dir), Path(target)
    missing = [name for name in files if not (src / name).is_file()]
    if missing:
        raise ModelError(f"{src / missing[0]} is missing: not a complete `{what}` output")
    sizes = {name: (src / name).stat().st_size for name in files}
    if sum(sizes.values()) > max_bytes:
        largest = max(sizes, key=sizes.__getitem__)
        raise ModelError(
            f"{src}: the model weighs {sum(sizes.values())} bytes, more than the {max_bytes} a shipped "
            f"model may ({largest}: {sizes[largest]} bytes); use a smaller [flow] config"
        )
    if out.exists() and not (out / CARD_JSON).is_file() and any(out.iterdir()):
        raise OutputError(f"{out} exists and holds no pretrained model ({CARD_JSON}): choose another target")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, tmp / name)
        listed = {name: {"sha256": sha256_file(tmp / name), "bytes": sizes[name]} for name in files}
        written = {**card, "files": listed}
        write_json(tmp / CARD_JSON, written)
        (tmp / CARD_MD).write_text(render(written))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def value_text(v: Any) -> str:
    """A card value as markdown text: floats to 4 digits, lists and mappings as JSON."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, Mapping | list):
        return f"`{json.dumps(v, sort_keys=True)}`"
    return str(v)


def render_sections(card: Mapping[str, Any], sections: Sequence[tuple[str, str]]) -> list[str]:
    """Markdown lines of the card's mapping-valued ``sections`` (``(key, title)``): a heading
    and one bullet per entry; absent sections are skipped.

    Example:
        >>> render_sections({"training_data": {"seeds": [1, 2]}}, [("training_data", "Training data")])
        ['', '## Training data', '', '- seeds: `[1, 2]`']
    """
    lines: list[str] = []
    for key, title in sections:
        if section := card.get(key):
            lines += ["", f"## {title}", ""]
            lines += [f"- {k}: {value_text(v)}" for k, v in section.items()]
    return lines


def render_files(card: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the card's config (as JSON) and its files table."""
    lines: list[str] = []
    if config := card.get("config"):
        lines += ["", "## Config", "", "```json", json.dumps(config, indent=1, sort_keys=True), "```"]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {name} | {e['bytes']} | `{e['sha256']}` |" for name, e in sorted(card["files"].items())]
    return lines
