"""The records of a processing output directory: chunk markers, ``run.json``, and who may read what.

A processing run (:func:`hepflow.processing.run_processor`) writes, per chunk, the chunk files
and then a marker ``<chunk>.json`` (the chunk is complete), and at the end ``run.json``, which
lists the chunks of the run. Both record the run's provenance
(:mod:`hepflow.outputs.provenance`): ``producer`` (processor and settings; for inference the
model's checksum, samples and seed), ``chunking`` (``chunksize``, ``maxchunks``) and
``hepflow_version``; a marker adds its ``input`` file (resolved path, size, ROOT uuid), and
``run.json`` the whole ``fileset``.

* :func:`check_directory` (before a run): a directory holding chunks of another producer,
  chunking, hepflow version, dataset or input file is refused with what differs, unless
  ``overwrite``; it returns the markers found, so that the run can afterwards remove the chunks
  of earlier runs that it did not rewrite (:func:`remove_replaced`), and nothing else.
* :func:`recorded_chunks` (readers: training data, ``merge``, ``report``): the chunk files that
  ``run.json`` lists, checked against the directory (a listed file missing, or a chunk file that
  no record lists, is refused), so that the rows read are the rows of that run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hepflow.errors import InputError, OutputError
from hepflow.outputs.atomic import TMP_PREFIX
from hepflow.outputs.provenance import differences

__all__ = [
    "CUTFLOW_FILE",
    "RUN_FILE",
    "check_directory",
    "chunk_markers",
    "read_run",
    "recorded_chunks",
    "remove_replaced",
]

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CUTFLOW_FILE = "cutflow.json"
#: the keys of a run's provenance that every chunk marker repeats
RUN_KEYS = ("producer", "chunking", "hepflow_version")
#: the name of a chunk marker or chunk file (hepflow.outputs.chunks.ChunkId.stem + suffix)
_CHUNK = re.compile(r"^.+__.+-[0-9a-f]{8}__\d+-\d+\.(json|parquet|root)$")
_REPLACE = "pass --overwrite to replace them or choose another --output"


def chunk_markers(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{chunk stem: marker content}`` of the complete chunks in ``directory``."""
    out = {}
    for marker in sorted(Path(directory).glob("*.json")):
        if not _CHUNK.match(marker.name) or marker.name.startswith(TMP_PREFIX):
            continue
        try:
            info = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise InputError(f"chunk marker {marker} is unreadable: {err}") from err
        if not isinstance(info, dict):
            raise InputError(f"chunk marker {marker} is not a chunk record")
        out[marker.stem] = info
    return out


def read_run(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The content of ``directory/run.json``, or None when there is none."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} is unreadable: {err}") from err
    if not isinstance(run, dict) or not isinstance(run.get("chunks"), dict):
        raise InputError(f"{path} is not the record of a hepflow run (no 'chunks')")
    return run


def check_directory(
    directory: str | os.PathLike[str],
    provenance: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    overwrite: bool = False,
) -> dict[str, dict[str, Any]]:
    """Refuse (:class:`~hepflow.errors.OutputError`) to run into ``directory`` when it holds
    chunks or a ``run.json`` of another run than this one (``provenance``: the run keys of
    :data:`RUN_KEYS`; ``inputs``: ``{dataset: {resolved path: file identity}}``), naming what
    differs, unless ``overwrite``. Returns the chunk markers found."""
    out = Path(directory)
    markers = chunk_markers(out)
    if overwrite:
        return markers
    ours = {(name, f) for name, files in inputs.items() for f in files}
    for stem, info in markers.items():
        record = info.get("provenance")
        if not isinstance(record, Mapping):
            raise OutputError(
                f"{out} holds chunks without provenance records (from an older hepflow, e.g. "
                f"{stem}); {_REPLACE}"
            )
        source = (record.get("input") or {}).get("path")
        if (info.get("dataset"), source) not in ours:
            raise OutputError(
                f"{out} holds chunks of {source} (dataset {info.get('dataset')}), which this run "
                f"does not read; {_REPLACE}"
            )
        if why := _run_differences(record, provenance):
            raise OutputError(f"{out} holds chunks made with other settings ({why}); {_REPLACE}")
        size = (record.get("input") or {}).get("size")
        now = inputs[info["dataset"]][source]
        if size is not None and now.get("size") not in (None, size):
            raise OutputError(
                f"{out} holds chunks of another version of {source} ({size} bytes, now "
                f"{now.get('size')}); {_REPLACE}"
            )
    run = read_run(out)
    if run is not None:
        record = run.get("provenance")
        if not isinstance(record, Mapping):
            raise OutputError(
                f"{out}/{RUN_FILE} has no provenance record (from an older hepflow); {_REPLACE}"
            )
        if why := _run_differences(record, provenance):
            raise OutputError(f"{out} holds the output of a run with other settings ({why}); {_REPLACE}")
        theirs = {(name, f) for name, files in (record.get("fileset") or {}).items() for f in files}
        if theirs != ours:
            extra = sorted(theirs - ours) or sorted(ours - theirs)
            side = "that run read" if theirs - ours else "this run reads"
            raise OutputError(
                f"{out} holds the output of a run over another fileset ({side} {extra[0][1]} of "
                f"dataset {extra[0][0]}, the other does not); {_REPLACE}"
            )
    return markers


