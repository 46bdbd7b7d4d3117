"""One run, one output: a lock file per output directory, and who is alive.

:func:`output_lock` creates ``<directory>/.hepflow-lock`` atomically (``O_CREAT | O_EXCL``) with the
process id, host and start time of the run, and removes it when the run ends. A second run into
the same directory is refused while the first is alive; a lock left by a run that died (its pid
no longer exists on this host) is taken over. Temporaries carry the host and pid of the process
that writes them (:func:`temporary_prefix`), so :func:`~hepflow.outputs.atomic.clean_stale_temporaries`
removes only those of processes that are gone.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with output_lock(d):
    ...     lock_holder(d)["pid"] == os.getpid()
    True
    >>> lock_holder(d) is None
    True
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hepflow.errors import OutputError

__all__ = ["LOCK_NAME", "host_tag", "lock_holder", "output_lock", "process_alive", "writer_of"]

LOCK_NAME = ".hepflow-lock"
#: a lock file without readable content (its writer died between creating and filling it) is
#: stale after this many seconds
UNREADABLE_LOCK_S = 60.0


def host_tag() -> str:
    """A short, file-name safe tag of this host (8 hex digits of the host name's SHA-1)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:  # a killed child that its parent has not reaped yet is gone for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def writer_of(name: str, prefix: str) -> tuple[str, int] | None:
    """``(host tag, pid)`` encoded in a temporary's ``name`` after ``prefix`` (see
    :func:`temporary_prefix`), or None for a name without them (written by an older hepflow)."""
    host, _, rest = name[len(prefix) :].partition("-")
    pid, _, _ = rest.partition("-")
    if len(host) != 8 or not pid.isdigit():
        return None
    return host, int(pid)


def temporary_prefix(prefix: str) -> str:
    """``prefix`` followed by this host's tag and this process's pid: the start of the names of
    the temporaries this process writes."""
    return f"{prefix}{host_tag()}-{os.getpid()}-"


def lock_holder(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of the run holding ``directory``'s lock, or None when it is free or stale."""
    return lock_holder_file(Path(directory) / LOCK_NAME)


def lock_holder_file(path: Path) -> dict[str, Any] | None:
    """The record in the lock file ``path`` if its run is alive (or cannot be checked), else None."""
    try:
        text = path.read_text()
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(f"cannot read the lock {path}: {err.strerror}") from err
    try:
        holder = json.loads(text)
        pid, host = int(holder["pid"]), str(holder["host"])
    except (ValueError, KeyError, TypeError):
        age = datetime.datetime.now().timestamp() - stat.st_mtime
        return None if age > UNREADABLE_LOCK_S else {"pid": None, "host": "?", "started": "just now"}
    if host == socket.gethostname() and not process_alive(pid):
        return None
    return holder


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``directory``'s lock for the block (the directory must exist).

    Raises :class:`~hepflow.errors.OutputError` naming the other run (pid, host, start time)
    while a live run holds it. A run on another host cannot be checked from here: its lock is
    respected until it is removed (by that run, or by hand once that run is gone).
    """
    path = Path(directory) / LOCK_NAME
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(directory)
            if holder is not None:
                raise OutputError(
                    f"{directory} is being written by another hepflow run (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, started {holder.get('started')}); wait for it, or remove "
                    f"{path} if that run is gone"
                ) from None
            _take_over_stale(path)
            continue
        except OSError as err:
            raise OutputError(f"cannot write to {directory}: {err.strerror}") from err
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(record) + "\n")
        break
    else:  # pragma: no cover - three stale takeovers lost to other runs in a row
        raise OutputError(f"{directory}: could not take its lock {path}; try again")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def _take_over_stale(path: Path) -> None:
    """Move a stale lock out of the way; of several runs doing so at once, one succeeds and the
    others retry (and find the new lock)."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{host_tag()}-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if lock_holder_file(aside) is not None:  # another run took the lock over meanwhile: put it back
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)
