"""``hepflow refine cosmic``: the cINN posterior refined for one observation (sequential NPE).

:func:`refine_model` takes a trained (amortized) cosmic model and one observation (``"auger"``
or a file), and runs the engine's truncated sequential NPE
(:func:`hepflow.posterior.sequential.refine`) with the analysis forward model as simulator and
the analysis prior. The first proposal region is the union of the cINN's highest-density region
and neighbourhoods of **seeds**, so that it reaches modes the amortized cINN misses:

* the distinct local maxima of the exact posterior found by the MCMC module's multi-start search
  (:func:`hepflow.cosmic.modes.find_modes`: ``[mcmc] n_starts`` L-BFGS searches from the best of
  ``n_candidates`` prior and sparse-Dirichlet draws, one per ``gamma`` stratum; it finds the
  hard-spectrum, He-dominated minimum of the Auger data that the prior fills with ~1e-6 of its
  mass);
* ``sir_seeds`` likelihood-weighted prior draws: ``sir_draws`` prior draws resampled with
  weights ``L(x | theta)`` (sampling-importance-resampling), distinct ones kept.

The deepest mode gets half of the seeded simulations (``seed_share``, half of each round), the
other seeds share the rest; every seed has three nested balls, kept in every round where they
meet the region, and the network is trained with the plain NPE loss (``reweight=True``: weights
``1 / W``, exact on the union of the regions).

**Systematics.** A model trained with ``[systematics]`` (its metadata records the nuisances)
learnt the posterior of the 7 source parameters marginalised over ``nu_E, nu_X``. Its refinement
keeps that: every simulation draws its own nuisances from their priors, the mode search runs on
the joint posterior (7 + 2 coordinates; the seeds are the modes' source parameters), and the SIR
seeds are joint prior draws weighted by ``L(x | theta, nu)``, whose ``theta`` follow the prior
weighted by the marginal likelihood. The refined model records the same ``systematics``, so
``infer --importance`` weights it with the marginal likelihood.

The refined network is saved as a model directory (``flow/``, like ``hepflow train cosmic``)
whose metadata records, under ``refinement``, the observation (name and digest of its counts),
the simulation budget, every round (proposal method, prior mass of the region, epochs, seconds),
the seeds and the wall time. ``hepflow infer cosmic`` (with ``--importance``) and
``hepflow report cosmic`` accept it; applied to another observation it is refused
(:func:`hepflow.cosmic.posterior.check_observation`), and ``hepflow compare cosmic`` refuses it
(it is no amortized posterior).

Example (the ``hepflow refine cosmic`` command)::

    refine_model("models/cosmic", "auger", output_dir="models/cosmic_auger",
                 rounds=3, simulations=10_000, epochs=30)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.config import to_dict
from hepflow.cosmic.config import PARAMETERS, CosmicConfig, load_config
from hepflow.cosmic.features import context_from_features, observation_features
from hepflow.cosmic.observation import Observation
from hepflow.cosmic.posterior import load_posterior
from hepflow.cosmic.systematics import Systematics
from hepflow.errors import ConfigError, HepflowError, ModelError
from hepflow.posterior import EnsemblePosterior, FlowPosterior

__all__ = ["cosmic_seeds", "refine_model", "refinement_simulator"]

#: the file with the refinement's summary, next to ``flow/``
REFINEMENT_FILE = "refinement.json"
#: what ``refinement.json`` calls an observation passed as an object
IN_MEMORY = "in memory"


def cosmic_seeds(
    observation: Any,
    *,
    model: Any,
    prior: Any,
    seed: int,
    n_starts: int = 8,
    n_candidates: int = 4096,
    sir_draws: int = 20_000,
    sir_seeds: int = 8,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Seed points ``(m, 7)`` for the first proposal region, and what they are.

    The modes of :func:`hepflow.cosmic.modes.find_modes` on the exact posterior (best first) and
    up to ``sir_seeds`` distinct likelihood-weighted prior draws (see the module docstring).
    """
    from hepflow.cosmic import Likelihood
    from hepflow.cosmic.mcmc import UnconstrainedPosterior
    from hepflow.cosmic.modes import find_modes

    like = Likelihood(observation, model=model)
    syst = getattr(model, "systematics", None)
    t0 = time.perf_counter()
    modes = find_modes(
        UnconstrainedPosterior(like, prior), seed, n_starts=n_starts, n_candidates=n_candidates
    )
    t1 = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(99,)))
    draws = prior.sample(sir_draws, rng)
    joint = draws if syst is None else np.concatenate([draws, syst.sample(sir_draws, rng)], axis=1)
    with np.errstate(divide="ignore"):
        # with nuisances: joint draws weighted by L(x | theta, nu), whose theta follow the prior
        # weighted by the marginal likelihood (a pseudo-marginal SIR)
        log_l = like(joint)
    ok = np.isfinite(log_l)
    picked = np.empty((0, draws.shape[1]))
    if ok.any() and sir_seeds > 0:
        w = np.exp(log_l[ok] - log_l[ok].max())
        idx = np.unique(rng.choice(int(ok.sum()), size=sir_seeds, p=w / w.sum()))
        picked = draws[ok][idx]
    # the source parameters of the modes (with nuisances, the joint maxima's first 7 columns)
    seeds = np.concatenate([np.stack([m.theta[: len(PARAMETERS)] for m in modes]), picked])
    info = {
        "modes": [m.to_dict() for m in modes],
        "sir": {
            "prior_draws": sir_draws,
            "kept": len(picked),
            "theta": [dict(zip(PARAMETERS, t.tolist(), strict=True)) for t in picked],
        },
        "seconds": {"modes": t1 - t0, "sir": time.perf_counter() - t1},
    }
    return seeds, info