def _run_differences(record: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    theirs, ours = ({k: r.get(k) for k in RUN_KEYS} for r in (record, provenance))
    classes = [(r.get("producer") or {}).get("class") for r in (theirs, ours)]
    if classes[0] != classes[1]:  # another processor: its settings are not comparable
        return f"producer.class: {classes[0]}, this run {classes[1]}"
    return "; ".join(differences(theirs, ours))


def remove_replaced(
    directory: str | os.PathLike[str],
    previous: Mapping[str, Mapping[str, Any]],
    written: Mapping[str, Mapping[str, Any]],
) -> list[Path]:
    """After a run with ``--overwrite``: remove the chunks of earlier runs (``previous`` markers)
    that this run (``written``) did not rewrite, and the files that an earlier marker lists and
    the rewritten chunk no longer has (another ``--format``). Only files named by a marker of a
    hepflow run are removed. Returns them."""
    out = Path(directory)
    removed = []
    for stem, info in previous.items():
        names = {str(f) for f in info.get("files", [])}
        now = written.get(stem)
        if now is None:
            names.add(f"{stem}.json")
        else:
            names -= {str(f) for f in now.get("files", [])}
        for name in sorted(names):
            path = out / name
            if Path(name).name != name or not _CHUNK.match(name) or not path.is_file():
                continue  # a marker names only chunk files of its own directory
            path.unlink()
            removed.append(path)
    if removed:
        log.info("%s: removed %d file(s) of earlier runs that this run replaced", out, len(removed))
    return removed


def recorded_chunks(
    directory: str | os.PathLike[str], *, fmt: str = "parquet"
) -> list[tuple[Path, int]] | None:
    """``[(chunk file, rows)]`` of the ``fmt`` files that ``directory/run.json`` lists, in chunk
    order; None for a directory that no hepflow run wrote (no ``run.json``, no chunk markers).

    Raises :class:`~hepflow.errors.InputError` when the records and the files disagree: chunk
    markers without ``run.json`` (a run that did not finish), a listed file missing, or a chunk
    file that ``run.json`` does not list (left by another run)."""
    d = Path(directory)
    run = read_run(d)
    if run is None:
        if chunk_markers(d):
            raise InputError(
                f"{d} holds chunk markers but no {RUN_FILE}: the run that wrote it did not finish; "
                "rerun it to complete the directory"
            )
        return None
    listed: list[tuple[Path, int]] = []
    for stem, info in sorted(run["chunks"].items()):
        files = [str(f) for f in info.get("files", [])]
        name = f"{stem}.{fmt}"
        if name not in files:
            raise InputError(f"{d}/{RUN_FILE}: chunk {stem} has no .{fmt} file (rerun with --format {fmt})")
        path = d / name
        for needed in (path, d / f"{stem}.json"):
            if not needed.is_file():
                raise InputError(
                    f"{d}/{RUN_FILE} lists {needed.name}, which is missing: rerun the command that wrote {d}"
                )
        listed.append((path, int(info.get("rows", -1))))
    names = {p.name for p, _ in listed}
    for path in sorted(d.glob(f"*.{fmt}")):
        if path.name not in names and not path.name.startswith(TMP_PREFIX):
            raise InputError(
                f"{d} holds {path.name}, which its {RUN_FILE} does not list (not written by that run): "
                "move it elsewhere"
            )
    return listed
