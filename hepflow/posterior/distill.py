"""Fit a flow posterior for one observation to the exact posterior, where the likelihood is known.

A refined cINN (:mod:`hepflow.posterior.sequential`) is close to the posterior of one
observation but not on it: trained on a finite simulation budget, its means can sit a sizeable
fraction of a standard deviation off. Where the likelihood ``L(x_o | theta)`` and the prior can
be evaluated, its importance weights ``w = L pi / q`` (:mod:`hepflow.posterior.importance`) say
exactly how far off, and the flow can be trained on them: minimising the weighted negative
log-density

    - sum_i w_i log q(theta_i | x_o),   theta_i ~ q,

is minimising the forward Kullback-Leibler divergence ``KL(p || q)`` from the exact posterior
``p``, estimated by importance sampling (Müller, McWilliams, Rousselle, Gross and Novák, "Neural
importance sampling", ACM Trans. Graph. 38 (2019) 145, arXiv:1808.03856). :func:`distill` does
this in steps: draw from the current flow, pool with the earlier steps' draws, weight every
pooled draw by the target over the mixture of the steps' flows (the balance heuristic of
multiple importance sampling, Veach and Guibas 1995: draws of an early, poor flow get weights as
even as their proposal allows), fine-tune on the pool, with a tenth of every step's draws held
out for validation. After it the flow itself, without weights, samples the
posterior of the likelihood it was tuned to, and its next importance weights are more even
(:attr:`Distillation.efficiency`).

This needs the flow to cover the posterior already (tens of effective draws or more among a
step's draws): weights cannot teach a mode that no draw reaches (nor show that it is missed: a
flow that misses a mode weighs its own draws as evenly as one that holds it), and a handful of
effective draws is no sample to fit a density to. Where another density is known to cover the posterior
(for the cosmic-ray analysis, the importance proposal its mode weighing adapted to every mode of
the exact posterior), ``proposal`` adds it as a defensive component (Hesterberg, "Weighted
average importance sampling and defensive mixture distributions", Technometrics 37 (1995) 185):
a share of every step's draws comes from it, and the weights are taken against the mixture
``(1 - share) q_flows + share g``, bounded by ``target / (share g)`` where the flow misses a
mode. The flow then learns the modes the proposal holds, with the masses the target gives them.
It is an engine step for any simulator whose likelihood can be evaluated; for the cosmic-ray
analysis it follows the sequential refinement (``hepflow refine cosmic --distill``,
docs/refine.md).

Example (a Gaussian linear toy: a poorly trained cINN tuned to the exact posterior):
    >>> import numpy as np, hepflow
    >>> from hepflow.posterior.toys import GaussianLinear
    >>> toy = GaussianLinear(dim=2, noise=0.3)
    >>> theta = toy.prior.sample(2000, rng=0)
    >>> net = hepflow.ConditionalINN(2, 2, blocks="affine", depth=3, width=32, seed=0)
    >>> _ = hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=3, progress=False, seed=0)
    >>> x_o = np.array([[1.5, -1.0]])
    >>> def log_target(t):
    ...     return toy.log_likelihood(t, x_o[0]) + toy.prior.log_prob(t)
    >>> from hepflow.posterior.base import FlowPosterior
    >>> result = distill(FlowPosterior(net), x_o, log_target, steps=3, samples=2000,
    ...                  epochs=30, fit_options={"lr": 3e-3}, seed=1)
    >>> draws, _ = result.posterior.sample(4000, x_o, seed=2)
    >>> mean, sd = toy.posterior_mean_sd(x_o[0])
    >>> bool(np.all(np.abs(draws[0].mean(0) - mean) < 0.1 * sd)), result.efficiency > 0.8
    (True, True)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from hepflow.errors import ConfigError, ModelError
from hepflow.posterior.base import FlowPosterior, torch_generator
from hepflow.posterior.importance import importance_weights

__all__ = ["VALIDATION_SHARE", "DistillStep", "Distillation", "distill"]

#: the share of every step's draws held out for validation (early stopping, best epoch)
VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class DistillStep:
    """What one step of :func:`distill` did.

    Attributes:
        step: 1, 2, ...
        samples: draws weighted in this step (of the flow, and of the proposal when there is one).
        ess: their effective sample size under the importance weights before the step's training
            (against the step's mixture of flow and proposal).
        efficiency: ``ess / samples``.
        pooled_ess: effective sample size of the pool (all steps' draws, weighted against the
            mixture of the steps' flows and the proposal).
        unusable: pooled draws with weight that the flow being trained cannot evaluate (its
            density ``-inf`` or NaN there, e.g. a proposal draw with a fraction below float32's
            range), left out of the training.
        epochs: epochs trained.
        best_val_loss: the best weighted validation loss.
        target_seconds: time spent in ``log_target``.
        train_seconds: time spent training.
    """

    step: int
    samples: int
    ess: float
    efficiency: float
    pooled_ess: float
    unusable: int
    epochs: int
    best_val_loss: float | None
    target_seconds: float
    train_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class Distillation:
    """The result of :func:`distill`.

    Attributes:
        posterior: the tuned posterior (same features and metadata as the input's).
        model: its network.
        steps: one :class:`DistillStep` per step.
        efficiency: importance efficiency (ESS / n) of fresh draws of the tuned flow alone (None
            with ``check=False``): near 1 when the flow now is the posterior.
        seconds: wall time.
        settings: the options it ran with.
    """

    posterior: FlowPosterior
    model: Any
    steps: list[DistillStep]
    efficiency: float | None
    seconds: float
    settings: dict[str, Any]

    def metadata(self) -> dict[str, Any]:
        """What a saved model records."""
        return {
            "method": "importance-weighted forward-KL fine-tuning (Mueller et al. 2019, arXiv:1808.03856)",
            "steps": [s.to_dict() for s in self.steps],
            "efficiency_after": self.efficiency,
            "seconds": self.seconds,
            **self.settings,
        }


def _repeat(context: Any, n: int) -> Any:
    import torch

    def rep(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return a.expand(n, *a.shape[1:]).clone()
        arr = np.asarray(a)
        return np.repeat(arr, n, axis=0)

    if isinstance(context, Mapping):
        return {k: rep(v) for k, v in context.items()}
    return rep(context)


def distill(
    posterior: FlowPosterior,
    observation: Any,
    log_target: Callable[[np.ndarray], np.ndarray],
    *,
    steps: int = 2,
    samples: int = 4000,
    epochs: int = 20,
    fit_options: Mapping[str, Any] | None = None,
    min_ess: float = 10.0,
    proposal: Any = None,
    proposal_share: float = 0.5,
    check: bool = True,
    seed: int = 0,
    callback: Callable[[DistillStep], None] | None = None,
) -> Distillation:
    """Tune ``posterior``'s flow at ``observation`` to the density ``log_target`` (module docstring).

    Args:
        posterior: a :class:`~hepflow.posterior.base.FlowPosterior` of one flow (copied, never
            modified).
        observation: ``x_o``, one row as the posterior's ``features`` take it.
        log_target: ``theta (n, d) -> (n,)`` the unnormalised log posterior, ``log L(x_o |
            theta) + log pi(theta)`` in the flow's measure (``-inf`` outside the support).

    Keyword Args:
        steps: draw-weight-train steps.
        samples: draws per step (each costs one ``log_target`` evaluation).
        epochs: training epochs per step (on the pool of all steps' weighted draws).
        fit_options: further options of :func:`hepflow.fit` (``lr``, ``batch_size``,
            ``patience``...); ``epochs``, ``seed``, ``progress`` and ``weights`` are set here.
        min_ess: refuse to train on a step's weights with an effective sample size below this
            (the flow misses the posterior: :class:`~hepflow.errors.ModelError`).
        proposal: a density that covers the posterior, with ``sample(n, rng) -> (n, d)`` and
            ``log_prob(theta) -> (n,)`` in the flow's measure: a defensive mixture component
            (module docstring). None: the flows alone.
        proposal_share: the share of every step's draws taken from ``proposal``, in (0, 1),
            rounded to a whole number of draws (the rounded share is the one recorded and used
            in the weights).
        check: draw ``samples`` more after the last step and record their importance
            efficiency (one more ``log_target`` evaluation of ``samples`` points).
        seed: seeds the draws (step ``t`` uses ``seed + t``) and the training.
        callback: called with each step's record.

    Returns a :class:`Distillation`. Raises :class:`~hepflow.errors.ConfigError` for invalid
    options.
    """
    from hepflow.flows.ensemble import FlowEnsemble
    from hepflow.training.fit import fit

    if steps < 1 or samples < 10 or epochs < 1:
        raise ConfigError(
            f"distill needs steps >= 1, samples >= 10 and epochs >= 1, got steps={steps}, "
            f"samples={samples}, epochs={epochs}"
        )
    if not isinstance(posterior, FlowPosterior) or isinstance(posterior.model, FlowEnsemble):
        what = type(posterior.model if isinstance(posterior, FlowPosterior) else posterior).__name__
        raise ConfigError(f"distill tunes one flow, got a {what}")
    if not bool(getattr(posterior.model, "prepared", True)):
        raise ConfigError(
            "distill tunes a trained flow: this one was never fitted (its standardisation would be fitted "
            "to the one observation)"
        )
    if not (math.isfinite(min_ess) and 0 <= min_ess < samples):
        raise ConfigError(f"min_ess must lie in [0, samples = {samples}), got {min_ess}")
    n_proposal = 0
    if proposal is not None:
        if not all(callable(getattr(proposal, name, None)) for name in ("sample", "log_prob")):
            kind = type(proposal).__name__
            raise ConfigError(f"distill's proposal needs sample and log_prob methods, got a {kind} object")
        if not 0 < proposal_share < 1:
            raise ConfigError(f"proposal_share must lie in (0, 1), got {proposal_share}")
        n_proposal = round(proposal_share * samples)
        if not 0 < n_proposal < samples:
            starved = "the proposal" if n_proposal == 0 else "the flow"
            raise ConfigError(
                f"proposal_share {proposal_share} of {samples} samples leaves no draw to {starved}"
            )
    share = n_proposal / samples
    options = dict(fit_options or {})
    if clash := sorted({"epochs", "seed", "progress", "weights"} & options.keys()):
        raise ConfigError(f"fit_options must not set {', '.join(clash)}: distill sets them")

    t_start = time.perf_counter()
    model = copy.deepcopy(posterior.model).eval()
    context = posterior.context(observation)

    def as_posterior(net: Any) -> FlowPosterior:
        return FlowPosterior(net, metadata=posterior.metadata, features=posterior.features)

    def log_proposal(theta: np.ndarray) -> np.ndarray:
        lg = np.asarray(proposal.log_prob(theta), dtype=np.float64).reshape(-1)
        if lg.shape != (len(theta),):
            raise ModelError(
                f"distill's proposal returned log_prob of shape {lg.shape} for {len(theta)} draws"
            )
        return np.where(np.isnan(lg), -np.inf, lg)

    def mixture(log_q_flow: np.ndarray, log_g: np.ndarray | None) -> np.ndarray:
        """The density the draws came from: the flows' (already averaged), with the proposal's share."""
        log_q_flow = np.where(np.isnan(log_q_flow), -np.inf, log_q_flow)
        if log_g is None:
            return log_q_flow
        return np.logaddexp(math.log1p(-share) + log_q_flow, math.log(share) + log_g)

    def weights_of(lt: np.ndarray, log_mix: np.ndarray) -> Any:
        """Importance weights target / mixture; a draw the target gives no mass to weighs 0
        whatever the mixture there, one it gives mass to must have a finite mixture density."""
        lost = np.isfinite(lt) & ~np.isfinite(log_mix)
        if lost.any():
            raise ModelError(
                f"distill: {int(lost.sum())} draws where the target is positive have no finite density "
                f"under the flow{' or the proposal' if n_proposal else ''} that drew them"
            )
        return importance_weights(lt, np.where(np.isfinite(lt), log_mix, 0.0))

    def weighted_draws(step_seed: int, *, defend: bool = True) -> tuple[np.ndarray, np.ndarray, Any, float]:
        """Draws of the current flow (and the proposal, with ``defend``), their log target, their
        weights against the step's mixture, seconds spent on the target."""
        n_extra = n_proposal if defend else 0
        n_flow = samples - n_extra
        draws, logq = as_posterior(model).sample_context(
            n_flow, context, generator=torch_generator(step_seed), log_prob=True
        )
        theta, log_q = draws[0], logq[0]
        log_g = None
        if n_extra:
            extra = np.asarray(proposal.sample(n_extra, np.random.default_rng(step_seed)), dtype=np.float64)
            if extra.shape != (n_extra, theta.shape[1]):
                raise ModelError(
                    f"distill's proposal returned draws of shape {extra.shape}, expected "
                    f"{(n_extra, theta.shape[1])}"
                )
            extra = extra.astype(theta.dtype)
            # the flow's density at its own draws came with them: evaluate it at the proposal's only
            log_q = np.concatenate([log_q, as_posterior(model).log_prob(extra[None], observation)[0]])
            theta = np.concatenate([theta, extra])
            log_g = log_proposal(theta)
        t0 = time.perf_counter()
        lt = np.asarray(log_target(theta), dtype=np.float64)
        if lt.shape != (samples,):
            raise ModelError(f"log_target returned shape {lt.shape} for {samples} draws")
        lt = np.where(np.isnan(lt), -np.inf, lt)
        if not np.isfinite(lt).any():
            raise ModelError(
                f"distill: the target vanishes at all {samples} draws: the flow"
                f"{' with the proposal' if n_extra else ''} does not cover the posterior"
            )
        return theta, lt, weights_of(lt, mixture(log_q, log_g)), time.perf_counter() - t0

    flows: list[Any] = []  # the flow each step drew from (the pool's mixture proposal)
    pool_theta: list[np.ndarray] = []
    pool_target: list[np.ndarray] = []
    pool_val: list[np.ndarray] = []
    records: list[DistillStep] = []
    for t in range(steps):
        theta, lt, iw, t_target = weighted_draws(seed + t)
        if not iw.ess >= min_ess:
            raise ModelError(
                f"distill step {t + 1}: {iw.ess:.3g} effective draws of {samples} (importance efficiency "
                f"{iw.efficiency:.2g}) < {min_ess:g}: the flow"
                f"{' with the proposal' if n_proposal else ''} does not cover the posterior"
            )
        flows.append(copy.deepcopy(model).eval())
        pool_theta.append(theta)
        pool_target.append(lt)
        # a tenth of every step's draws is held out for validation, for good: no draw trained on
        # in one step judges the training of the next
        held = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(t,))).random(samples)
        pool_val.append(held < VALIDATION_SHARE)
        all_theta, all_target = np.concatenate(pool_theta), np.concatenate(pool_target)
        val = np.concatenate(pool_val)
        # the draws of all steps come from the mixture of the steps' flows (equal shares) and the
        # proposal (its share): weights target / mixture (the balance heuristic of multiple
        # importance sampling)
        log_q = np.stack([as_posterior(f).log_prob(all_theta[None], observation)[0] for f in flows])
        log_mix = mixture(
            logsumexp(log_q, axis=0) - math.log(len(flows)), log_proposal(all_theta) if n_proposal else None
        )
        pooled = weights_of(all_target, log_mix)
        w = pooled.weights
        # a draw the current flow cannot evaluate (a proposal draw with a fraction below float32's
        # range, say) would make its training loss NaN: left out, and counted
        evaluable = np.isfinite(log_q[-1])
        usable = (w > 0) & evaluable
        train, hold = usable & ~val, usable & val
        if not hold.any():  # a validation split without weight: fall back to fit's own split
            train, hold = usable, np.zeros_like(val)
        t1 = time.perf_counter()
        model.train()
        validation = (all_theta[hold], _repeat(context, int(hold.sum())), w[hold]) if hold.any() else None
        history = fit(
            model,
            all_theta[train],
            _repeat(context, int(train.sum())),
            weights=w[train],
            epochs=epochs,
            seed=seed + t,
            progress=False,
            validation=validation,
            **options,
        )
        model = model.cpu().eval()
        record = DistillStep(
            step=t + 1,
            samples=samples,
            ess=float(iw.ess),
            efficiency=float(iw.efficiency),
            pooled_ess=float(pooled.ess),
            unusable=int(np.sum((w > 0) & ~evaluable)),
            epochs=len(history.train_loss),
            best_val_loss=history.best_val_loss,
            target_seconds=t_target,
            train_seconds=time.perf_counter() - t1,
        )
        records.append(record)
        if callback is not None:
            callback(record)
    efficiency = None
    if check:
        iw = weighted_draws(seed + steps, defend=False)[2]  # the tuned flow's own draws
        efficiency = float(iw.efficiency) if math.isfinite(iw.efficiency) else 0.0
    settings = {
        "steps_requested": steps,
        "samples": samples,
        "epochs": epochs,
        "min_ess": min_ess,
        "seed": seed,
        "proposal": None if proposal is None else {"kind": type(proposal).__name__, "share": share},
    }
    return Distillation(
        posterior=as_posterior(model),
        model=model,
        steps=records,
        efficiency=efficiency,
        seconds=time.perf_counter() - t_start,
        settings=settings,
    )