def refinement_simulator(
    model: Any, *, binning: Any
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """The simulator of a refinement: ``(theta (n, 7), rng) -> features (n, d)`` (float32).

    ``model`` is the forward model the cINN was trained with. With systematics (a model trained
    with ``[systematics]`` learnt the posterior marginalised over the nuisances) every simulation
    draws its own ``nu_E, nu_X`` from their priors, as the training data did.

    Example:
        >>> from hepflow.cosmic import ForwardModel, Systematics
        >>> fwd = ForwardModel(systematics=Systematics())
        >>> sim = refinement_simulator(fwd, binning=fwd.binning)
        >>> theta = np.tile([[1.0, 18.7, 0.2, 0.2, 0.2, 0.2, 0.2]], (3, 1))
        >>> sim(theta, np.random.default_rng(1)).shape[0]
        3
    """
    syst = getattr(model, "systematics", None)

    def simulate(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if syst is not None:
            theta = np.concatenate([theta, syst.sample(len(theta), rng)], axis=1)
        sim = model.simulate(theta, rng)
        return observation_features(sim["spectrum"], sim["xmax"], binning=binning).astype(np.float32)

    return simulate


def refine_model(
    model_dir: str | os.PathLike[str],
    observation: str | os.PathLike[str] | Observation = "auger",
    *,
    output_dir: str | os.PathLike[str],
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    entry: int = 0,
    rounds: int = 3,
    simulations: int = 10_000,
    epochs: int = 30,
    lr: float | None = None,
    fine_tune: bool = False,
    temperature: float = 1.0,
    seed_radius: float = 1.0,
    seed_share: float = 0.5,
    min_acceptance: float = 1e-3,
    reweight: bool = False,
    distill_steps: int = 2,
    distill_samples: int = 4000,
    distill_epochs: int = 20,
    distill_min_ess: float = 10.0,
    seed: int = 1,
    seeds: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``hepflow refine cosmic``: refine a trained cosmic cINN for one observation, save it.

    Args:
        model_dir: a trained cosmic model (one cINN trained on the prior; an ensemble or a
            ``[proposal]``-trained model is refused).
        observation: ``"auger"``, a file (:func:`hepflow.cosmic.generate.load_observation`,
            ``entry`` for a pseudo-experiment file).
        output_dir: the new model directory: ``flow/`` and ``refinement.json``.
        config: the analysis config (default: the shipped one); the model must have been
            trained with its prior and forward model (the simulator of the refinement);
            ``[training]`` gives the optimiser settings, ``[mcmc]`` the mode search.
        rounds, simulations, epochs: rounds, simulations per round, epochs per round.
        lr: the learning rate (default ``[training] lr``).
        fine_tune: continue training the amortized network (True) or train a fresh one of its
            architecture each round on the simulations so far (False).
        temperature: the flow's base-distribution width for the regions (>= 1 widens them).
        seed_radius: the radius of the balls around the seed points (unconstrained coordinates,
            in units of their spread in the training data; :func:`hepflow.posterior.sequential.refine`).
        seed_share: the share of each round's simulations drawn in the seed balls.
        min_acceptance: a proposal is drawn by rejection from the prior while at least this
            share of the prior's draws lies in its region, below it by SIR
            (:class:`hepflow.posterior.sequential.TruncatedPrior`). On the Auger data the regions
            hold 1e-3 to 1e-2 of the prior's mass, and SIR's efficiency was 2e-4 to 1e-2: most of
            a round's simulations repeated a few hundred parameter points. Rejection at 1e-3 costs
            one flow evaluation per prior draw (about 60 000 per second on one CPU core).
        reweight: train with weights ``1 / W`` (exact on the union of the regions although the
            seed balls have other proposal ratios than the rest of the regions;
            :func:`hepflow.posterior.sequential.refine`); False (default): the plain NPE loss,
            which on the Auger data moved further towards the MCMC's mode (docs/refine.md).
        distill_steps: after the rounds, tune the refined network to the exact posterior of the
            analysis likelihood in this many steps (:func:`hepflow.posterior.distill.distill`: its
            draws weighted by likelihood x prior / cINN density, the likelihood marginalised over
            the nuisances for a model with systematics; 0: no tuning). Each step costs
            ``distill_samples`` likelihood evaluations (with systematics about 2 minutes for
            4000 on one core), plus one more set for the efficiency check after the last step.
            On the Auger data two steps take the plain refined cINN's largest mean shift from
            0.93 to 0.03 MCMC standard deviations (docs/refine.md). A refined cINN the
            distillation cannot use (fewer than ``distill_min_ess`` effective draws, a target
            that vanishes at every draw, a training that fails) is saved untuned, and the record
            and the printout say why.
        distill_samples, distill_epochs: draws per step, training epochs per step.
        distill_min_ess: the fewest effective draws a step may train on
            (:func:`hepflow.posterior.distill.distill`).
        seed: seeds the search for seed points, the proposals, simulations and training.
        seeds: add the seed points to the first region (False: the cINN's HPR alone).
        progress: print one line per round.
        overwrite: replace a model in ``output_dir``.

    Returns the content of ``refinement.json``.
    """
    import hepflow
    from hepflow.cosmic.generate import load_observation
    from hepflow.cosmic.pretrained import resolve
    from hepflow.flows.serialization import check_model_target
    from hepflow.outputs import write_json
    from hepflow.posterior.sequential import refine

    model_dir, config = resolve(model_dir, config)  # "pretrained": the shipped model and its config
    cfg = load_config(config)
    out = Path(output_dir)
    if Path(model_dir).resolve() == out.resolve():
        raise ConfigError(f"refine: --output {out} is the input model; choose another directory")
    check_model_target(out / "flow", overwrite=overwrite)
    if lr is not None and not (np.isfinite(lr) and lr > 0):
        raise ConfigError(f"refine: lr must be a positive number, got {lr}")
    if distill_steps < 0 or (
        distill_steps
        and (distill_samples < 10 or distill_epochs < 1 or not 0 <= distill_min_ess < distill_samples)
    ):
        raise ConfigError(
            f"refine: distill steps must be >= 0 (got {distill_steps}), with >= 10 samples (got "
            f"{distill_samples}), >= 1 epoch (got {distill_epochs}) and a minimum ESS in [0, samples) "
            f"(got {distill_min_ess})"
        )
    t0 = time.perf_counter()
    post = load_posterior(model_dir, config=cfg)
    if not isinstance(post, FlowPosterior) or isinstance(post, EnsemblePosterior):
        raise ModelError(
            f"{model_dir} is an ensemble or was trained on a [proposal]: refine one cINN trained on "
            "the prior (e.g. one member of the ensemble)"
        )
    if post.metadata.get("refinement"):
        raise ModelError(
            f"{model_dir} is a refined model already: refine the amortized model it came from "
            f"({post.metadata['refinement'].get('base_model')})"
        )
    binning = post.binning
    if isinstance(observation, Observation):  # an observation built in memory (a mock, say)
        if observation.binning != binning:
            raise ConfigError("refine: the observation's binning differs from the model's")
        obs = observation
    else:
        obs = load_observation(observation, binning=binning, entry=entry)
    prior = cfg.prior.build()
    model_syst = post.metadata.get("systematics")
    fwd = cfg.model.build(
        reference=obs, systematics=None if model_syst is None else Systematics.from_metadata(model_syst)
    )
    summary_kind = post.metadata["summary"]
    simulate = refinement_simulator(fwd, binning=binning)
    x_o = observation_features(obs.spectrum[None], obs.xmax[None], binning=binning).astype(np.float32)
    seed_points, seed_info = None, None
    if seeds:
        seed_points, seed_info = cosmic_seeds(
            obs,
            model=fwd,
            prior=prior,
            seed=seed,
            n_starts=cfg.mcmc.n_starts,
            n_candidates=cfg.mcmc.n_candidates,
        )
    seed_weights = None
    if seed_points is not None and len(seed_points) > 1:
        # the deepest mode (first) gets half of the seeded simulations, the others share the rest
        seed_weights = [len(seed_points) - 1.0] + [1.0] * (len(seed_points) - 1)
    fit_options = cfg.training.fit_options()
    for key in ("epochs", "seed"):
        fit_options.pop(key)
    if lr is not None:
        fit_options["lr"] = float(lr)

    def report(record: Any) -> None:
        if progress:
            print(
                f"round {record.round}: {record.simulations} simulations from the prior truncated to "
                f"{record.prior_mass:.3g} of its mass ({record.method}, efficiency {record.efficiency:.3g}), "
                f"{record.epochs} epochs in {record.train_seconds:.0f} s",
                flush=True,
            )

    result = refine(
        simulate,
        prior,
        x_o,
        estimator=post.model,
        features=partial(context_from_features, binning=binning, summary=summary_kind),
        rounds=rounds,
        simulations_per_round=simulations,
        epochs=epochs,
        seeds=seed_points,
        seed_weights=seed_weights,
        seed_share=seed_share,
        min_acceptance=min_acceptance,
        seed_radius=seed_radius,
        reweight=reweight and seed_points is not None,
        temperature=temperature,
        fine_tune=fine_tune,
        fit_options=fit_options,
        seed=seed,
        callback=report,
    )
    model, distillation = result.model, None
    if distill_steps:
        model, distillation = _distill(
            result.posterior,
            x_o,
            obs,
            model=fwd,
            prior=prior,
            steps=distill_steps,
            samples=distill_samples,
            epochs=distill_epochs,
            min_ess=distill_min_ess,
            fit_options=fit_options,
            seed=seed,
            progress=progress,
        )
    wall = time.perf_counter() - t0
    refinement = {
        "observation": (name := _observation_name(observation)),
        "entry": None if name in ("auger", IN_MEMORY) else entry,
        "observation_digest": obs.digest(),
        "base_model": str(Path(model_dir)),
        **result.metadata(),
        "wall_seconds": wall,
        "seeds": seed_info,
        "lr": fit_options["lr"],
        "distillation": distillation,
    }
    # the refined network's own training summary is saved by save_model
    metadata = {k: v for k, v in post.metadata.items() if k not in ("training", "training_summary")}
    metadata["training"] = {"refined_from": str(Path(model_dir)), "simulations": result.simulations}
    metadata["refinement"] = refinement
    model = model.cpu()
    hepflow.save_model(model, out / "flow", metadata=hepflow.config.json_plain(metadata), overwrite=True)
    summary = {
        **refinement,
        "config": {k: to_dict(getattr(cfg, k)) for k in ("prior", "model", "flow", "training")},
    }
    write_json(out / REFINEMENT_FILE, summary)
    return summary


def _distill(
    refined: FlowPosterior,
    x_o: np.ndarray,
    obs: Any,
    *,
    model: Any,
    prior: Any,
    steps: int,
    samples: int,
    epochs: int,
    min_ess: float,
    fit_options: dict[str, Any],
    seed: int,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """The refined network tuned to the exact posterior (:func:`hepflow.posterior.distill.distill`)
    with the analysis likelihood (marginalised over the nuisances when the model has them), and
    the record of it."""
    from hepflow.cosmic.posterior import log_target
    from hepflow.posterior.distill import distill

    def report(step: Any) -> None:
        if progress:
            print(
                f"distill step {step.step}: importance efficiency {step.efficiency:.3f} of {step.samples} "
                f"draws ({step.target_seconds:.0f} s of likelihood), {step.epochs} epochs in "
                f"{step.train_seconds:.0f} s",
                flush=True,
            )

    try:
        result = distill(
            refined,
            x_o,
            partial(log_target, observation=obs, model=model, prior=prior),
            steps=steps,
            samples=samples,
            epochs=epochs,
            min_ess=min_ess,
            fit_options=fit_options,
            seed=seed,
            callback=report,
        )
    except HepflowError as err:  # the rounds' work is kept: the refined cINN is saved untuned
        reason = (
            f"{err}; the refined cINN is saved without it (more rounds or simulations per round may let "
            "it cover the posterior; --distill 0 skips the distillation)"
        )
        if progress:
            print(f"distillation skipped: {reason}", flush=True)
        settings = {"steps_requested": steps, "samples": samples, "epochs": epochs, "min_ess": min_ess}
        return refined.model, {"skipped": reason, **settings}
    if progress and result.efficiency is not None:
        print(f"distilled: importance efficiency of the tuned cINN {result.efficiency:.3f}", flush=True)
    return result.model, result.metadata()


def _observation_name(observation: Any) -> str:
    """What ``refinement.json`` calls the observation: ``auger``, the file, or ``in memory``
    (an :class:`~hepflow.cosmic.Observation` object; its digest is recorded next to it)."""
    if isinstance(observation, Observation):
        return IN_MEMORY
    return "auger" if str(observation) == "auger" else str(Path(observation))
