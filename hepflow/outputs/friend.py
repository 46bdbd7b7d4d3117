"""Friend trees: per-event output columns aligned entry by entry with the input ``Events`` tree.

The chunk files of :func:`hepflow.processing.run_processor` hold one row per *selected* event.
:func:`write_friends` turns them into one ROOT file per input file, ``<dataset>__<file>-<hash>
_friend.root``, whose TTree :data:`FRIEND_TREE` has exactly as many entries as the input tree:
entry ``i`` belongs to input event ``i``, so the file can be attached as a friend (ROOT's
``AddFriend``, or reading both trees with uproot and zipping them). Per entry it holds:

* ``run``, ``luminosityBlock``, ``event``: copied from the input (check the alignment with them);
* ``selected``: whether the event passed the selection (has output columns);
* the requested columns: their value for selected events; NaN (floats), 0 (integers) or False
  (booleans) for the others. Fixed-size columns (``flow_px[256]``) stay fixed-size arrays.

Rows are placed by their ``run``/``luminosityBlock``/``event`` within the entry range of their
chunk, so the columns must carry these identifiers (hepflow's processors write them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.errors import ConfigError, InputError, OutputError
from hepflow.outputs.atomic import atomic_write
from hepflow.outputs.chunks import ChunkId
from hepflow.outputs.columnar import root_branches

__all__ = ["FRIEND_TREE", "ID_BRANCHES", "friend_path", "write_friends"]

#: Name of the TTree in every friend file.
FRIEND_TREE = "Friend"
#: Event identifiers copied from the input tree and used to place the rows.
ID_BRANCHES = ("run", "luminosityBlock", "event")


def friend_path(directory: str | os.PathLike[str], dataset: str, filename: str) -> Path:
    """Where the friend of input ``filename`` (of ``dataset``) goes: the chunks' name without the
    entry range.

    Example:
        >>> friend_path("out", "ttbar", "/data/nano_1.root").name
        'ttbar__nano_1-60de6c0a_friend.root'
    """
    stem = ChunkId(dataset, filename, 0, 0).stem.rsplit("__", 1)[0]
    return Path(directory) / f"{stem}_friend.root"


def write_friends(
    chunks: Mapping[str, Mapping[str, Any]],
    directory: str | os.PathLike[str],
    *,
    columns: Sequence[str],
    trees: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write one friend file per input file from the chunks of a :func:`run_processor` output.

    Args:
        chunks: the run's chunk records ``{stem: {"dataset", "filename", "entrystart",
            "entrystop", "files"}}`` (``run_processor(...)["chunks"]``); each chunk's parquet file
            lies in ``directory``.
        directory: the chunk directory; the friend files are written there, atomically.
        columns: the output columns to carry (flat or fixed-size; see the module docstring).
        trees: input file -> tree name (default ``Events``).

    Returns ``{input file: friend file}``. An input file whose chunks do not cover all its
    entries (``--maxchunks``), whose identifiers repeat within a chunk, or whose chunk rows are
    not among the chunk's input events is refused with an :class:`OutputError` /
    :class:`InputError` naming it, before its friend is written.
    """
    by_file: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for stem, info in chunks.items():
        by_file.setdefault((str(info["dataset"]), str(info["filename"])), []).append({**info, "stem": stem})
    written = {}
    for (dataset, filename), unordered in sorted(by_file.items()):
        parts = sorted(unordered, key=lambda info: int(info["entrystart"]))
        target = friend_path(directory, dataset, filename)
        tree = _open_tree(filename, (trees or {}).get(filename, "Events"))
        _check_coverage(filename, parts, tree.num_entries)
        with atomic_write(target) as tmp:
            _write_friend(tmp, tree, parts, Path(directory), columns)
        written[filename] = target
    return written


def _open_tree(filename: str, treename: str) -> Any:
    import uproot

    try:
        tree = uproot.open(filename)[treename]
        missing = [b for b in ID_BRANCHES if b not in tree]
    except Exception as err:  # uproot raises many types for unreadable files
        raise InputError(f"cannot read tree {treename!r} of {filename}: {err}") from err
    if missing:
        raise InputError(f"{filename}: tree {treename!r} has no {', '.join(missing)} branch to align by")
    return tree


