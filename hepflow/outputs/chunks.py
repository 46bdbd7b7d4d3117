"""Names of per-chunk output files: dataset, source file and entry range."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
