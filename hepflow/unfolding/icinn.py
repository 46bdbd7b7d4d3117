"""Iterative cINN unfolding (IcINN; Backes, Butter, Dunford, Malaescu, arXiv:2212.08674).

A single cINN pass keeps the training simulation's particle-level spectrum as its prior. IcINN
removes that dependence by iterating:

1. unfold the data with the current cINN ensemble (:func:`hepflow.unfolding.cinn.unfold_cinn`);
2. reweight the training simulation at particle level toward the unfolded result with a
   **binned density ratio** in the joint particle-level bins of all observables (here the 7 x 7
   bins of top pT and m_ttbar), clipped to ``[1/clip, clip]``; every fiducial training event
   gets the weight of its bin (:func:`particle_weights`; events without a particle level keep
   1). ``ratio = "marginals"`` (default): the ratio that gives the simulation's joint histogram
   the unfolded one-dimensional spectra and keeps its correlations (:func:`marginal_ratio`,
   iterative proportional fitting); ``ratio = "joint"``: ``u / s`` with ``u`` the unfolded
   joint histogram (each measured event's posterior occupancy, fake-weighted, divided by the
   joint efficiency; :func:`joint_unfolded`, :func:`density_ratio`), noisier in sparse bins.
   The paper uses a classifier for this step; a binned ratio is the density ratio of the
   quantities unfolded;
3. train the ensemble on the reweighted events and rebuild efficiency and fake fractions from
   the reweighted simulation. ``training = "continue"``: every member continues for ``epochs``
   more epochs (the same bootstrap resample; :func:`hepflow.unfolding.cinn.train_ensemble` with
   ``start``) at ``lr_scale`` times the ``[training]`` learning rate (at the full rate, six
   epochs move a trained member by about half a bin's total uncertainty even with weights near
   1; a tenth of it made the nominal scenario converge but closed worse in 6 of 8 cases:
   analyses/ttbar_unfolding/README.md); ``training = "retrain"``: a fresh ensemble with the
   plain pass's seeds and ``[training]`` epochs, so that every pass is trained as long as the
   first and a reweighting near 1 gives back the plain cINN (continued training also changes a
   result the reweighting leaves alone);
4. stop when no bin of any observable moves by more than ``tolerance`` times its total
   uncertainty between two iterations, or after ``iterations`` iterations.

The result's uncertainty is the last pass's (data, posterior, simulation, ensemble; see
:mod:`hepflow.unfolding.cinn`) plus an ``iteration`` component, the change of the last
iteration per bin, added to the covariance's diagonal. The central value of every iteration and
the stopping reason are returned.

Example:
    >>> density_ratio(np.array([[1.0, 3.0]]), np.array([[2.0, 2.0]]), clip=10.0).tolist()
    [[0.5, 1.5]]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from hepflow.config import COUNT, POSITIVE, check_values
from hepflow.errors import InputError
from hepflow.training.config import FitConfig
from hepflow.unfolding.binning import bin_index, histogram_nd
from hepflow.unfolding.response import FakeRate, Response
from hepflow.unfolding.result import Unfolded

__all__ = [
    "ICINNConfig",
    "density_ratio",
    "joint_unfolded",
    "marginal_ratio",
    "particle_weights",
    "unfold_icinn",
]


@dataclass(frozen=True)
class ICINNConfig:
    """``[icinn]``: iterative cINN unfolding (``enabled`` adds the method ``icinn``)."""

    enabled: bool = False
    ratio: Literal["joint", "marginals"] = "marginals"
    iterations: int = 4  # at most, after the first (plain cINN) pass
    tolerance: float = 0.2  # stop when no bin moves by more than this times its total uncertainty
    epochs: int = 6  # of continued training per iteration (training = "continue")
    clip: float = 10.0  # the density ratio is clipped to [1/clip, clip]
    training: Literal["continue", "retrain"] = "continue"
    #: learning rate of the continued training, as a multiple of [training] lr
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_values(
            self, iterations=COUNT, tolerance=POSITIVE, epochs=COUNT, clip=POSITIVE, lr_scale=POSITIVE
        )
        if self.clip <= 1:
            raise ValueError(f"clip must be > 1, got {self.clip}")
        if self.training not in ("continue", "retrain"):
            raise ValueError(f'training must be "continue" or "retrain", got {self.training!r}')


def density_ratio(unfolded: np.ndarray, prior: np.ndarray, *, clip: float) -> np.ndarray:
    """``unfolded / prior`` with both normalised to unit sum, 1 where the prior is empty,
    clipped to ``[1/clip, clip]``."""
    u = np.clip(np.asarray(unfolded, dtype=np.float64), 0.0, None)
    s = np.asarray(prior, dtype=np.float64)
    if u.shape != s.shape or u.sum() <= 0 or s.sum() <= 0:
        raise InputError(
            f"cannot reweight: unfolded {u.shape} (sum {u.sum()}), prior {s.shape} (sum {s.sum()})"
        )
    un, sn = u / u.sum(), s / s.sum()
    ratio = np.where(sn > 0, un / np.where(sn > 0, sn, 1.0), 1.0)
    return np.clip(ratio, 1.0 / clip, clip)


def marginal_ratio(
    prior: np.ndarray, marginals: Sequence[np.ndarray], *, clip: float, rounds: int = 50
) -> np.ndarray:
    """The joint density ratio that gives ``prior`` (a joint histogram) the one-dimensional
    ``marginals`` and keeps its correlations: iterative proportional fitting (``rounds`` passes
    scaling one axis at a time), then ``fitted / prior``, 1 where the prior is empty, clipped to
    ``[1/clip, clip]``. Far fewer numbers than the joint ratio (a sum of bins, not a product), so
    far less noise from sparsely populated joint bins.

    Example:
        >>> r = marginal_ratio(np.ones((2, 2)), [np.array([1.0, 3.0]), np.array([1.0, 1.0])], clip=10.0)
        >>> r.round(6).tolist()
        [[0.5, 0.5], [1.5, 1.5]]
    """
    s = np.asarray(prior, dtype=np.float64)
    if s.ndim != len(marginals) or s.sum() <= 0:
        raise InputError(f"cannot reweight a {s.shape} prior (sum {s.sum()}) to {len(marginals)} marginals")
    q = s / s.sum()
    for _ in range(rounds):
        for axis, m in enumerate(marginals):
            target = np.clip(np.asarray(m, dtype=np.float64), 0.0, None)
            if target.shape != (s.shape[axis],) or target.sum() <= 0:
                raise InputError(
                    f"marginal {axis} has shape {target.shape} (sum {target.sum()}); "
                    f"expected ({s.shape[axis]},)"
                )
            other = tuple(a for a in range(s.ndim) if a != axis)
            current = q.sum(axis=other)
            scale = np.where(current > 0, (target / target.sum()) / np.where(current > 0, current, 1.0), 1.0)
            shape = [1] * s.ndim
            shape[axis] = -1
            q = q * scale.reshape(shape)
    sn = s / s.sum()
    ratio = np.where(sn > 0, q / np.where(sn > 0, sn, 1.0), 1.0)
    return np.clip(ratio, 1.0 / clip, clip)


def particle_weights(
    values: Sequence[np.ndarray], edges: Sequence[np.ndarray], ratio: np.ndarray, passes: np.ndarray
) -> np.ndarray:
    """The factor of every event: ``ratio`` in the joint bin of its particle-level ``values``
    where ``passes``, 1 elsewhere.

    Example:
        >>> particle_weights([np.array([0.5, 1.5, np.nan])], [np.array([0.0, 1.0, 2.0])],
        ...                  np.array([2.0, 0.5]), np.array([True, True, False])).tolist()
        [2.0, 0.5, 1.0]
    """
    p = np.asarray(passes, dtype=bool)
    out = np.ones(len(p))
    index = tuple(bin_index(np.asarray(v)[p], e) for v, e in zip(values, edges, strict=True))
    out[p] = ratio[index]
    return out


def _joint_efficiency(
    values: Sequence[np.ndarray],
    edges: Sequence[np.ndarray],
    *,
    passes_truth: np.ndarray,
    passes_reco: np.ndarray,
    weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(joint particle-level spectrum of the simulation, joint efficiency)."""
    fid = np.asarray(passes_truth, bool)
    both = fid & np.asarray(passes_reco, bool)
    truth = histogram_nd([np.asarray(v)[fid] for v in values], edges, weights=weights[fid]).values()
    matched = histogram_nd([np.asarray(v)[both] for v in values], edges, weights=weights[both]).values()
    eff = np.where(truth > 0, matched / np.where(truth > 0, truth, 1.0), 0.0)
    return truth, eff


