"""Throughput of the neutrino feature processor (events/s), per executor, in one run.

Usage::

    python benchmarks/process_neutrino.py --input data/ttbar.root [--executors iterative futures]

Without ``--input`` it generates a sample of ``--events`` events first (needs the [generate]
extra). Prints events/s for the processor alone (eager NanoEvents, no I/O) and for the full
``run_processor`` path (reading, processing, writing parquet) with each executor.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.processing import RunConfig, build_fileset, run_processor


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, nargs="*", default=None)
    parser.add_argument("--events", type=int, default=5000, help="events to generate without --input")
    parser.add_argument("--executors", nargs="+", default=["iterative", "futures"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=25_000)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="hepflow-bench-"))
    inputs = args.input
    if not inputs:
        from hepflow.generate.ttbar import generate_ttbar

        inputs = [scratch / "ttbar.root"]
        generate_ttbar(inputs[0], events=args.events, seed=7, progress=False)
    n_events = sum(uproot.open(f)["Events"].num_entries for f in inputs)
    print(f"input: {n_events} events in {len(inputs)} file(s)")

    proc = NeutrinoFeatureProcessor()
    events = NanoEventsFactory.from_root(
        {str(inputs[0]): "Events"},
        schemaclass=NanoAODSchema,
        mode="eager",
        metadata={"filename": str(inputs[0])},
    ).events()
    proc.columns(events[:100])  # warm-up
    t0 = time.perf_counter()
    proc.columns(events)
    dt = time.perf_counter() - t0
    print(f"{'processor only (eager, in memory)':<40} {len(events) / dt:>10.0f} events/s")

    for executor in args.executors:
        out = scratch / f"out-{executor}"
        cfg = RunConfig(executor=executor, workers=args.workers, chunksize=args.chunksize, progress=False)
        t0 = time.perf_counter()
        run_processor(proc, build_fileset(inputs), out, cfg)
        dt = time.perf_counter() - t0
        label = f"run_processor {executor} ({args.workers if executor != 'iterative' else 1} worker(s))"
        print(f"{label:<40} {n_events / dt:>10.0f} events/s")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
