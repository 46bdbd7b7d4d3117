"""Throughput of ``hepflow generate ttbar``: events per second, split into its stages.

Usage::

    python benchmarks/generate_ttbar.py --events 2000

Generates into a temporary directory (removed afterwards) on one core and prints the time spent
in Pythia (initialisation, generation and handing the records to Python), in the detector
simulation (truth extraction included), and in writing, with the time 100 000 events would take
at the measured rate.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hepflow.generate.ttbar import generate_ttbar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ttbar.root"
        stats = generate_ttbar(
            path, events=args.events, seed=args.seed, batch_size=args.batch_size, progress=False
        )
        size_mb = path.stat().st_size / 1e6

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
    print(f"1e5 events at this rate: {1e5 / stats.events_per_second / 60:.1f} min on one core")


if __name__ == "__main__":
    main()
