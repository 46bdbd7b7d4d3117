"""Streaming memory: >= 1e6 NanoAOD events through the feature processor and through inference.

Usage::

    python benchmarks/memory_stream.py [--events 1000000] [--source data/ttbar_train.root]
        [--input FILE ...] [--stage features inference] [--chunksize 50000 100000]
        [--samples 32] [--model models/neutrino] [--scratch DIR]

Without ``--input`` it builds ``<scratch>/stream_<events>.root``: the ``Events`` tree of
``--source`` (NanoAOD, e.g. from ``hepflow generate ttbar``) copied into one TTree as often as
needed for ``--events`` events, each copy with its own event numbers. The copy is streamed in
batches of 50 000 events, never all in memory, and reused by later runs.

Each stage (``features``: :class:`hepflow.neutrino.processor.NeutrinoFeatureProcessor`;
``inference``: :class:`hepflow.neutrino.inference_processor.NeutrinoInferenceProcessor` with
``--samples`` posterior samples per selected event) runs for each chunk size in a fresh child
process through :func:`hepflow.processing.run_processor` (reading, processing and writing the
parquet chunks, the path of ``hepflow process``/``hepflow infer``), so that one run's memory does
not count for the next. Per run it prints the events streamed, the rows written, events/s, the
peak resident memory of the process (``getrusage`` maximum RSS) and its resident memory after
the first chunk, at the middle and after the last chunk. Memory is bounded when the peak depends
on the chunk size and not on the number of events: compare ``--events 250000`` with
``--events 1000000`` at the same chunk size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepflow.processing import ColumnProcessor

ROOT = Path(__file__).resolve().parents[1]
BATCH = 50_000


def _rss() -> int:
    """Current resident memory of this process in bytes."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is in the [bench] extra
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss(*observed: int) -> int:
    """Peak resident memory of this process in bytes, at least every ``observed`` RSS.

    ``getrusage`` reports the kernel's high-water mark (kB on Linux). Linux folds each thread's
    RSS counter into the process total in batches, so that mark can trail an RSS read from
    ``/proc`` a moment earlier by some tens of kB; the peak is the larger of the two.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max((peak if sys.platform == "darwin" else peak * 1024, *observed))


# ------------------------------------------------------------------------- building the input
def _collections(arrays: ak.Array) -> dict[str, ak.Array]:
    """Flat NanoAOD branches -> one record array per jagged collection (shared ``n<Name>``)."""
    out: dict[str, Any] = {}
    grouped: dict[str, dict[str, ak.Array]] = {}
    for name in arrays.fields:
        prefix, _, field = name.partition("_")
        if field and arrays[name].ndim == 2:
            grouped.setdefault(prefix, {})[field] = arrays[name]
    for name in arrays.fields:
        prefix, _, field = name.partition("_")
        if (field and prefix in grouped) or (name.startswith("n") and name[1:] in grouped):
            continue
        out[name] = arrays[name]
    out.update({prefix: ak.zip(fields) for prefix, fields in grouped.items()})
    return out


def build_stream_file(source: Path, target: Path, events: int) -> Path:
    """Write ``events`` events to ``target`` by copying ``source``'s Events tree repeatedly."""
    from hepflow.outputs import atomic_write

    with uproot.open(source) as fin:
        tree = fin["Events"]
        n_src = tree.num_entries
        if n_src == 0:
            raise SystemExit(f"{source} has no events")
        offset = int(np.max(tree["event"].array(library="np"))) + 1
        written, copy = 0, 0
        with atomic_write(target) as tmp, uproot.recreate(tmp) as fout:
            while written < events:
                for arrays in tree.iterate(step_size=BATCH, entry_stop=min(n_src, events - written)):
                    branches = _collections(arrays)
                    branches["event"] = ak.values_astype(branches["event"], np.uint64) + np.uint64(
                        copy * offset
                    )
                    if "Events" not in fout:
                        fout.mktree("Events", {k: v.type for k, v in branches.items()})
                    fout["Events"].extend(branches)
                    written += len(arrays)
                copy += 1
    return target


# ------------------------------------------------------------------------- one measured run
class Probe(ColumnProcessor):
    """Wrap a processor: append the resident memory after each chunk to ``log`` (one line each;
    a file, since coffea may run a copy of the processor)."""

    def __init__(self, inner: Any, log: Path) -> None:
        self.inner = inner
        self.log = log

    def columns(self, events: Any) -> Any:
        out = self.inner.columns(events)
        with open(self.log, "a") as fh:
            fh.write(f"{_rss()}\n")
        return out


