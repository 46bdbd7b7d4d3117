"""Parallel event generation: one worker process per part of a sample, one file per part.

:func:`generate_parts` splits ``events`` into ``jobs`` parts of (nearly) equal size and runs a
worker (for ttbar :func:`hepflow.generate.ttbar.write_part`) for each in its own process
(``spawn``: nothing of the parent's state, torch threads included, is inherited). The design
choices:

* **One file per part**, ``<stem>_000<suffix>`` to ``<stem>_<jobs-1><suffix>`` beside the
  requested path: a coffea fileset takes the list (or the glob ``<stem>_*.root``) and processes
  the files in parallel, and no serial merging pass eats the speed-up; ``hepflow process`` takes
  several ``--input`` files.
* **Seeds**: part ``k`` draws all its random numbers (Pythia's seed, the detector, the pileup)
  from child ``k`` of ``numpy.random.SeedSequence(seed)``; its content depends on ``seed``,
  ``jobs`` and ``k`` only, never on timing or on which worker ran first.
* **Event ids**: ``run`` = 1 and ``luminosityBlock`` = ``seed`` as in a single file; ``event``
  continues across the parts (part ``k`` starts after the last event of part ``k - 1``), so the
  parts together number their events 1 to ``events``: unique ids, as in one file.
* **All or nothing**: the parts are written to temporaries beside the outputs (named after this
  process, so a crashed run's are removed as stale) and renamed only when every part succeeded.
  A failing worker stops the others and gives one :class:`~hepflow.errors.HepflowError` line
  naming its part and the cause; no part file is left.

Example:
    >>> part_paths("ttbar.root", 3)
    [PosixPath('ttbar_000.root'), PosixPath('ttbar_001.root'), PosixPath('ttbar_002.root')]
    >>> part_sizes(10, 3)
    [4, 3, 3]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.errors import HepflowError, OutputError
from hepflow.outputs.atomic import TMP_PREFIX
from hepflow.outputs.lock import temporary_prefix

__all__ = ["Part", "PartsResult", "generate_parts", "part_paths", "part_sizes"]

#: seconds between checks that the workers are alive
_POLL_SECONDS = 0.5


def part_paths(path: str | os.PathLike[str], jobs: int) -> list[Path]:
    """The files of a ``jobs``-part sample requested at ``path``: ``<stem>_<k:03d><suffix>``."""
    path = Path(path)
    width = max(3, len(str(jobs - 1)))
    return [path.with_name(f"{path.stem}_{k:0{width}d}{path.suffix}") for k in range(jobs)]


def part_sizes(events: int, jobs: int) -> list[int]:
    """``events`` split into ``jobs`` parts, the first ``events % jobs`` one event larger."""
    return [events // jobs + (k < events % jobs) for k in range(jobs)]


@dataclass(frozen=True)
class Part:
    """What one worker generates: ``events`` events from ``first_event + 1`` into ``tmp``, with
    the generator's ``options`` (for ttbar: ``batch_size`` and ``pileup``)."""

    index: int
    tmp: Path
    final: Path
    events: int
    first_event: int
    seed: int
    jobs: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def sequence(self) -> np.random.SeedSequence:
        """Child ``index`` of ``SeedSequence(seed)``: all of the part's random numbers."""
        return np.random.SeedSequence(self.seed).spawn(self.jobs)[self.index]


@dataclass(frozen=True)
class PartsResult:
    """What :func:`generate_parts` wrote: the files in order, each worker's clock (seconds per
    stage, as its worker returned them) and the wall-clock seconds of the whole run."""

    parts: tuple[Path, ...]
    clocks: tuple[dict[str, float], ...]
    seconds: float