def joint_unfolded(
    samples: np.ndarray, edges: Sequence[np.ndarray], signal_weights: np.ndarray, efficiency: np.ndarray
) -> np.ndarray:
    """The joint unfolded histogram: the posterior occupancy of every measured event in the joint
    particle-level bins (mean over members and samples), weighted by ``signal_weights`` (the
    fake-removing weights), divided by the joint ``efficiency`` (0 where it is 0).

    Example:
        >>> s = np.array([[[[0.5, 0.5]], [[1.5, 0.5]]]])  # 1 member, 2 events, 1 sample, 2 obs
        >>> e = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0])]
        >>> joint_unfolded(s, e, np.ones(2), np.full((2, 1), 0.5)).tolist()
        [[2.0], [2.0]]
    """
    members, n, k, dims = samples.shape
    if dims != len(edges):
        raise InputError(f"samples have {dims} observables, {len(edges)} binnings given")
    shape = tuple(len(e) - 1 for e in edges)
    flat = np.zeros(samples.shape[:3], dtype=np.int64)
    for d, e in enumerate(edges):
        flat = flat * shape[d] + bin_index(samples[..., d].reshape(-1), e).reshape(samples.shape[:3])
    slot = np.broadcast_to(np.arange(n)[None, :, None], flat.shape) * int(np.prod(shape)) + flat
    occupancy = np.bincount(slot.ravel(), minlength=n * int(np.prod(shape))).reshape(n, -1) / (members * k)
    counts = (signal_weights @ occupancy).reshape(shape)
    return np.where(efficiency > 0, counts / np.where(efficiency > 0, efficiency, 1.0), 0.0)


