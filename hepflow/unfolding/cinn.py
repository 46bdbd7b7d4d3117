"""cINN unfolding: sample p(particle level | detector level) per measured event, then bin.

A conditional INN learns the particle-level observables given the detector-level event (its
training events are the simulated events passing *both* levels). For a measured event it gives
``K`` posterior samples; the unfolded histogram of an observable is the sum over events of the
fraction of their samples in each bin (each event's weight spread over its posterior), then

* fakes: measured events without a particle-level counterpart must not contribute, but the
  flow has never seen one. Each event is weighted by ``1 - f`` with ``f`` the simulation's fake
  fraction in the event's detector-level bin (:class:`~hepflow.unfolding.response.FakeRate`,
  binned in the detector-level observables), which removes the fakes on average;
* efficiency: the result estimates the particle-level spectrum of the events that pass the
  detector level; dividing by the simulation's efficiency per particle-level bin (the same
  :class:`~hepflow.unfolding.response.Response` as the IBU baseline) restores the events lost
  at detector level.

Uncertainties (standard deviations per bin, all after the efficiency correction):

* ``posterior``: spread of the histograms built from one posterior draw per event (the
  per-event posterior width; a K-draw average is what is reported as the central value);
* ``data``: Poisson bootstrap of the measured events (``bootstrap`` replicas);
* ``simulation``: replicas of the efficiency and the fake fractions within the simulation
  statistics (``sim_toys``);
* ``ensemble``: spread of the members of an ensemble of flows (different seeds, optionally each
  trained on a bootstrap resample of the training events).

The total covariance (:attr:`Unfolded.covariance`, with its bin-to-bin correlations) is the sum of

* the covariance of ``bootstrap`` toys in which the measured data are Poisson-fluctuated event
  by event (event i appears ``Poisson(1)`` times) and every copy of an event takes its own
  posterior draw (a random member and sample): the data statistics and the per-event posterior
  width together (its diagonal is the ``data`` plus the ``posterior`` variance; the bins of
  such toys are close to independent, since every copy lands in one bin, so the bin-to-bin
  correlations of the cINN result come mostly from the efficiency and fake replicas);
* the covariance of the ``sim_toys`` replicas of efficiency and fake fractions;
* the ensemble variance, on the diagonal (three members do not determine a covariance).

Training goes through :func:`hepflow.fit` (:func:`train_ensemble`); sampling through
:class:`hepflow.posterior.FlowPosterior` (:func:`sample_ensemble`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepflow.errors import ConfigError, InputError
from hepflow.training.config import FitConfig
from hepflow.unfolding.binning import bin_index
from hepflow.unfolding.response import FakeRate, Response
from hepflow.unfolding.result import Unfolded

__all__ = ["sample_ensemble", "train_ensemble", "unfold_cinn"]


def train_ensemble(
    build: Callable[[int], Any],
    theta: np.ndarray,
    context: Mapping[str, np.ndarray],
    *,
    fit: FitConfig,
    members: int = 3,
    bootstrap: bool = True,
    output_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    weights: np.ndarray | None = None,
    start: Sequence[Any] | None = None,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Train ``members`` flows with :func:`hepflow.fit`; member ``m`` is ``build(fit.seed + m)``,
    or with ``start`` the trained model ``start[m]`` whose training continues (fine-tuning, e.g.
    on reweighted events: :mod:`hepflow.unfolding.icinn`). ``weights`` are per-event weights.

    With ``bootstrap`` each member trains on a resample (with replacement) of the events, so the
    ensemble spread includes the training statistics, not only the seed. Returns the models and
    one summary per member (seconds, epochs, best validation loss). With ``output_dir`` the
    histories go to ``output_dir/history_<m>``.
    """
    import hepflow

    if members < 1:
        raise ConfigError(f"cinn.ensemble must be >= 1, got {members}")
    n = len(theta)
    if any(len(v) != n for v in context.values()):
        raise InputError(f"theta has {n} events, the context {[len(v) for v in context.values()]}")
    if weights is not None and np.shape(weights) != (n,):
        raise InputError(f"weights have shape {np.shape(weights)}; theta has {n} events")
    if start is not None and len(start) != members:
        raise InputError(f"{len(start)} models to continue for {members} members")
    models, summaries = [], []
    for m in range(members):
        seed = fit.seed + m
        idx = np.random.default_rng(seed).integers(0, n, n) if bootstrap else np.arange(n)
        model = build(seed) if start is None else start[m]
        t0 = time.perf_counter()
        history = hepflow.fit(
            model,
            theta[idx],
            {k: v[idx] for k, v in context.items()},
            weights=None if weights is None else np.asarray(weights)[idx],
            **{**fit.fit_options(), "seed": seed},
            output_dir=None if output_dir is None else Path(output_dir) / f"history_{m}",
            progress=progress,
        )
        models.append(model.cpu().eval())
        summaries.append(
            {
                "seed": seed,
                "seconds": time.perf_counter() - t0,
                "epochs": len(history.train_loss),
                "best_epoch": history.best_epoch,
                "best_val_loss": float(min(v for v in history.val_loss if v is not None))
                if any(v is not None for v in history.val_loss)
                else float("nan"),
            }
        )
    return models, summaries