def child(stage: str, inputs: list[str], chunksize: int, samples: int, model: str, output: str) -> dict:
    """Run one stage over ``inputs`` in this process; returns the measurements."""
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor
    from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, run_processor

    if stage == "features":
        inner: Any = NeutrinoFeatureProcessor()
    else:
        from hepflow.neutrino.config import NeutrinoConfig
        from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor, cached_models

        cached_models(model)  # load once, outside the timing of the first chunk
        cfg = NeutrinoConfig.from_file()
        inner = NeutrinoInferenceProcessor(
            model, samples=samples, batch_events=cfg.inference.batch_events, seed=cfg.inference.seed
        )

    log = Path(output) / "rss.txt"
    Path(output).mkdir(parents=True, exist_ok=True)
    start_rss = _rss()
    t0 = time.perf_counter()
    result = run_processor(
        Probe(inner, log),
        build_fileset(inputs),
        Path(output) / "chunks",
        RunConfig(chunksize=chunksize, progress=False),
    )
    seconds = time.perf_counter() - t0
    rss = [int(x) for x in log.read_text().split()]
    flow = cutflow_to_dict(result["cutflow"])
    rows = sum(info["rows"] for info in result["chunks"].values())
    return {
        "stage": stage,
        "events": flow["all"],
        "rows": rows,
        "chunks": len(result["chunks"]),
        "chunksize": chunksize,
        "samples": samples if stage == "inference" else None,
        "seconds": seconds,
        "events_per_s": flow["all"] / seconds,
        "rss_start_mb": start_rss / 2**20,
        "rss_first_chunk_mb": rss[0] / 2**20,
        "rss_middle_mb": rss[len(rss) // 2] / 2**20,
        "rss_last_chunk_mb": rss[-1] / 2**20,
        "peak_rss_mb": _peak_rss(*rss) / 2**20,
        "rss_mb_per_chunk": [x / 2**20 for x in rss],
    }


# ------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=float, default=1e6, help="events of the built input (default 1e6)")
    parser.add_argument("--source", type=Path, default=ROOT / "data" / "ttbar_train.root")
    parser.add_argument("--input", type=Path, nargs="+", default=None, help="stream these files instead")
    parser.add_argument(
        "--stage", nargs="+", choices=["features", "inference"], default=["features", "inference"]
    )
    parser.add_argument("--chunksize", type=int, nargs="+", default=[50_000])
    parser.add_argument("--samples", type=int, default=32, help="posterior samples per event (inference)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "neutrino")
    parser.add_argument("--scratch", type=Path, default=ROOT / "data", help="where the built input goes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        stage, inputs, chunksize, samples, model, output = args.child
        info = child(stage, json.loads(inputs), int(chunksize), int(samples), model, output)
        print("RESULT " + json.dumps(info))
        return

    if args.input:
        inputs = [str(p) for p in args.input]
    else:
        n = int(args.events)
        target = args.scratch / f"stream_{n}.root"
        if not target.is_file():
            t0 = time.perf_counter()
            build_stream_file(args.source, target, n)
            print(f"built {target} ({n} events) in {time.perf_counter() - t0:.0f} s")
        inputs = [str(target)]

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load}, {os.cpu_count()} cores")
    columns = ("stage", "chunk", "events", "rows", "ev/s", "peak MB", "first", "middle", "last")
    print(f"{columns[0]:<10}" + "".join(f" {c:>8}" for c in columns[1:]))
    results = []
    for stage in args.stage:
        for chunksize in args.chunksize:
            out = Path(tempfile.mkdtemp(prefix="hepflow-memory-"))
            try:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    stage,
                    json.dumps(inputs),
                    str(chunksize),
                    str(args.samples),
                    str(args.model),
                    str(out),
                ]
                proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"{stage} run failed:\n{proc.stderr[-3000:]}")
            info = json.loads(line[len("RESULT ") :])
            results.append(info)
            values = (
                chunksize,
                info["events"],
                info["rows"],
                round(info["events_per_s"]),
                round(info["peak_rss_mb"]),
                round(info["rss_first_chunk_mb"]),
                round(info["rss_middle_mb"]),
                round(info["rss_last_chunk_mb"]),
            )
            print(f"{stage:<10}" + "".join(f" {v:>8}" for v in values), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"inputs": inputs, "load": os.getloadavg(), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