def unfold_icinn(
    models: Sequence[Any],
    *,
    sample: Callable[[Sequence[Any]], np.ndarray],
    unfold: Callable[[np.ndarray, Sequence[Response], FakeRate], list[Unfolded]],
    rebuild: Callable[[np.ndarray], tuple[list[Response], FakeRate]],
    finetune: Callable[[Sequence[Any], np.ndarray], list[Any]],
    train_gen: Sequence[np.ndarray],
    train_fiducial: np.ndarray,
    train_selected: np.ndarray,
    train_weights: np.ndarray,
    edges: Sequence[np.ndarray],
    fake_lookup: Callable[[FakeRate], np.ndarray],
    data_weights: np.ndarray,
    cfg: ICINNConfig,
) -> tuple[list[Unfolded], dict[str, Any]]:
    """The IcINN iteration (module docstring) around the study's pieces.

    Args:
        models: the trained ensemble (copied; the originals are not changed).
        sample: posterior samples ``(members, n, K, n_obs)`` of the measured events from models.
        unfold: :func:`~hepflow.unfolding.cinn.unfold_cinn` of samples with responses and fakes.
        rebuild: responses and fake rate of the simulation with per-event weight factors.
        finetune: continue training copies of models with per-event weight factors.
        train_gen, train_fiducial, train_selected, train_weights: the simulation's particle
            level, selections and weights (per event).
        edges: the particle-level binning of every observable.
        fake_lookup: the fake fraction of every measured event for a fake rate.
        data_weights: the measured events' weights.
        cfg: iterations, tolerance, clip.

    Returns:
        the final unfolded spectra (with the ``iteration`` component) and a summary: the central
        values of every pass (``centrals``: pass 0 is the plain cINN), the largest move per
        iteration in units of the total uncertainty (``moves``), ``iterations`` done and the
        stopping reason.
    """
    prior, _ = _joint_efficiency(
        train_gen, edges, passes_truth=train_fiducial, passes_reco=train_selected, weights=train_weights
    )
    factor = np.ones(len(train_weights))
    current = [copy.deepcopy(m) for m in models]
    responses, fakes = rebuild(factor)
    samples = sample(current)
    result = unfold(samples, responses, fakes)
    centrals = [[u.central.tolist() for u in result]]
    moves: list[float] = []
    reason = f"reached {cfg.iterations} iterations"
    passes = [result]
    for _ in range(cfg.iterations):
        _, eff = _joint_efficiency(
            train_gen,
            edges,
            passes_truth=train_fiducial,
            passes_reco=train_selected,
            weights=train_weights * factor,
        )
        if cfg.ratio == "joint":
            joint = joint_unfolded(samples, edges, data_weights * (1.0 - fake_lookup(fakes)), eff)
            ratio = density_ratio(joint, prior, clip=cfg.clip)
        else:
            ratio = marginal_ratio(prior, [u.central for u in result], clip=cfg.clip)
        factor = particle_weights(train_gen, edges, ratio, train_fiducial)
        current = finetune(current, factor)
        responses, fakes = rebuild(factor)
        samples = sample(current)
        result = unfold(samples, responses, fakes)
        passes.append(result)
        centrals.append([u.central.tolist() for u in result])
        move = max(
            float(np.max(np.abs(u.central - p.central) / np.where(u.uncertainty > 0, u.uncertainty, np.inf)))
            for u, p in zip(result, passes[-2], strict=True)
        )
        moves.append(move)
        if move < cfg.tolerance:
            reason = f"converged: largest move {move:.3f} < {cfg.tolerance} of the total uncertainty"
            break
    final = []
    for u, p in zip(passes[-1], passes[-2], strict=True):
        step = np.abs(u.central - p.central)
        final.append(
            Unfolded(
                central=u.central,
                covariance=u.covariance + np.diag(step**2),
                components={**u.components, "iteration": step},
            )
        )
    summary = {
        "iterations": len(moves),
        "stopped": reason,
        "moves": moves,
        "centrals": centrals,
        "weights": {"min": float(factor.min()), "max": float(factor.max())},
    }
    return final, summary