def _check_coverage(filename: str, parts: Sequence[Mapping[str, Any]], entries: int) -> None:
    bounds = [(int(info["entrystart"]), int(info["entrystop"])) for info in parts]
    starts = [start for start, _ in bounds]
    if starts != [0, *(stop for _, stop in bounds[:-1])] or bounds[-1][1] != entries:
        ranges = ", ".join(f"{start}-{stop}" for start, stop in bounds)
        raise OutputError(
            f"{filename}: the processed chunks ({ranges}) do not tile its {entries} entries; "
            "a friend tree needs every entry once (run without --maxchunks)"
        )


def _write_friend(
    path: Path, tree: Any, parts: Sequence[Mapping[str, Any]], directory: Path, columns: Sequence[str]
) -> None:
    import uproot

    with uproot.recreate(path) as fout:
        for info in parts:
            start, stop = int(info["entrystart"]), int(info["entrystop"])
            ids = tree.arrays(list(ID_BRANCHES), entry_start=start, entry_stop=stop, library="np")
            rows = _read_chunk(directory / f"{info['stem']}.parquet", columns)
            where = f"{tree.file.file_path} entries {start}-{stop}"
            branches = _aligned(rows, ids, columns, where)
            if FRIEND_TREE not in fout:
                fout.mktree(FRIEND_TREE, {k: np.dtype((v.dtype, v.shape[1:])) for k, v in branches.items()})
            fout[FRIEND_TREE].extend(branches)


def _read_chunk(path: Path, columns: Sequence[str]) -> ak.Array:
    if not path.is_file():
        raise InputError(f"{path} is missing: a friend tree is built from the parquet chunks")
    try:
        rows = ak.from_parquet(path)
    except Exception as err:  # pyarrow raises many types for corrupt files
        raise InputError(f"cannot read parquet file {path}: {err}") from err
    missing = [c for c in (*ID_BRANCHES, *columns) if c not in rows.fields]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)} for the friend tree")
    return rows


def _aligned(
    rows: ak.Array, ids: Mapping[str, np.ndarray], columns: Sequence[str], where: str
) -> dict[str, np.ndarray]:
    """The friend branches of one entry range: ``ids`` of every entry, ``selected``, and the
    ``columns`` of ``rows`` placed at the entries whose identifiers they carry."""
    keys = np.rec.fromarrays([ids[k] for k in ID_BRANCHES], names=list(ID_BRANCHES))
    wanted = np.rec.fromarrays(
        [ak.to_numpy(rows[k]).astype(ids[k].dtype) for k in ID_BRANCHES], names=list(ID_BRANCHES)
    )
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    if len(ordered) > 1 and np.any(ordered[1:] == ordered[:-1]):
        raise InputError(f"{where}: run/luminosityBlock/event repeat, the rows cannot be aligned")
    found = np.minimum(np.searchsorted(ordered, wanted), max(len(ordered) - 1, 0))
    if len(wanted) and (not len(ordered) or np.any(ordered[found] != wanted)):
        raise OutputError(f"{where}: the chunk's rows are not among these input events (stale chunk?)")
    position = order[found]
    out: dict[str, np.ndarray] = {k: np.asarray(ids[k]) for k in ID_BRANCHES}
    selected = np.zeros(len(keys), bool)
    selected[position] = True
    out["selected"] = selected
    for name, values in root_branches(rows[list(columns)]).items():
        if isinstance(values, ak.Array):
            raise ConfigError(f"column {name!r} is jagged: a friend tree carries flat or fixed-size columns")
        full = np.full((len(keys), *values.shape[1:]), _missing(values.dtype), values.dtype)
        full[position] = values
        out[name] = full
    return out


def _missing(dtype: np.dtype) -> Any:
    """The value of an unselected entry: NaN for floats, 0 or False otherwise."""
    return np.nan if dtype.kind == "f" else dtype.type(0)