def sample_ensemble(
    models: Sequence[Any],
    context: Mapping[str, np.ndarray],
    *,
    samples: int,
    batch_events: int = 4096,
    seed: int = 0,
) -> np.ndarray:
    """Posterior samples of every member for every event: shape (members, n, samples, dim), float32.

    ``models`` are the members' flows (or their :class:`~hepflow.posterior.FlowPosterior`); each
    member draws through :meth:`~hepflow.posterior.FlowPosterior.sample_context` in batches of
    ``batch_events`` events from its own torch generator, seeded ``seed + m`` for member ``m``.
    """
    from hepflow.posterior import FlowPosterior

    if samples < 2:
        raise ConfigError(f"cinn.samples must be >= 2, got {samples}")
    n = len(next(iter(context.values())))
    out = []
    for m, model in enumerate(models):
        posterior = model if isinstance(model, FlowPosterior) else FlowPosterior(model)
        device = next(posterior.model.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(seed + m)
        parts = []
        for start in range(0, n, batch_events):
            batch = {
                k: torch.as_tensor(v[start : start + batch_events], device=device) for k, v in context.items()
            }
            theta, _ = posterior.sample_context(samples, batch, generator=gen)
            parts.append(theta.astype(np.float32))  # the flow's float32 draws, exactly
        empty = np.zeros((0, samples, posterior.theta_dim), np.float32)
        out.append(np.concatenate(parts) if parts else empty)
    return np.stack(out)


def _occupancy(index: np.ndarray, n_bins: int) -> np.ndarray:
    """Fraction of the samples of every (member, event) in every bin: (members, n, n_bins)."""
    members, n, k = index.shape
    flat = (np.arange(members * n).reshape(members, n, 1) * n_bins + index).ravel()
    return np.bincount(flat, minlength=members * n * n_bins).reshape(members, n, n_bins) / k


def _draw_histograms(index: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Histogram of each single posterior draw: (members, samples, n_bins)."""
    members, _n, k = index.shape
    slot = (np.arange(members)[:, None, None] * k + np.arange(k)[None, None, :]) * n_bins + index
    w = np.broadcast_to(weights[None, :, None], index.shape)
    return np.bincount(slot.ravel(), weights=w.ravel(), minlength=members * k * n_bins).reshape(
        members, k, n_bins
    )


def _divide(values: np.ndarray, efficiency: np.ndarray) -> np.ndarray:
    live = efficiency > 0
    return np.where(live, values / np.where(live, efficiency, 1.0), 0.0)


def unfold_cinn(
    samples: np.ndarray,
    *,
    responses: Sequence[Response],
    fake_rate: FakeRate,
    reco_values: Sequence[np.ndarray],
    weights: np.ndarray | None = None,
    bootstrap: int = 100,
    sim_toys: int = 100,
    seed: int = 0,
) -> list[Unfolded]:
    """Unfolded spectra of every observable from posterior samples (see the module docstring).

    Args:
        samples: particle-level posterior samples, shape (members, n_events, K, n_observables).
        responses: one per observable; its particle-level binning and efficiency are used.
        fake_rate: the fake fraction in detector-level bins.
        reco_values: the detector-level values of the measured events that ``fake_rate`` is
            binned in (one array per fake-rate dimension).
        weights: measured-event weights (default 1).
        bootstrap, sim_toys: replicas for the data and simulation uncertainties.
        seed: seed of the replicas.
    """
    if samples.ndim != 4 or samples.shape[3] != len(responses):
        raise InputError(
            f"samples have shape {samples.shape}; expected (members, events, K, {len(responses)})"
        )
    if bootstrap < 2 or sim_toys < 2:
        raise ConfigError(f"cinn.bootstrap and cinn.sim_toys must be >= 2, got {bootstrap}, {sim_toys}")
    members, n, _, _ = samples.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise InputError(f"weights have shape {w.shape}; the samples have {n} events")
    rng = np.random.default_rng(seed)
    keep = 1.0 - fake_rate.lookup(reco_values)
    w_signal = w * keep
    poisson = rng.poisson(1.0, size=(bootstrap, n)).astype(np.float64)
    fake_toys = [fake_rate.fluctuate(rng) for _ in range(sim_toys)]
    # the toys' copies of the events and the posterior draw (member, sample) of every copy,
    # the same for every observable
    draw_rng = np.random.default_rng([seed, 1])
    copies = []
    for counts in poisson.astype(np.int64):
        reps = np.repeat(np.arange(n), counts)
        copies.append(
            (
                reps,
                draw_rng.integers(0, members, len(reps)),
                draw_rng.integers(0, samples.shape[2], len(reps)),
            )
        )
    keep_toys = np.stack([1.0 - f.lookup(reco_values) for f in fake_toys]) if n else np.zeros((sim_toys, 0))
    results = []
    for d, response in enumerate(responses):
        if not np.isfinite(samples[..., d]).all():
            raise InputError(f"observable {d}: the posterior samples contain non-finite values")
        n_bins = len(response.truth_edges) - 1
        index = bin_index(samples[..., d].reshape(-1), response.truth_edges).reshape(samples.shape[:3])
        occupancy = _occupancy(index, n_bins)  # (members, n, bins)
        eff = response.efficiency
        per_member = _divide(np.einsum("e,mei->mi", w_signal, occupancy), eff)
        central = per_member.mean(axis=0)
        mean_occ = occupancy.mean(axis=0)  # (n, bins)
        draws = _divide(_draw_histograms(index, w_signal, n_bins), eff)  # (members, K, bins)
        var_post = draws.var(axis=1, ddof=1).mean(axis=0)
        var_ens = per_member.var(axis=0, ddof=1) if members > 1 else np.zeros(n_bins)
        boot = _divide((poisson * w_signal) @ mean_occ, eff)
        toys = _divide(
            np.stack(
                [
                    np.bincount(index[m, reps, k], weights=w_signal[reps], minlength=n_bins)
                    for reps, m, k in copies
                ]
            ),
            eff,
        )
        sim_rng = np.random.default_rng([seed, d])
        sim = np.stack(
            [
                _divide((w * keep_toys[t]) @ mean_occ, response.fluctuate(sim_rng).efficiency)
                for t in range(sim_toys)
            ]
        )
        cov_boot = np.atleast_2d(np.cov(boot, rowvar=False))
        cov_toys = np.atleast_2d(np.cov(toys, rowvar=False))
        cov_sim = np.atleast_2d(np.cov(sim, rowvar=False))
        results.append(
            Unfolded(
                central=central,
                covariance=cov_toys + cov_sim + np.diag(var_ens),
                components={
                    "data": np.sqrt(np.diag(cov_boot)),
                    "simulation": np.sqrt(np.diag(cov_sim)),
                    "posterior": np.sqrt(var_post),
                    "ensemble": np.sqrt(var_ens),
                },
            )
        )
    return results
