"""``hepflow refine cosmic``: the cINN posterior refined for one observation (sequential NPE).

:func:`refine_model` takes a trained (amortized) cosmic model and one observation (``"auger"``
or a file), and runs the engine's truncated sequential NPE
(:func:`hepflow.posterior.sequential.refine`) with the analysis forward model as simulator and
the analysis prior. The first proposal region is the union of the cINN's highest-density region
and neighbourhoods of **seeds**, the modes of the exact posterior that the cINN misses:

* the distinct local maxima of the exact posterior are found by the MCMC module's multi-start
  search (:func:`hepflow.cosmic.modes.find_modes`: ``[mcmc] n_starts`` L-BFGS searches from the
  best of ``n_candidates`` prior and sparse-Dirichlet draws, one per ``gamma`` stratum, with the
  nuisances drawn from their priors) and weighed by their posterior mass
  (:func:`hepflow.cosmic.modes.weigh_modes`, ``[mcmc] mode_draws`` importance draws);
* a mode is a seed when it holds at least ``[mcmc] min_mode_mass`` (1 %) of the posterior and
  less than half of it (2000 draws of its Gaussian) lies in the amortized cINN's
  highest-density region; the seeds share ``seed_share`` of the simulations in proportion to
  their masses.

A mode the cINN's region already holds needs no seed: the prior truncated to the region gives it
simulations, and a seed would make the pooled proposal ratio ``W`` vary across it (on the Auger
data with systematics, seeds at a mode the cINN held made the fractions half as wide as the
MCMC's; docs/refine.md). A mode it misses, e.g. the hard-spectrum corner of mocks simulated
there (13-24 % of their posterior), is a seed. ``[mcmc] mode_draws = 0`` falls back to seeding
every maximum, the deepest with half of the seeded simulations. Every seed has three nested
balls, kept in every round where they meet the region. With seeds, each later region is the
union of the highest-density regions of the estimate and of the estimate corrected by ``1 / W``
(``regions="union"``, :func:`hepflow.posterior.sequential.refine`): the seeded mode, whose
``W`` is large, stays, and so does the mode the seeds' ``W`` pushes out of the estimate; without
seeds, the estimate's. The rounds train with the plain NPE loss, which overweights a seeded mode
of tiny prior mass by orders of magnitude, so with seeds one more fine-tuning pass on all
simulations weighted by ``1 / W`` follows (``correct``). That pass moves the mass back, but not
reliably to the right share; the **distillation** (:func:`hepflow.posterior.distill.distill`,
likelihood-weighted fine-tuning) fixes it: half of every step's draws come from the weighing's
importance proposal (:class:`ModeProposal`, a Student t per weighed mode), a defensive component
that covers every mode the weighing ran whether the refined cINN does or not, so the weights
carry each mode's exact mass to the network. After the distillation the refined cINN's share of
every weighed mode is compared with its exact mass (:func:`mode_shares`), and the verdict is
printed and recorded (``modes``); where it says "disagree", use the importance weights or the
MCMC.

**Systematics.** A model trained with ``[systematics]`` (its metadata records the nuisances)
learnt the posterior of the 7 source parameters marginalised over ``nu_E, nu_X``. Its refinement
keeps that: every simulation draws its own nuisances from their priors, and the mode search and
the weighing run on the joint posterior (7 + 2 coordinates; the seeds are the modes' source
parameters, the masses those of the joint regions). The refined model records the same ``systematics``, so
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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.config import to_dict
from hepflow.cosmic.config import PARAMETERS, CosmicConfig, load_config
from hepflow.cosmic.features import context_from_features, observation_features
from hepflow.cosmic.modes import StudentMixture
from hepflow.cosmic.observation import Observation
from hepflow.cosmic.posterior import load_posterior
from hepflow.cosmic.priors import Prior
from hepflow.cosmic.systematics import Systematics
from hepflow.errors import ConfigError, HepflowError, ModelError
from hepflow.posterior import EnsemblePosterior, FlowPosterior

__all__ = ["ModeProposal", "Seeds", "cosmic_seeds", "mode_shares", "refine_model", "refinement_simulator"]

#: the file with the refinement's summary, next to ``flow/``
REFINEMENT_FILE = "refinement.json"
#: unconstrained coordinates of the source parameters (gamma, lg R_cut, 4 log ratios of the fractions)
_SOURCE_DIMS = len(PARAMETERS) - 1
#: what ``refinement.json`` calls an observation passed as an object
IN_MEMORY = "in memory"


@dataclass(frozen=True)
class Seeds:
    """What :func:`cosmic_seeds` found.

    Attributes:
        points: the seeds' source parameters (m, 7), possibly none.
        shares: their relative shares of the seeded simulations (m,).
        info: JSON-ready: the rule, every mode (mass, share inside the cINN's region, seeded or
            not), the weighing's summary and the seconds.
        weights: the weighed modes' regions (:class:`hepflow.cosmic.modes.ModeWeights`), None
            without masses (``mode_draws=0``).
    """

    points: np.ndarray
    shares: np.ndarray
    info: dict[str, Any]
    weights: Any


def cosmic_seeds(
    observation: Any,
    *,
    model: Any,
    prior: Any,
    seed: int,
    region: Any = None,
    n_starts: int = 8,
    n_candidates: int = 4096,
    mode_draws: int = 20_000,
    min_mass: float = 0.01,
    inside: float = 0.5,
) -> Seeds:
    """Seed points ``(m, 7)`` for the first proposal region, their relative shares ``(m,)``, what
    they are, and the weighed modes (see the module docstring and :class:`Seeds`).

    The local maxima of the exact posterior (:func:`hepflow.cosmic.modes.find_modes`), weighed
    by their posterior mass (:func:`hepflow.cosmic.modes.weigh_modes`, ``mode_draws``
    importance draws). A mode is a seed when it holds at least ``min_mass`` of the posterior
    and less than ``inside`` of it lies in ``region`` (the amortized cINN's highest-density
    region, anything with ``contains(theta)``; judged on 2000 draws of the mode's Gaussian);
    its share is its mass. Without ``region`` every mode of at least ``min_mass`` is a seed.
    ``mode_draws=0``: no masses; every maximum is a seed, the deepest with half of the seeded
    simulations. ``m`` may be 0 (the region covers every mode).
    """
    from hepflow.cosmic import Likelihood
    from hepflow.cosmic.mcmc import UnconstrainedPosterior
    from hepflow.cosmic.modes import find_modes, weigh_modes

    like = Likelihood(observation, model=model)
    density = UnconstrainedPosterior(like, prior)
    t0 = time.perf_counter()
    modes = find_modes(density, seed, n_starts=n_starts, n_candidates=n_candidates)
    t1 = time.perf_counter()
    if mode_draws <= 0:
        chosen = list(modes)
        share = np.array([len(chosen) - 1.0] + [1.0] * (len(chosen) - 1)) if len(chosen) > 1 else np.ones(1)
        weights = None
        info: dict[str, Any] = {
            "rule": (
                "every maximum, the deepest with half of the seeded simulations "
                "(no masses: [mcmc] mode_draws = 0)"
            ),
            "modes": [m.to_dict() for m in chosen],
        }
    else:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(98,)))
        modes, weights = weigh_modes(density, modes, rng, draws=mode_draws)
        covered = np.full(len(modes), np.nan)
        if region is not None:
            covered = _covered(density, weights, region, rng)
        mass = np.array([m.mass or 0.0 for m in modes])
        missed = (mass >= min_mass) & ~(covered >= inside)
        chosen = [m for m, k in zip(modes, missed, strict=True) if k]
        share = mass[missed]
        info = {
            "rule": (
                f"modes holding >= {min_mass:g} of the posterior with < {inside:g} of it in the cINN's "
                "highest-density region, shares by mass"
            ),
            "modes": [
                {**m.to_dict(), "in_cinn_region": None if np.isnan(c) else float(c), "seed": bool(k)}
                for m, c, k in zip(modes, covered, missed, strict=True)
            ],
            "weights": weights.summary(),
        }
    info["seconds"] = {"modes": t1 - t0, "weighing": time.perf_counter() - t1}
    # the source parameters of the modes (with nuisances, the joint maxima's first 7 columns)
    seeds = np.array([m.theta[: len(PARAMETERS)] for m in chosen]).reshape(-1, len(PARAMETERS))
    return Seeds(seeds, share, info, None if mode_draws <= 0 else weights)


def mode_shares(
    found: Seeds, draws: np.ndarray, *, prior: Any, min_mass: float = 0.01, tolerance: float = 0.05
) -> dict[str, Any]:
    """The share of ``draws`` (n, 7) of a posterior (the refined cINN) in each weighed mode of
    ``found`` holding at least ``min_mass``, next to its exact mass, and a verdict: the masses agree
    when every share lies within ``tolerance`` or three standard errors of the mass (the larger).

    A draw belongs to the mode whose region's Gaussian (its source-parameter marginal), times the
    mode's mass, is the most probable there (:meth:`hepflow.cosmic.modes.ModeWeights.region_of`,
    the rule the masses were counted by). The share of draws outside every mode's ellipsoid of
    twice the ``1 - 1e-4`` radius is reported as ``elsewhere``, for information only: the
    Gaussians come from short ensemble runs that start close to the maximum and can be too
    narrow (a refined cINN within 0.05 MCMC sd of the MCMC on a hard-mode mock put 9 % there).
    """
    from scipy import stats

    weights = found.weights
    if weights is None:
        raise ValueError("mode_shares needs weighed modes (cosmic_seeds with mode_draws > 0)")
    # the unconstrained coordinates of the mode search (hepflow.cosmic.mcmc.UnconstrainedPosterior)
    z = prior.to_unconstrained(np.asarray(draws, dtype=np.float64)[:, : len(PARAMETERS)])
    run = weights.run
    k = weights.region_of(z, dims=_SOURCE_DIMS)
    d = z - weights.centres[k, :_SOURCE_DIMS]
    cov = weights.covariances[k][:, :_SOURCE_DIMS, :_SOURCE_DIMS]
    r2 = np.einsum("ni,ni->n", d, np.linalg.solve(cov, d[..., None])[..., 0])
    near = r2 <= 4.0 * stats.chi2.ppf(1 - 1e-4, _SOURCE_DIMS)
    owner = np.asarray(run)[k]
    rows, agree = [], True
    for i in np.argsort(-weights.masses, kind="stable"):
        mass, error = float(weights.masses[i]), float(weights.errors[i])
        if mass < min_mass or i not in run:  # a screened maximum (below 1e-6 of the heaviest) has no region
            continue
        share = float(np.mean(owner == i))
        error = error if np.isfinite(error) else 0.0
        ok = abs(share - mass) <= max(tolerance, 3 * error)
        agree &= ok
        theta = prior.from_unconstrained(weights.centres[run.index(i)][None, :_SOURCE_DIMS])[0]
        rows.append(
            {"gamma": float(theta[0]), "lg_rcut": float(theta[1]), "mass": mass, "error": error,
             "refined_share": share, "agrees": bool(ok)}
        )  # fmt: skip
    elsewhere = float(np.mean(~near))
    out = {"modes": rows, "elsewhere": elsewhere, "tolerance": tolerance}
    if not rows:
        return {**out, "agree": True, "verdict": f"no mode holds {min_mass:g}"}
    worst = max(
        (r for r in rows if not r["agrees"]), key=lambda r: abs(r["refined_share"] - r["mass"]), default=None
    )
    advice = "; use the importance weights (infer --importance) or the MCMC"
    if worst is not None:
        verdict = (
            f"the refined cINN's mode shares disagree with the exact masses: {worst['refined_share']:.3g} "
            f"against {worst['mass']:.3g} +- {worst['error']:.2g} at gamma {worst['gamma']:.3g}{advice}"
        )
    else:
        verdict = (
            f"the refined cINN's mode shares agree with the exact masses (within {tolerance:g} or 3 "
            "standard errors)"
        )
    return {**out, "agree": bool(agree), "verdict": verdict}


@dataclass(frozen=True, eq=False)
class ModeProposal:
    """The mode weighing's importance proposal as a density of the source parameters.

    :func:`hepflow.cosmic.modes.weigh` adapts a Student t mixture to the exact posterior in the
    prior's unconstrained coordinates, one component per weighed mode (with the nuisances: the
    joint posterior's, whose marginal in the source coordinates is again a t mixture). This is
    that mixture mapped to the 7 parameters, in the measure of :meth:`Prior.log_prob
    <hepflow.cosmic.priors.Prior.log_prob>` (the one the cINN's density is in): ``log g(theta)
    = log g_z(z) - log |d theta / d z|``. It covers every mode the weighing ran (a maximum
    screened out with a Laplace mass below 1e-6 of the heaviest's has no component), the ones
    the cINN misses included, which makes it the defensive component of the distillation
    (:func:`hepflow.posterior.distill.distill`'s ``proposal``).

    Example:
        >>> import numpy as np
        >>> from hepflow.cosmic.modes import StudentMixture
        >>> from hepflow.cosmic.priors import Prior
        >>> prior = Prior()
        >>> mix = StudentMixture(np.zeros((1, 6)), 0.1 * np.eye(6)[None], np.ones(1))
        >>> g = ModeProposal(mix, prior)
        >>> theta = g.sample(1000, rng=0)
        >>> bool(prior.in_support(theta).all()), g.log_prob(theta).shape
        (True, (1000,))
    """

    mixture: StudentMixture
    prior: Prior

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws (n, 7). A draw far out in a t tail can map to a fraction that rounds to 0
        or 1 (where :meth:`log_prob` is ``-inf``: the stick-breaking map loses it in float64),
        or to one below float32's range (where a cINN, which computes in float32, cannot
        evaluate it); such draws are drawn again, i.e. the proposal is truncated to where its
        density is representable (1e-4 of the draws of a t of scale 1.4 in every coordinate,
        centred on the simplex)."""
        gen = np.random.default_rng(rng)
        out = np.empty((0, len(PARAMETERS)))
        for _ in range(100):
            theta = self.prior.from_unconstrained(self.mixture.sample(2 * (n - len(out)) + 10, gen))
            keep = np.isfinite(self.log_prob(theta)) & np.all(theta[:, 2:].astype(np.float32) > 0, axis=1)
            out = np.concatenate([out, theta[keep]])[:n]
            if len(out) == n:
                return out
        raise ConfigError("the mode proposal's draws lie outside the prior's support")

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """The log density (n,) at ``theta`` (n, 7); ``-inf`` outside the support."""
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        out = np.full(len(theta), -np.inf)
        inside = self.prior.in_support(theta)
        if inside.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                z = self.prior.to_unconstrained(theta[inside])
                lg = self.mixture.log_prob(z) - self.prior.log_jacobian(z)
            out[inside] = np.where(np.isfinite(lg), lg, -np.inf)
        return out


def _covered(density: Any, weights: Any, region: Any, rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    """The share of each weighed mode (heaviest first) inside ``region``: of ``n`` draws of the
    Gaussian of its region's ensemble run (:class:`~hepflow.cosmic.modes.ModeWeights`), mapped to
    the source parameters (NaN for a mode too light to have been run)."""
    shares = np.full(len(weights.masses), np.nan)
    run = weights.run
    for j, i in enumerate(run):
        z = rng.multivariate_normal(weights.centres[j], weights.covariances[j], size=n)
        theta = density.theta(z)[:, : len(PARAMETERS)]
        shares[i] = float(np.mean(region.contains(theta)))
    # weigh_modes lists the modes heaviest first; the regions of ``weights`` keep their own order
    return shares[np.argsort(-weights.masses, kind="stable")]


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
    regions: str | None = None,
    correct: bool = True,
    distill_steps: int = 2,
    distill_samples: int = 4000,
    distill_epochs: int = 20,
    distill_min_ess: float = 10.0,
    distill_proposal: float = 0.5,
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
        regions: each later round's region (:func:`hepflow.posterior.sequential.refine`); default
            ``"union"`` with seeds (the seeded mode and the mode its ``W`` suppresses both stay),
            ``"estimate"`` without (the regions of the documented ``--no-seeds`` runs).
        correct: with seeds, fine-tune once more on all simulations weighted by ``1 / W`` after the
            rounds (:func:`hepflow.posterior.sequential.refine`'s ``correct``): the plain loss
            overweights a seeded mode of tiny prior mass by orders of magnitude.
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
        distill_proposal: with ``seeds`` (the modes weighed), the share of every distillation
            step's draws taken from the weighing's importance proposal (:class:`ModeProposal`),
            a defensive mixture component that covers every mode the weighing ran, the ones the refined
            cINN misses or mis-weighs included (0: the refined cINN's draws alone). On two mocks
            with a second mode of 13 and 22 % of the mass, where the rounds left the refined
            cINN's share of it at 0.77 and 0.22 of the draws and the distillation without the
            proposal was refused (1.5 and 6 effective draws of 4000), it took the shares to
            within 0.03 of the exact masses (docs/refine.md).
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
    from hepflow.posterior.sequential import HighDensityRegion, refine

    model_dir, config = resolve(model_dir, config)  # "pretrained": the shipped model and its config
    cfg = load_config(config)
    out = Path(output_dir)
    if Path(model_dir).resolve() == out.resolve():
        raise ConfigError(f"refine: --output {out} is the input model; choose another directory")
    check_model_target(out / "flow", overwrite=overwrite)
    if lr is not None and not (np.isfinite(lr) and lr > 0):
        raise ConfigError(f"refine: lr must be a positive number, got {lr}")
    if not 0 <= distill_proposal < 1:
        raise ConfigError(
            f"refine: the distillation's proposal share must lie in [0, 1), got {distill_proposal}"
        )
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
    features = partial(context_from_features, binning=binning, summary=summary_kind)
    seed_points, seed_weights, seed_info, found = None, None, None, None
    if seeds:
        # the modes the amortized cINN's first region misses (module docstring)
        ctx_o = features(x_o)
        tau = HighDensityRegion.threshold_of(post.model, ctx_o, temperature=temperature, seed=seed)
        first = HighDensityRegion(post.model, ctx_o, tau, temperature=temperature)
        found = cosmic_seeds(
            obs,
            model=fwd,
            prior=prior,
            seed=seed,
            region=first,
            n_starts=cfg.mcmc.n_starts,
            n_candidates=cfg.mcmc.n_candidates,
            mode_draws=cfg.mcmc.mode_draws,
            min_mass=cfg.mcmc.min_mode_mass,
        )
        seed_info = found.info
        if progress:
            for m in seed_info["modes"]:
                mass = "" if m.get("mass") is None else f", mass {m['mass']:.3g}"
                cinn = (
                    ""
                    if m.get("in_cinn_region") is None
                    else f", {m['in_cinn_region']:.3g} in the cINN's region"
                )
                role = "seed" if m.get("seed", True) else "no seed"
                print(
                    f"mode at gamma {m['gamma']:.3g}, lg R_cut {m['lg_rcut']:.4g}{mass}{cinn}: {role}",
                    flush=True,
                )
        if len(found.points):
            seed_points, seed_weights = found.points, found.shares
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
        features=features,
        rounds=rounds,
        simulations_per_round=simulations,
        epochs=epochs,
        seeds=seed_points,
        seed_weights=None if seed_weights is None else seed_weights.tolist(),
        seed_share=seed_share,
        regions=regions or ("union" if seed_points is not None else "estimate"),
        correct=correct and seed_points is not None,
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
        defensive = None
        if distill_proposal > 0 and found is not None and found.weights is not None:
            defensive = ModeProposal(found.weights.proposal.marginal(_SOURCE_DIMS), prior)
        model, distillation = _distill(
            result.posterior,
            x_o,
            obs,
            model=fwd,
            prior=prior,
            proposal=defensive,
            proposal_share=distill_proposal,
            steps=distill_steps,
            samples=distill_samples,
            epochs=distill_epochs,
            min_ess=distill_min_ess,
            fit_options=fit_options,
            seed=seed,
            progress=progress,
        )
    modes = None
    if found is not None and found.weights is not None:
        # the refined cINN's share of each weighed mode against its exact mass: the verdict on the modes
        draws, _ = FlowPosterior(model, features=features).sample(4000, x_o, seed=seed)
        modes = mode_shares(found, draws[0], prior=prior, min_mass=cfg.mcmc.min_mode_mass)
        if progress:
            for m in modes["modes"]:
                print(
                    f"mode with mean gamma {m['gamma']:.3g}: exact mass {m['mass']:.3g} +- {m['error']:.2g}, "
                    f"refined cINN's share {m['refined_share']:.3g}",
                    flush=True,
                )
            print(f"modes: {modes['verdict']}", flush=True)
    wall = time.perf_counter() - t0
    refinement = {
        "observation": (name := _observation_name(observation)),
        "entry": None if name in ("auger", IN_MEMORY) else entry,
        "observation_digest": obs.digest(),
        "base_model": str(Path(model_dir)),
        **result.metadata(),
        "wall_seconds": wall,
        "seeds": seed_info,
        "modes": modes,
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
    proposal: ModeProposal | None,
    proposal_share: float,
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
            proposal=proposal,
            proposal_share=proposal_share,
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
        settings = {
            "steps_requested": steps,
            "samples": samples,
            "epochs": epochs,
            "min_ess": min_ess,
            "proposal": None
            if proposal is None
            else {"kind": type(proposal).__name__, "share": round(proposal_share * samples) / samples},
        }
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
