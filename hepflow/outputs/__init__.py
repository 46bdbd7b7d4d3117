"""Columnar outputs: atomic parquet / ROOT writers and chunk naming.

Every file hepflow writes is first written under a temporary name in the same directory and
renamed into place, so a killed job never leaves a partial file under its final name.
"""

from hepflow.outputs.atomic import atomic_write, write_json
from hepflow.outputs.chunks import ChunkId, chunk_id_from_metadata
from hepflow.outputs.columnar import read_parquet_dir, write_parquet, write_root

__all__ = [
    "ChunkId",
    "atomic_write",
    "chunk_id_from_metadata",
    "read_parquet_dir",
    "write_json",
    "write_parquet",
    "write_root",
]
