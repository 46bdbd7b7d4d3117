"""Atomic parquet and ROOT (TTree) writers for awkward record arrays.

Both take a flat record array whose fields are numbers, jagged lists of numbers, or optional
numbers (``None`` for a missing truth value). In ROOT, optional numbers become the value with
a companion boolean branch ``<name>_valid`` (TTrees have no missing values); jagged fields get
their counter branch ``n<name>`` as uproot writes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from hepflow.errors import InputError
from hepflow.outputs.atomic import atomic_write


def write_parquet(array: ak.Array, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
    """Write ``array`` to ``path`` as parquet, atomically. Returns the final path."""
    with atomic_write(path, overwrite=overwrite) as tmp:
        ak.to_parquet(array, tmp, compression="zstd")
    return Path(path)


def write_root(
    array: ak.Array,
    path: str | os.PathLike[str],
    *,
    treename: str = "Events",
    overwrite: bool = True,
) -> Path:
    """Write ``array`` to ``path`` as a ROOT TTree named ``treename``, atomically."""
    import uproot

    branches = root_branches(array)
    types = {
        k: v.type if isinstance(v, ak.Array) else np.dtype((v.dtype, v.shape[1:]))
        for k, v in branches.items()
    }
    with atomic_write(path, overwrite=overwrite) as tmp, uproot.recreate(tmp) as fout:
        fout.mktree(treename, types, counter_name=lambda counted: f"n_{counted}")
        if len(array):
            fout[treename].extend(branches)
    return Path(path)


def root_branches(array: ak.Array) -> dict[str, np.ndarray | ak.Array]:
    """Map a flat record array onto TTree-writable branches (see the module docstring).

    Fixed-size fields (``n * 256 * float32``) become array branches (``float[256]``). Jagged
    fields sharing a prefix (``jet_px``, ``jet_py``, ...) become one collection with a
    single counter branch ``n_<prefix>`` (``n_jet``), as NanoAOD stores collections.
    """
    out: dict[str, np.ndarray | ak.Array] = {}
    jagged: dict[str, dict[str, ak.Array]] = {}
    for name in array.fields:
        col = array[name]
        if col.ndim == 1:
            if _is_option(col):
                out[name] = _fill_missing(col)
                out[f"{name}_valid"] = ak.to_numpy(~ak.is_none(col))
            else:
                out[name] = ak.to_numpy(col)
        elif isinstance(col.type.content, ak.types.RegularType):
            out[name] = ak.to_numpy(col)  # fixed-size array branch, e.g. float[256]
        else:
            prefix, _, rest = name.partition("_")
            jagged.setdefault(prefix if rest else name, {})[rest or name] = col
    for prefix, fields in jagged.items():
        counts = [ak.to_numpy(ak.num(c, axis=1)) for c in fields.values()]
        if len(fields) > 1 and all(np.array_equal(counts[0], c) for c in counts[1:]):
            out[prefix] = ak.zip(fields)
        else:
            out.update({f"{prefix}_{k}" if k != prefix else k: v for k, v in fields.items()})
    return out


def _fill_missing(col: ak.Array) -> np.ndarray:
    """Values of an optional 1D column, dtype kept, NaN (floats) or 0 (integers) where missing."""
    values = np.ma.asarray(ak.to_numpy(col, allow_missing=True))
    return np.ma.filled(values, np.nan if values.dtype.kind == "f" else 0)


def read_parquet_dir(directory: str | os.PathLike[str], *, columns: list[str] | None = None) -> ak.Array:
    """The rows of a chunk directory: the parquet chunks that its ``run.json`` lists, in order.

    The records are checked against the files (:func:`hepflow.outputs.records.recorded_chunks`:
    a listed chunk missing, a parquet file that no record lists, or a chunk with another number
    of rows than recorded is refused), so the rows read are exactly those of the run. A
    directory that no hepflow run wrote (no ``run.json``, no chunk markers), e.g. parquet files
    of your own, is read whole, in name order.
    """
    return read_chunks(parquet_chunks(directory), columns=columns)


def parquet_chunks(directory: str | os.PathLike[str]) -> list[tuple[Path, int | None]]:
    """``[(parquet file, recorded rows)]`` that :func:`read_parquet_dir` reads (rows None for a
    directory that no hepflow run wrote); :class:`~hepflow.errors.InputError` when there is none."""
    from hepflow.outputs.records import recorded_chunks

    chunks = recorded_chunks(directory)
    if chunks is None:
        chunks = [(f, None) for f in sorted(Path(directory).glob("*.parquet")) if not f.name.startswith(".")]
    if not chunks:
        raise InputError(f"no parquet files in {directory}")
    return chunks


def read_chunks(chunks: Sequence[tuple[Path, int | None]], *, columns: list[str] | None = None) -> ak.Array:
    """Concatenate the parquet ``chunks`` (``(path, recorded rows or None)``), checking each
    chunk's rows against its record; :class:`~hepflow.errors.InputError` names a corrupt file."""
    arrays = [read_chunk(path, rows, columns=columns) for path, rows in chunks]
    return ak.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def read_chunk(path: Path, rows: int | None, *, columns: list[str] | None = None) -> ak.Array:
    """One parquet chunk; its number of rows must be ``rows`` (the run's record) unless None."""
    try:
        array = ak.from_parquet(path, columns=columns)
    except Exception as err:  # pyarrow raises many types for corrupt files
        raise InputError(f"cannot read parquet file {path}: {err}") from err
    if rows is not None and rows >= 0 and len(array) != rows:
        raise InputError(f"{path} holds {len(array)} rows, its run records {rows}: rerun with --overwrite")
    return array


def _is_option(col: ak.Array) -> bool:
    return isinstance(col.type.content, ak.types.OptionType)
