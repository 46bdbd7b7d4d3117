"""Processing throughput per executor: feature building and inference with K posterior samples.

Usage::

    python benchmarks/process_executors.py [--input data/ttbar_train.root] [--model models/neutrino] \
        [--events 100000] [--chunksize 10000] [--workers 2] [--samples 256] [--rounds 1]

Runs, side by side and in the same process, what ``hepflow process neutrino`` (the feature
processor) and ``hepflow infer neutrino`` (features + K cINN samples per selected event,
summaries, quadratic solution and regression) do, through :func:`hepflow.processing.run_processor`
with each executor:

* ``iterative``: one process;
* ``futures``: ``--workers`` local processes;
* ``dask``: what ``--executor dask`` does: a ``distributed.LocalCluster`` with ``--workers``
  processes, started and closed within the timed run;
* ``dask (running)``: the same workers on an already running cluster (``--scheduler ADDRESS``),
  as on an analysis facility.

Every run reads the input, processes it and writes parquet chunks into a fresh directory; events/s
counts input events (before the selection). Every process uses ``--torch-threads`` torch/OpenMP
threads (default 1), so the executors differ only in how many processes work. ``--rounds`` repeats
the executors in interleaved order and reports each one's fastest round, which damps the effect of
other jobs on a shared machine; the load average (``os.getloadavg``) is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, nargs="+", default=[ROOT / "data" / "ttbar_train.root"])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "neutrino")
    parser.add_argument("--events", type=int, default=100_000, help="input events per run (at most)")
    parser.add_argument("--chunksize", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=256, help="posterior samples per event (K)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--executors", nargs="+", default=["iterative", "futures", "dask", "dask (running)"])
    parser.add_argument("--skip-inference", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    # before torch is imported anywhere: worker processes read these at start-up
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.torch_threads)
    import math
    import shutil
    import tempfile
    import time

    import torch
    import uproot

    from hepflow.neutrino.config import NeutrinoConfig
    from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor, cached_models
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor
    from hepflow.processing import RunConfig, build_fileset, run_processor

    torch.set_num_threads(args.torch_threads)
    sizes = [uproot.open(f)["Events"].num_entries for f in args.input]
    maxchunks = max(1, math.ceil(args.events / args.chunksize))
    n_events = sum(min(n, maxchunks * args.chunksize) for n in sizes)
    cfg = NeutrinoConfig.from_file()
    tasks = {"features": NeutrinoFeatureProcessor(cfg.selection)}
    if not args.skip_inference:
        cached_models(args.model)  # fail early on a missing model
        tasks[f"inference K={args.samples}"] = NeutrinoInferenceProcessor(
            args.model,
            samples=args.samples,
            batch_events=cfg.inference.batch_events,
            seed=cfg.inference.seed,
            selection=cfg.selection,
        )
    fileset = build_fileset(args.input, dataset="ttbar")
    print(
        f"{n_events} input events ({', '.join(str(f) for f in args.input)}), chunksize {args.chunksize}, "
        f"{args.workers} workers, torch threads per process {args.torch_threads}, "
        f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, torch {torch.__version__}"
    )
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    running = None
    if "dask (running)" in args.executors:
        from distributed import LocalCluster

        running = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)

    scratch = Path(tempfile.mkdtemp(prefix="hepflow-bench-executors-"))
    for task, proc in tasks.items():  # warm-up: imports, model loading, first-call costs
        warm = RunConfig(chunksize=min(1000, args.chunksize), maxchunks=1, overwrite=True, progress=False)
        run_processor(
            proc, build_fileset(args.input[:1], dataset="ttbar"), scratch / f"warm-{len(task)}", warm
        )
    best: dict[tuple[str, str], float] = {}
    selected: dict[str, int] = {}
    try:
        for r in range(args.rounds):
            order = args.executors if r % 2 == 0 else list(reversed(args.executors))
            for task, proc in tasks.items():
                for label in order:
                    executor = label.split()[0]
                    run = RunConfig(
                        executor=executor,
                        chunksize=args.chunksize,
                        workers=args.workers,
                        maxchunks=maxchunks,
                        scheduler=running.scheduler_address if label == "dask (running)" else None,
                        overwrite=True,
                        progress=False,
                    )
                    out = scratch / f"{task.split()[0]}-{executor}-{r}"
                    t0 = time.perf_counter()
                    result = run_processor(proc, fileset, out, run)
                    dt = time.perf_counter() - t0
                    done = sum(i["entrystop"] - i["entrystart"] for i in result["chunks"].values())
                    if done != n_events:
                        raise RuntimeError(f"{label}: processed {done} events, expected {n_events}")
                    selected[task] = sum(i["rows"] for i in result["chunks"].values())
                    best[task, label] = min(dt, best.get((task, label), float("inf")))
                    shutil.rmtree(out)
                    print(f"  round {r + 1} {task:<16} {label:<15} {dt:7.1f} s", flush=True)
    finally:
        if running is not None:
            running.close()
        shutil.rmtree(scratch, ignore_errors=True)

    print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    header = f"{'executor':<16}"
    for task in tasks:
        header += f" | {task + ' events/s':>26} {'x iter.':>7}"
    print()
    print(header)
    print("-" * len(header))
    for label in args.executors:
        row = f"{label:<16}"
        for task in tasks:
            rate = n_events / best[task, label]
            ref = best.get((task, "iterative"))
            ratio = f"{ref / best[task, label]:7.2f}" if ref else f"{'-':>7}"
            row += f" | {rate:>26.0f} {ratio}"
        print(row)
    for task in tasks:
        extra = ""
        if task.startswith("inference"):
            extra = f", {selected[task] * args.samples} posterior samples"
        print(f"{task}: {selected[task]} of {n_events} events selected{extra}")
    if "dask" in args.executors:
        print("dask: includes starting and closing the LocalCluster in each run")


if __name__ == "__main__":
    main()
