"""Atomic parquet and ROOT (TTree) writers for awkward record arrays.

Both take a flat record array whose fields are numbers, jagged lists of numbers, or optional
numbers (``None`` for a missing truth value). In ROOT, optional numbers become the value with
a companion boolean branch ``<name>_valid`` (TTrees have no missing values); jagged fields get
their counter branch ``n<name>`` as uproot writes it.
"""

from __future__ import annotations

import os
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
    with atomic_write(path, overwrite=overwrite) as tmp, uproot.recreate(tmp) as fout:
        fout.mktree(treename, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in branches.items()})
        if len(array):
            fout[treename].extend(branches)
    return Path(path)


def root_branches(array: ak.Array) -> dict[str, np.ndarray | ak.Array]:
    """Map a flat record array onto TTree-writable branches (see the module docstring)."""
    out: dict[str, np.ndarray | ak.Array] = {}
    for name in array.fields:
        col = array[name]
        if col.ndim == 1:
            if _is_option(col):
                valid = ~ak.is_none(col)
                out[name] = ak.to_numpy(ak.fill_none(col, np.nan if _is_float(col) else 0))
                out[f"{name}_valid"] = ak.to_numpy(valid)
            else:
                out[name] = ak.to_numpy(col)
        else:
            out[name] = ak.values_astype(ak.fill_none(col, np.nan), np.float64) if _is_option(col) else col
    return out


def read_parquet_dir(directory: str | os.PathLike[str], *, columns: list[str] | None = None) -> ak.Array:
    """Concatenate every ``*.parquet`` chunk in ``directory`` (sorted by name)."""
    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise InputError(f"no parquet files in {directory}")
    arrays = []
    for f in files:
        try:
            arrays.append(ak.from_parquet(f, columns=columns))
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise InputError(f"cannot read parquet file {f}: {err}") from err
    return ak.concatenate(arrays) if len(arrays) > 1 else arrays[0]


def _is_option(col: ak.Array) -> bool:
    return isinstance(col.type.content, ak.types.OptionType)


def _is_float(col: ak.Array) -> bool:
    content = col.type.content
    content = content.content if isinstance(content, ak.types.OptionType) else content
    return isinstance(content, ak.types.NumpyType) and content.primitive.startswith("float")
