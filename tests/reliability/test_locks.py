"""One run, one output: the lock of an output directory and the cleanup of temporaries.

Issue 17, item 13: every run's start-up cleanup removed all temporaries of its output directory,
those of a run still writing there included (93 in-flight temporaries of a live job). Here a
second process plays the live run: it holds the lock, or writes a temporary and waits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hepflow.errors import OutputError
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.outputs.atomic import TMP_PREFIX, clean_stale_temporaries
from hepflow.outputs.lock import LOCK_NAME, host_tag, lock_holder, output_lock
from hepflow.processing import RunConfig, build_fileset, run_processor

ROOT = Path(__file__).resolve().parents[2]

#: a live run: takes the lock of argv[1], writes a temporary there, says so, waits for a line
LIVE_RUN = """
import sys
from hepflow.outputs.atomic import atomic_write
from hepflow.outputs.lock import output_lock

with output_lock(sys.argv[1]), atomic_write(sys.argv[1] + "/chunk.parquet") as tmp:
    tmp.write_text("in flight")
    print(tmp.name, flush=True)
    sys.stdin.readline()
"""


def _live_run(directory: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    job = subprocess.Popen(
        [sys.executable, "-c", LIVE_RUN, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    return job, job.stdout.readline().strip()


def _finish(job: subprocess.Popen) -> None:
    job.communicate("\n", timeout=30)  # the live run completes its write; pipes closed
    assert job.returncode == 0


def _dead_pid() -> int:
    job = subprocess.Popen([sys.executable, "-c", "pass"])
    job.wait()
    return job.pid


def test_a_second_run_is_refused_while_the_first_is_alive(nano_v12, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job, _ = _live_run(out)
    try:
        with pytest.raises(
            OutputError, match=rf"out is being written by another hepflow run \(pid {job.pid} on "
        ):
            run_processor(
                NeutrinoFeatureProcessor(), build_fileset([nano_v12]), out, RunConfig(progress=False)
            )
        assert not (out / "run.json").exists()
    finally:
        _finish(job)
    assert (out / "chunk.parquet").read_text() == "in flight"  # the live run's write completed
    assert lock_holder(out) is None
    run_processor(NeutrinoFeatureProcessor(), build_fileset([nano_v12]), out, RunConfig(progress=False))
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path):
    import socket

    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "yesterday"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with output_lock(tmp_path):
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_cleanup_keeps_the_temporaries_of_a_live_run(tmp_path):
    job, in_flight = _live_run(tmp_path)
    try:
        dead = tmp_path / f"{TMP_PREFIX}{host_tag()}-{_dead_pid()}-abc.parquet"  # a killed writer's
        legacy = tmp_path / f"{TMP_PREFIX}abc.parquet"  # writer unknown (older hepflow, another host)
        for path in (dead, legacy):
            path.write_text("partial")
        assert in_flight.startswith(f"{TMP_PREFIX}{host_tag()}-{job.pid}-")  # the writer is in the name
        assert clean_stale_temporaries(tmp_path) == [dead]  # the live run's temporary survives
        assert (tmp_path / in_flight).is_file()
        assert legacy.is_file()  # cannot be checked while another run holds the lock
    finally:
        _finish(job)
    assert (tmp_path / "chunk.parquet").read_text() == "in flight"
    assert clean_stale_temporaries(tmp_path) == [legacy]  # the lock is free: nobody writes here