def make_finetune(
    theta: np.ndarray,
    context: Mapping[str, np.ndarray],
    rows: np.ndarray,
    *,
    fit: FitConfig,
    epochs: int,
    bootstrap: bool,
    build: Callable[[int], Any] | None = None,
    lr_scale: float = 1.0,
) -> Callable[[Sequence[Any], np.ndarray], list[Any]]:
    """The ``finetune`` of :func:`unfold_icinn` for the study: continue training copies of the
    members for ``epochs`` epochs at ``lr_scale`` times ``fit.lr`` on the events ``rows`` (of the
    per-event factors), weighted; with ``build`` (``training = "retrain"``) train a fresh
    ensemble, member ``m`` from ``build(fit.seed + m)``, for ``fit.epochs`` instead."""
    from dataclasses import replace

    from hepflow.unfolding.cinn import train_ensemble

    def finetune(models: Sequence[Any], factor: np.ndarray) -> list[Any]:
        if build is not None:
            fresh, _ = train_ensemble(
                build, theta, context, fit=fit, members=len(models), bootstrap=bootstrap, weights=factor[rows]
            )
            return fresh
        copies = [copy.deepcopy(m).train() for m in models]
        trained, _ = train_ensemble(
            lambda seed: None,
            theta,
            context,
            fit=replace(fit, epochs=epochs, lr=fit.lr * lr_scale),
            members=len(copies),
            bootstrap=bootstrap,
            weights=factor[rows],
            start=copies,
        )
        return trained

    return finetune
