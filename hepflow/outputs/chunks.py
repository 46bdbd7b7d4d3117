"""Names of per-chunk output files: dataset, source file and entry range."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.errors import InputError


@dataclass(frozen=True)
class ChunkId:
    """Identifies one chunk of one input file of one dataset.

    Example:
        >>> ChunkId("ttbar", "/data/nano_1.root", 0, 5000).stem
        'ttbar__nano_1-60de6c0a__0-5000'
    """

    dataset: str
    filename: str
    entrystart: int
    entrystop: int

    @property
    def stem(self) -> str:
        """A file-system safe, unique and readable name for this chunk."""
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.filename).stem)[:60]
        digest = hashlib.sha1(self.filename.encode()).hexdigest()[:8]
        dataset = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.dataset)[:60] or "dataset"
        return f"{dataset}__{base}-{digest}__{self.entrystart}-{self.entrystop}"


def chunk_id_from_metadata(metadata: dict[str, Any]) -> ChunkId:
    """Build a :class:`ChunkId` from coffea's ``events.metadata``."""
    return ChunkId(
        dataset=str(metadata.get("dataset", "dataset")),
        filename=str(metadata["filename"]),
        entrystart=int(metadata["entrystart"]),
        entrystop=int(metadata["entrystop"]),
    )


def chunk_seed(seed: int, chunk: Mapping[str, Any]) -> int:
    """A stable 128-bit seed for the noise of one chunk: a SHA-256 of ``seed`` and its identity.

    ``chunk`` is coffea's ``events.metadata`` (or any mapping with the same keys): the file is
    identified by ``fileuuid`` when it is present and not empty (the same file read through
    another redirector keeps its uuid), else by ``filename``; the entry range by ``entrystart``
    and ``entrystop``. ``dataset``, ``treename`` and other keys are ignored. Unlike Python's
    ``hash()`` the result is the same in every process and on every machine.

    Example:
        >>> meta = {"dataset": "tt", "filename": "a.root", "entrystart": 0, "entrystop": 100}
        >>> chunk_seed(1, meta) == chunk_seed(1, dict(meta, dataset="other"))
        True
        >>> chunk_seed(1, meta) == chunk_seed(1, dict(meta, entrystart=100, entrystop=200))
        False
        >>> chunk_seed(1, {"filename": "a.root"})
        Traceback (most recent call last):
        ...
        hepflow.errors.InputError: chunk identity has no 'entrystart': pass events.metadata
    """
    if not isinstance(chunk, Mapping):
        raise InputError(f"chunk must be a mapping such as events.metadata, got {type(chunk).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InputError(f"seed must be an integer, got {seed!r}")
    uuid = chunk.get("fileuuid")
    file_id = ("fileuuid", str(uuid)) if uuid else ("filename", chunk.get("filename"))
    if not file_id[1]:
        raise InputError("chunk identity has neither 'fileuuid' nor 'filename': pass events.metadata")
    bounds = []
    for key in ("entrystart", "entrystop"):
        value = chunk.get(key)
        if value is None:
            raise InputError(f"chunk identity has no {key!r}: pass events.metadata")
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise InputError(f"chunk identity: {key} must be a non-negative integer, got {value!r}")
        bounds.append(int(value))
    if bounds[0] > bounds[1]:
        raise InputError(f"chunk identity: entrystart {bounds[0]} > entrystop {bounds[1]}")
    text = json.dumps(["hepflow.PosteriorSampler", int(seed), *file_id, *bounds])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "little")
