"""Throughput of the cosmic-ray pipeline: simulator, generation to ROOT, features, shower lists, MCMC.

Usage::

    python benchmarks/cosmic_simulator.py --n 20000

Runs on one BLAS thread unless ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` are set (the batches
of the sampler are small, where threads cost more than they give). Prints, per stage, the rate
and the time 200 000 training pseudo-experiments would take at that rate:

* ``prior + simulate``: :meth:`ForwardModel.simulate` on prior draws, per batch size;
* ``generate_cosmic``: the whole ``hepflow generate cosmic`` (prior, simulator, ROOT writing), and
  the file size per pseudo-experiment;
* ``features``: :func:`hepflow.cosmic.features.observation_features` on the generated counts;
* ``sample_showers``: one Auger-sized shower list (~56 000 showers);
* ``likelihood``: log-likelihood evaluations per second at the ensemble size of the MCMC.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hepflow.cosmic import ForwardModel, Likelihood, Observation, Prior
from hepflow.cosmic.features import observation_features
from hepflow.cosmic.generate import generate_cosmic, read_pseudo_experiments, sample_showers

TRAINING = 200_000


def _best(f, repeat: int) -> float:
    """Fastest of ``repeat`` timings of ``f()`` in seconds (the least disturbed on a busy machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def _row(stage: str, n: float, seconds: float, unit: str) -> None:
    rate = n / seconds
    print(f"{stage:<34} {rate:>10.0f} {unit}/s   {TRAINING / rate / 60:>6.1f} min per {TRAINING} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="pseudo-experiments generated to ROOT")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    t0 = time.perf_counter()
    obs = Observation.from_auger()
    model = ForwardModel(obs)
    print(f"forward model setup: {time.perf_counter() - t0:.2f} s ({model.description})")
    prior = Prior()
    rng = np.random.default_rng(args.seed)

    for batch in (256, 1024, 4096):
        seconds = _best(lambda b=batch: model.simulate(prior.sample(b, rng), rng), args.repeat)
        _row(f"prior + simulate (batch {batch})", batch, seconds, "pe")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pe.root"
        stats = generate_cosmic(path, n=args.n, seed=args.seed, progress=False)
        size = path.stat().st_size
        data = read_pseudo_experiments(path)
    print(stats.summary())
    _row("generate_cosmic (to ROOT)", stats.n, stats.seconds - stats.setup_seconds, "pe")
    print(
        f"{'':<34} {size / stats.n:>10.0f} bytes/pe ({size / stats.n * TRAINING / 1e6:.0f} MB per {TRAINING})"
    )

    seconds = _best(lambda: observation_features(data["spectrum"], data["xmax"]), args.repeat)
    _row("features", args.n, seconds, "pe")

    theta = np.array([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0])
    seconds = _best(lambda: sample_showers(theta, rng, model=model), args.repeat)
    n_showers = sample_showers(theta, 1, model=model)[0].size
    print(f"{'sample_showers (one observation)':<34} {seconds * 1e3:>10.1f} ms ({n_showers} showers)")

    like = Likelihood(obs, model=model)
    for walkers in (32, 4096):
        batch = prior.sample(walkers, rng)
        seconds = _best(lambda b=batch: like(b), args.repeat)
        _row(f"likelihood (batch {walkers})", walkers, seconds, "eval")
        if walkers == 32:
            print(f"{'':<34} {1 / seconds:>10.0f} emcee steps/s with 32 walkers")


if __name__ == "__main__":
    main()
