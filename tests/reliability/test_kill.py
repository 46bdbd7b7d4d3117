"""SIGKILL in the middle of a training or a processing run, then a restart: nothing lost or doubled.

The jobs run as separate processes and are killed with SIGKILL (no cleanup, no exception
handlers), as a batch system or the OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch

import hepflow
from hepflow.cli import main
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.outputs import read_parquet_dir
from hepflow.outputs.atomic import TMP_PREFIX
from hepflow.training import load_checkpoint
from tests.conftest import write_nanoaod

from . import train_job
from .conftest import replicate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends or the timeout passes first."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(
                f"the job ended (status {proc.returncode}) before it could be killed:\n{proc.stderr.read()}"
            )
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the job made no progress")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints"
    job = _start("-m", "tests.reliability.train_job", str(ckpt), str(tmp_path / "model"))
    _kill_when(job, (ckpt / "checkpoint.pt").is_file)
    done = load_checkpoint(ckpt / "checkpoint.pt")["epoch"]
    assert 1 <= done < train_job.EPOCHS, "killed too late to test resuming"
    assert not (tmp_path / "model").exists()
    # what a kill in the middle of torch.save leaves: a temporary, never a partial checkpoint.pt
    (ckpt / f"{TMP_PREFIX}killed.pt").write_bytes(b"\x80\x02partial")

    job = _start("-m", "tests.reliability.train_job", str(ckpt), str(tmp_path / "model"))
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["ran"] == list(range(done + 1, train_job.EPOCHS + 1))  # resumed after epoch `done`
    assert report["epochs"] == list(range(1, train_job.EPOCHS + 1))
    assert not list(ckpt.glob(f"{TMP_PREFIX}*"))

    reference, _ = train_job.train(None, [])
    resumed = hepflow.load_model(tmp_path / "model")
    ref_state, res_state = reference.state_dict(), resumed.state_dict()
    assert ref_state.keys() == res_state.keys()
    for name, value in ref_state.items():
        assert torch.equal(value, res_state[name]), name


def _markers(out: Path) -> list[Path]:
    """Chunk markers (pathlib's glob also matches the hidden temporaries of a write under way)."""
    return [
        p
        for p in out.glob("*.json")
        if p.name not in ("run.json", "cutflow.json") and not p.name.startswith(TMP_PREFIX)
    ]


def test_killed_processing_restarts_without_duplicated_or_missing_rows(v12_branches, tmp_path):
    big = write_nanoaod(tmp_path / "big.root", replicate(v12_branches, 5))  # 1000 events
    out = tmp_path / "features"
    args = ["process", "neutrino", "--input", str(big), "--output", str(out), "--chunksize", "100"]
    job = _start("-m", "hepflow.cli", *args, "--no-progress")
    _kill_when(job, lambda: len(_markers(out)) >= 2)

    complete = _markers(out)
    assert 2 <= len(complete) < 10
    assert not (out / "run.json").exists()
    for f in out.glob("*.parquet"):  # nothing partial under a final name
        ak.from_parquet(f)
    for marker in complete:
        assert all((out / name).is_file() for name in json.loads(marker.read_text())["files"])
    stamps = {m.with_suffix(".parquet"): m.with_suffix(".parquet").stat().st_mtime_ns for m in complete}

    assert main([*args, "--no-progress"]) == 0  # the restart
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished chunks were not redone
    assert not list(out.glob(f"{TMP_PREFIX}*"))
    run = json.loads((out / "run.json").read_text())
    assert len(run["chunks"]) == 10
    rows = read_parquet_dir(out)
    events = ak.to_numpy(rows.event)
    assert len(np.unique(events)) == len(events) == run["rows"]

    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    reference = NeutrinoFeatureProcessor().columns(
        NanoEventsFactory.from_root({str(big): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    )
    ref = reference.columns
    assert run["rows"] == len(ref)
    assert rows[np.argsort(events)].to_list() == ref[np.argsort(ak.to_numpy(ref.event))].to_list()


SIGTERM_SCRIPT = """
import argparse, os, signal, sys, time
from pathlib import Path
from hepflow.cli import guarded
from hepflow.outputs.atomic import atomic_write

def handler(args):
    with atomic_write(Path(args.out) / "out.txt") as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)  # as a batch system ends a job
        time.sleep(30)
    return 0

sys.exit(guarded(handler, argparse.Namespace(out=sys.argv[1])))
"""


def test_sigterm_removes_the_output_being_written_and_exits_143(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 143
    assert proc.stderr.strip() == "hepflow: terminated (SIGTERM); outputs being written were removed"
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary


def test_the_sigterm_handler_is_restored_after_an_in_process_run(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["config", "show", "neutrino", "--path"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
