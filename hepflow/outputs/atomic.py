"""Write-to-temporary-then-rename, the one way hepflow creates output files."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hepflow.errors import OutputError
from hepflow.outputs.lock import host_tag, lock_holder, process_alive, temporary_prefix, writer_of

TMP_PREFIX = ".hepflow-tmp-"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    On an exception the temporary file is removed and ``path`` is untouched. The rename is
    atomic on POSIX file systems (same directory, :func:`os.replace`).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_write(d / "x.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "x.txt").read_text()
        'hello'
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise OutputError(f"{final} exists; pass --overwrite to replace it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=temporary_prefix(TMP_PREFIX), suffix=final.suffix, dir=final.parent
        )
    except OSError as err:
        raise OutputError(f"cannot write to {final.parent}: {err.strerror}") from err
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs are shared like any new file
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically; returns the final path."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return Path(path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def clean_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of dead writers from ``directory``; returns what was removed.

    A temporary's name carries the host and pid of the process writing it (:func:`atomic_write`).
    Those of a process of this host that no longer exists are removed. Those of other hosts (the
    workers of a batch cluster) and those without a writer in their name (older hepflow) cannot
    be checked: they are removed only while no other live run holds the directory's lock
    (:func:`hepflow.outputs.lock.output_lock`), so the in-flight temporaries of a running job,
    written by its driver or its workers, are never touched.
    """
    holder = lock_holder(directory)
    others_alive = holder is not None and holder.get("pid") != os.getpid()
    removed = []
    for tmp in Path(directory).glob(f"{TMP_PREFIX}*"):
        writer = writer_of(tmp.name, TMP_PREFIX)
        if writer is not None and writer[0] == host_tag():
            stale = not process_alive(writer[1])
        else:
            stale = not others_alive
        if stale:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
