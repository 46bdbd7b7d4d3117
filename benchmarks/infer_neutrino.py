"""Inference throughput of the neutrino analysis: events/s and posterior samples/s.

Usage::

    python benchmarks/infer_neutrino.py --model models/neutrino --features data/features_test \
        [--samples 256] [--events 2000] [--device cpu|cuda]

Times :func:`hepflow.neutrino.inference.inference_columns` (K posterior samples with their
log-density for the mode, summaries, quadratic solution and regression) on processed features,
and the flow's sampling alone, on the requested device.
"""

from __future__ import annotations

import argparse
import time

import torch

from hepflow.neutrino.features import context_arrays
from hepflow.neutrino.inference import inference_columns
from hepflow.neutrino.model import load_models
from hepflow.outputs import read_parquet_dir


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--features", required=True)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    flow, regression = load_models(args.model)
    flow.model.to(args.device)  # the posterior's flow
    regression = regression.to(args.device)
    cols = read_parquet_dir(args.features)[: args.events]
    n, k = len(cols), args.samples
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {n} events, {k} samples/event")

    inference_columns(cols[:64], flow, regression, samples=k)  # warm-up
    t0 = time.perf_counter()
    inference_columns(cols, flow, regression, samples=k)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    label = "all columns (flow + summaries + baselines)"
    print(f"{label:<45} {n / dt:>9.0f} events/s {n * k / dt:>11.0f} samples/s")

    ctx = {key: torch.as_tensor(v, device=args.device) for key, v in context_arrays(cols).items()}
    for label, lp in (("flow samples only", False), ("flow samples + log-density", True)):
        with torch.no_grad():
            t0 = time.perf_counter()
            flow.model.sample(k, ctx, return_log_prob=lp)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        print(f"{label:<45} {n / dt:>9.0f} events/s {n * k / dt:>11.0f} samples/s")


if __name__ == "__main__":
    main()
