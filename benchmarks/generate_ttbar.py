"""Throughput of ``hepflow generate ttbar``: events per second, split into its stages.

Usage::

    python benchmarks/generate_ttbar.py --events 2000
    python benchmarks/generate_ttbar.py --events 2000 --jobs 1 2   # the speed-up of --jobs 2

Generates into a temporary directory (removed afterwards) on one core and prints the time spent
in Pythia (initialisation, generation and handing the records to Python), in the detector
simulation (truth extraction included), and in writing, with the time 100 000 events would take
at the measured rate. With several ``--jobs`` values it generates the sample once per value, one
after the other, and prints each wall-clock rate, its speed-up over the first and the load
average of the machine (other users' jobs slow every run).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

from hepflow.generate.pileup import PileupProfile
from hepflow.generate.ttbar import generate_ttbar


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=[1], help="worker processes (several: compare)"
    )
    parser.add_argument("--pileup", type=float, default=36.0, help="mean pileup (default 36, 0: none)")
    args = parser.parse_args()
    if len(args.jobs) > 1:
        compare(args.events, args.seed, args.batch_size, args.jobs, PileupProfile(mean=args.pileup))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ttbar.root"
        stats = generate_ttbar(
            path,
            events=args.events,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=False,
            jobs=args.jobs[0],
            pileup=PileupProfile(mean=args.pileup),
        )
        size_mb = sum(p.stat().st_size for p in (stats.parts or (path,))) / 1e6

    n = stats.events
    print(stats.summary())
    print(f"{'stage':<10} {'seconds':>8} {'ms/event':>9} {'share':>6}")
    for stage, seconds in (
        ("pythia", stats.pythia_seconds),
        ("detector", stats.detector_seconds),
        ("write", stats.write_seconds),
        ("total", stats.seconds),
    ):
        print(f"{stage:<10} {seconds:>8.2f} {1e3 * seconds / n:>9.2f} {seconds / stats.seconds:>6.1%}")
    print(f"output: {size_mb:.1f} MB ({1e3 * size_mb / n:.1f} kB/event)")
    print(f"1e5 events at this rate: {1e5 / stats.events_per_second / 60:.1f} min")


def compare(events: int, seed: int, batch_size: int, jobs: list[int], pileup: PileupProfile) -> None:
    """Generate ``events`` once per ``jobs`` value; print rates, speed-ups, the CPU time used (this
    process and its workers) and the load average."""
    print(f"{os.cpu_count()} cores; load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    first = None
    for n_jobs in jobs:
        cpu = _cpu_seconds()
        with tempfile.TemporaryDirectory() as tmp:
            stats = generate_ttbar(
                Path(tmp) / "ttbar.root",
                events=events,
                seed=seed,
                batch_size=batch_size,
                progress=False,
                jobs=n_jobs,
                pileup=pileup,
            )
        cpu = _cpu_seconds() - cpu
        first = first or stats.seconds
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(
            f"jobs {n_jobs}: {stats.seconds:.1f} s, {stats.events_per_second:.0f} events/s, "
            f"speed-up {first / stats.seconds:.2f}, CPU {cpu:.1f} s = {cpu / stats.seconds:.2f} cores "
            f"(load average after: {load})"
        )


if __name__ == "__main__":
    main()