def _run(worker: Callable[..., dict[str, float]], part: Part, results: Any) -> None:
    """A worker process: run ``worker`` on ``part``; put ``("done", index, clock)`` or
    ``("error", index, message)`` on ``results``."""
    try:
        clock = worker(part, results.put)
    except BaseException as err:  # reported to the parent as one line
        text = str(err).strip().splitlines()
        results.put(("error", part.index, f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")))
    else:
        results.put(("done", part.index, clock))


def generate_parts(
    path: str | os.PathLike[str],
    *,
    events: int,
    seed: int,
    jobs: int,
    worker: Callable[[Part, Callable[[tuple[Any, ...]], None]], dict[str, float]],
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PartsResult:
    """Generate ``events`` events in ``jobs`` processes into :func:`part_paths` (``path``).

    ``worker(part, report)`` generates one :class:`Part` into ``part.tmp`` and returns its clock
    (``{"pythia": s, "detector": s}``); ``report(("progress", part.index, n))`` advances the
    progress bar. It is pickled into a spawned process, so it must be a module-level function
    (:func:`hepflow.generate.ttbar.write_part` for :func:`~hepflow.generate.ttbar.generate_ttbar`,
    which checks the options and calls this with ``jobs`` above 1).

    Raises:
        OutputError: a part file exists and ``overwrite`` is false, or the directory cannot be
            written.
        HepflowError: a worker failed or died; the message names the part, its file and the cause.
    """
    from tqdm.auto import tqdm

    finals = part_paths(path, jobs)
    if not overwrite:
        for final in finals:
            if final.exists():
                raise OutputError(f"{final} exists; pass --overwrite to replace it")
    directory = finals[0].parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write to {directory}: {err.strerror}") from err
    start = time.perf_counter()
    temporaries: list[Path] = []
    try:
        for final in finals:
            fd, name = tempfile.mkstemp(
                prefix=temporary_prefix(TMP_PREFIX), suffix=final.suffix, dir=directory
            )
            os.close(fd)
            temporaries.append(Path(name))
    except OSError as err:
        _remove(temporaries)
        raise OutputError(f"cannot write to {directory}: {err.strerror}") from err
    sizes = part_sizes(events, jobs)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    parts = [
        Part(k, tmp, final, n, int(first), seed, jobs, dict(options or {}))
        for k, (tmp, final, n, first) in enumerate(zip(temporaries, finals, sizes, firsts, strict=True))
    ]
    try:
        with tqdm(
            total=events, unit="ev", disable=not progress, desc=f"{finals[0].name} ... ({jobs} jobs)"
        ) as bar:
            clocks = _run_workers(parts, worker, bar.update)
        for tmp in temporaries:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        _rename_all(temporaries, finals)
    finally:
        _remove(temporaries)
    return PartsResult(
        parts=tuple(finals),
        clocks=tuple(clocks[k] for k in range(jobs)),
        seconds=time.perf_counter() - start,
    )


def _run_workers(
    parts: list[Part], worker: Callable[..., dict[str, float]], advance: Callable[[int], Any]
) -> dict[int, dict[str, float]]:
    """Start one process per part, wait for all; on the first failure stop the others and raise."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    processes = [ctx.Process(target=_run, args=(worker, part, results), daemon=True) for part in parts]
    clocks: dict[int, dict[str, float]] = {}
    try:
        for p in processes:
            p.start()
        while len(clocks) < len(parts):
            try:
                message = results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                dead = [(part, p) for part, p in zip(parts, processes, strict=True) if not p.is_alive()]
                dead = [(part, p) for part, p in dead if part.index not in clocks]
                if not dead:
                    continue
                try:  # a worker that has just finished: its last messages are in the pipe
                    message = results.get(timeout=5 * _POLL_SECONDS)
                except queue.Empty:
                    part, p = dead[0]
                    raise HepflowError(
                        _failed(part, len(parts), f"the worker died (exit code {p.exitcode})")
                    ) from None
            kind, index, payload = message
            if kind == "progress":
                advance(payload)
            elif kind == "done":
                clocks[index] = payload
            else:
                raise HepflowError(_failed(parts[index], len(parts), payload))
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(timeout=10)
        results.close()
    return clocks


def _failed(part: Part, jobs: int, cause: str) -> str:
    return (
        f"generation part {part.index + 1} of {jobs} ({part.final.name}, events "
        f"{part.first_event + 1}-{part.first_event + part.events}) failed: {cause}; no file was written"
    )


def _rename_all(temporaries: list[Path], finals: list[Path]) -> None:
    """Rename every temporary to its final name; on an error undo the renames done."""
    done: list[Path] = []
    try:
        for tmp, final in zip(temporaries, finals, strict=True):
            os.replace(tmp, final)
            done.append(final)
    except OSError as err:
        _remove(done)
        raise OutputError(f"cannot write {final}: {err.strerror}") from err


def _remove(paths: list[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)
