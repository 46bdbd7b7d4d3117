"""Closure at a likelihood mode of the Auger data: the cINN and the MCMC on mocks simulated there.

The report (``hepflow report cosmic``) gives the cINN's pulls on pseudo-experiments simulated
at the MCMC's Auger modes. A pull alone cannot tell a cINN failure from a posterior that really
lies elsewhere (a mock of one mode may be fit better by another). This script also runs the
MCMC on the same mocks and weights the cINN samples by likelihood x prior / cINN density:

* MCMC at the truth and cINN elsewhere, with an importance ESS near 1: the cINN fails there;
* both elsewhere: the mock's posterior is not at its truth, and the cINN is right.

With ``--refine N`` the first N mocks also get the cINN refined for them (``hepflow refine
cosmic`` with ``--fine-tune --no-seeds``, or with the mode search's seeds with ``--seeds``, and
its default distillation; 12-15 minutes per mock on one core): pulls, coverage and the share
of the truth's mode of the refined posteriors, next to the others.

Usage (after ``hepflow mcmc cosmic --observation auger --output runs/cosmic/mcmc_auger``)::

    OMP_NUM_THREADS=1 python benchmarks/cosmic_mode_closure.py --model models/cosmic_ensemble \\
        --mcmc-auger runs/cosmic/mcmc_auger --mode 0 --mocks 2 [--refine 2 --workdir runs/refined]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

#: seed of the mock simulation (and, + j, of mock j's cINN draws)
SEED = 1000


def mode_parameters(mcmc_dir: str | Path, mode: int, *, nuisances: bool = False) -> np.ndarray:
    """The 7 parameters of likelihood mode ``mode`` listed in an MCMC run's ``summary.json``;
    with ``nuisances`` the 9 with ``nu_E, nu_X`` (the MCMC must have sampled them)."""
    from hepflow.cosmic.config import PARAMETERS
    from hepflow.errors import InputError

    path = Path(mcmc_dir) / "summary.json"
    try:
        modes = json.loads(path.read_text())["modes"]
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path}: no MCMC summary with modes ({err})") from err
    if not 0 <= mode < len(modes):
        raise InputError(f"{path} lists {len(modes)} modes; there is no mode {mode}")
    names = (*PARAMETERS, "nu_E", "nu_X") if nuisances else PARAMETERS
    missing = [n for n in names if n not in modes[mode]]
    if missing:
        raise InputError(f"{path}: mode {mode} has no {', '.join(missing)} (an MCMC without --systematics?)")
    return np.array([float(modes[mode][p]) for p in names])


def simulate_mocks(fwd: Any, theta: np.ndarray, mocks: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``mocks`` pseudo-experiments at ``theta`` (their truth, repeated, and the simulation):
    the same for the closure, the densities and the refinements of a run."""
    truth = np.repeat(np.asarray(theta, float)[None, :], mocks, axis=0)
    return truth, fwd.simulate(truth, np.random.default_rng(seed))


def closure(
    model_dir: str | Path,
    theta: np.ndarray,
    *,
    mocks: int = 2,
    samples: int = 4000,
    seed: int = SEED,
    config: Any = None,
    mcmc_options: dict[str, Any] | None = None,
    done: list[dict[str, Any]] | None = None,
    on_row: Any = None,
) -> list[dict[str, Any]]:
    """cINN, importance-weighted cINN and MCMC on ``mocks`` pseudo-experiments simulated at ``theta``
    ((7,), or (9,) with the nuisances when the config has ``[systematics]``).

    The mocks are fixed by ``theta``, ``mocks`` and ``seed`` together, so a run can resume: rows
    in ``done`` (from an earlier run with the same three) are kept and their mocks not run again;
    ``on_row`` is called with all rows so far after every new mock (to write them)."""
    from hepflow.cosmic import Likelihood, Observation
    from hepflow.cosmic.config import PARAMETERS, load_config
    from hepflow.cosmic.mcmc import run_mcmc
    from hepflow.cosmic.posterior import importance_reweight, load_posterior
    from hepflow.errors import ConfigError

    cfg = load_config(config)
    fwd, prior = cfg.model.build(systematics=cfg.systematics.build()), cfg.prior.build()
    width = len(PARAMETERS) + (2 if fwd.systematics is not None else 0)
    if np.shape(theta) != (width,):
        raise ConfigError(
            f"the mode must have {width} values for this config's [systematics], got {np.shape(theta)}"
        )
    posterior = load_posterior(model_dir, config=cfg)
    truth, sims = simulate_mocks(fwd, theta, mocks, seed)
    rows = sorted(done or [], key=lambda r: r["mock"])
    finished = {r["mock"] for r in rows}
    for j in range(mocks):
        if j in finished:
            continue
        obs = Observation(fwd.binning, sims["spectrum"][j], sims["xmax"][j])
        x, log_q = posterior.sample(samples, obs, seed=seed + j, log_prob=True)
        weights = importance_reweight(x[0], log_q[0], obs, model=fwd, prior=prior)
        like = Likelihood(obs, model=fwd)
        options = {**cfg.mcmc.options(), **(mcmc_options or {})}
        res = run_mcmc(obs, seed=cfg.mcmc.seed + j, model=fwd, prior=prior, progress=False, **options)
        mc = np.stack([np.asarray(res.samples[p], float) for p in PARAMETERS], axis=1)
        rows.append(
            {
                "mock": j,
                "truth": dict(zip(PARAMETERS, truth[j, : len(PARAMETERS)].tolist(), strict=True)),
                "truth_nuisances": truth[j, len(PARAMETERS) :].tolist(),
                "log_likelihood_truth": float(like(truth[j : j + 1])[0]),
                "cinn_inside_68": _inside(x[0], truth[j, : len(PARAMETERS)], 0.68),
                "cinn_inside_95": _inside(x[0], truth[j, : len(PARAMETERS)], 0.95),
                "mcmc_inside_68": _inside(mc, truth[j, : len(PARAMETERS)], 0.68),
                "mcmc_inside_95": _inside(mc, truth[j, : len(PARAMETERS)], 0.95),
                "cinn_mean": dict(zip(PARAMETERS, x[0].mean(0).tolist(), strict=True)),
                "cinn_std": dict(zip(PARAMETERS, x[0].std(0, ddof=1).tolist(), strict=True)),
                # with systematics at nu = 0 (the cINN has no nuisance draws)
                "cinn_best_log_likelihood": float(like(x[0]).max()),
                "importance_ess": weights.ess,
                "mcmc_mean": dict(zip(PARAMETERS, mc.mean(0).tolist(), strict=True)),
                "mcmc_std": dict(zip(PARAMETERS, mc.std(0, ddof=1).tolist(), strict=True)),
                "mcmc_converged": bool(res.converged),
                "mcmc_modes": [
                    {
                        "gamma": float(m.theta[0]),
                        "deviance": float(m.deviance),
                        "mass": m.mass,
                        "sampled": i in res.sampled_modes,
                    }
                    for i, m in enumerate(res.modes)
                ],
                **at_truth_mode(res.modes, truth[j, 0], x[0][:, 0], weights.weights),
            }
        )
        if on_row is not None:
            on_row(rows)
    return rows


def at_truth_mode(modes: Any, gamma_true: float, gamma: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """The posterior mass in the mode of the truth (the mode whose maximum is nearest the truth in
    gamma): the exact one (the MCMC's weighed modes; 1 when a single mode was found), and the
    cINN's share of draws nearest that maximum, plain and importance-weighted. Where the exact
    posterior puts little mass in the truth's mode, the truth lies many posterior widths from its
    mean for *any* correct method, and a pull says nothing about the method."""
    centres = np.array([m.theta[0] for m in modes])
    mine = int(np.argmin(np.abs(centres - gamma_true)))
    nearest = np.argmin(np.abs(gamma[:, None] - centres[None, :]), axis=1) == mine
    exact = 1.0 if len(modes) == 1 else modes[mine].mass
    return {
        "mcmc_mass_at_truth": None if exact is None else float(exact),
        "cinn_mass_at_truth": float(np.mean(nearest)),
        "importance_mass_at_truth": float(np.sum(weights[nearest])),
    }


def likelihoods_at(
    rows: list[dict[str, Any]], theta: np.ndarray, *, mocks: int, seed: int = SEED, config: Any = None
) -> list[dict[str, float]]:
    """Per mock row, the log posterior density (up to a constant) at the truth, at the MCMC's mean
    and at the cINN's mean: ``log p(x | theta) + log pi(theta)``, the likelihood marginalised over
    the nuisances when the config has ``[systematics]`` (the fractions of a mean projected onto
    the simplex). Where the truth is no more probable than the mean both methods found, the data
    do not single it out, and a posterior centred away from it is no failure of the method.

    The mocks are simulated again exactly as :func:`closure` did (same ``theta``, ``mocks``,
    ``seed``)."""
    from hepflow.cosmic import Observation
    from hepflow.cosmic.config import PARAMETERS, load_config
    from hepflow.cosmic.posterior import log_target

    cfg = load_config(config)
    fwd, prior = cfg.model.build(systematics=cfg.systematics.build()), cfg.prior.build()
    _truth, sims = simulate_mocks(fwd, theta, mocks, seed)
    out = []
    for r in rows:
        j = r["mock"]
        obs = Observation(fwd.binning, sims["spectrum"][j], sims["xmax"][j])
        points = np.array(
            [
                [r["truth"][p] for p in PARAMETERS],
                [r["mcmc_mean"][p] for p in PARAMETERS],
                [r["cinn_mean"][p] for p in PARAMETERS],
            ]
        )
        fractions = np.clip(points[:, 2:], 1e-12, None)
        points[:, 2:] = fractions / fractions.sum(axis=1, keepdims=True)
        logp = log_target(points, obs, model=fwd, prior=prior)
        out.append(
            {"mock": j, "truth": float(logp[0]), "mcmc_mean": float(logp[1]), "cinn_mean": float(logp[2])}
        )
    return out


def refine_rows(
    rows: list[dict[str, Any]],
    theta: np.ndarray,
    model_dir: str | Path,
    *,
    mocks: int,
    refine: int,
    workdir: str | Path,
    samples: int = 4000,
    seed: int = SEED,
    config: Any = None,
    refine_options: dict[str, Any] | None = None,
    on_row: Any = None,
) -> list[dict[str, Any]]:
    """Add the refined posterior to the first ``refine`` rows that lack it: the model refined for
    the mock (:func:`hepflow.cosmic.refine.refine_model`, fine-tuned, without seeds, with its
    default distillation unless ``refine_options`` say otherwise; saved under ``workdir``), its
    mean, width, whether the truth lies in its central 68 % / 95 % intervals, its share of draws
    in the truth's mode (plain and importance-weighted, against the MCMC's modes), the
    distillation's final importance efficiency and the wall time. ``on_row`` is called with all
    rows after each. Rows refined with the other ``seeds`` setting are refused, not mixed."""
    import time

    from hepflow.cosmic import Observation
    from hepflow.cosmic.config import PARAMETERS, load_config
    from hepflow.cosmic.posterior import importance_reweight, load_posterior
    from hepflow.cosmic.refine import refine_model
    from hepflow.errors import InputError

    cfg = load_config(config)
    fwd = cfg.model.build(systematics=cfg.systematics.build())
    truth, sims = simulate_mocks(fwd, theta, mocks, seed)
    options = {"fine_tune": True, "seeds": False, "progress": False, **(refine_options or {})}
    for r in sorted(rows, key=lambda r: r["mock"])[:refine]:
        if "refined_mean" in r:
            if r.get("refined_with_seeds", False) != options["seeds"]:
                raise InputError(
                    f"mock {r['mock']} was refined {'with' if r.get('refined_with_seeds') else 'without'} "
                    "seeds: give the same --seeds option, or another --output"
                )
            continue
        j = r["mock"]
        obs = Observation(fwd.binning, sims["spectrum"][j], sims["xmax"][j])
        t0 = time.perf_counter()
        out = Path(workdir) / f"mock_{j:03d}"
        summary = refine_model(model_dir, obs, output_dir=out, config=cfg, overwrite=True, **options)
        x, log_q = load_posterior(out, config=cfg).sample(samples, obs, seed=seed + 500 + j, log_prob=True)
        weights = importance_reweight(x[0], log_q[0], obs, model=fwd, prior=cfg.prior.build())
        true = truth[j, : len(PARAMETERS)]
        distillation = summary.get("distillation") or {}
        if r.get("mcmc_modes"):
            modes = [
                SimpleNamespace(theta=np.array([m["gamma"]]), mass=m.get("mass")) for m in r["mcmc_modes"]
            ]
            at = at_truth_mode(modes, true[0], x[0][:, 0], weights.weights)
            r.update(refined_mass_at_truth=at["cinn_mass_at_truth"])
            r.update(refined_weighted_mass_at_truth=at["importance_mass_at_truth"])
        r.update(
            refined_with_seeds=bool(options["seeds"]),
            refined_importance_ess=weights.ess,
            refined_mean=dict(zip(PARAMETERS, x[0].mean(0).tolist(), strict=True)),
            refined_std=dict(zip(PARAMETERS, x[0].std(0, ddof=1).tolist(), strict=True)),
            refined_inside_68=_inside(x[0], true, 0.68),
            refined_inside_95=_inside(x[0], true, 0.95),
            refined_efficiency=distillation.get("efficiency_after"),
            # the product's own verdict on the mode shares (refine_model with seeds and masses)
            refined_modes_agree=(summary.get("modes") or {}).get("agree"),
            refined_seconds=time.perf_counter() - t0,
        )
        if on_row is not None:
            on_row(rows)
    return rows


def _inside(draws: np.ndarray, truth: np.ndarray, level: float) -> dict[str, bool]:
    """Per parameter: the truth inside the central ``level`` interval of the draws (the
    calibration library's :func:`~hepflow.calibration.coverage.coverage_at` of one observation)."""
    from hepflow.calibration.coverage import coverage_at
    from hepflow.cosmic.config import PARAMETERS

    inside = coverage_at(truth[None], draws[None], levels=(level,))[level]
    return {p: bool(inside[i]) for i, p in enumerate(PARAMETERS)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pulls of gamma and lg_rcut per method (median and largest |pull| over the mocks) and the
    fraction of mocks x parameters whose truth lies in the central 68 % / 95 % intervals."""
    out: dict[str, Any] = {}
    for method in ("cinn", "mcmc", "refined"):
        done = [r for r in rows if f"{method}_mean" in r]
        if not done:
            continue
        pulls = {
            p: [(r[f"{method}_mean"][p] - r["truth"][p]) / r[f"{method}_std"][p] for r in done]
            for p in ("gamma", "lg_rcut")
        }
        out[method] = {
            "mocks": len(done),
            "pull_median": {p: float(np.median(v)) for p, v in pulls.items()},
            "pull_max_abs": {p: float(np.max(np.abs(v))) for p, v in pulls.items()},
            "coverage_68": float(np.mean([v for r in done for v in r[f"{method}_inside_68"].values()])),
            "coverage_95": float(np.mean([v for r in done for v in r[f"{method}_inside_95"].values()])),
        }
    weighed = [r for r in rows if r.get("mcmc_mass_at_truth") is not None]
    if weighed:
        out["mass_at_truth"] = {
            key: [r[f"{key}_mass_at_truth"] for r in weighed] for key in ("mcmc", "cinn", "importance")
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mcmc-auger", type=Path, required=True, help="an MCMC run on the data (its modes)")
    parser.add_argument("--mode", type=int, default=0, help="which listed mode (0: the deepest)")
    parser.add_argument("--mocks", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the rows as JSON after every mock; a rerun with the same file resumes",
    )
    parser.add_argument("--refine", type=int, default=0, help="refine the cINN for the first N mocks")
    parser.add_argument(
        "--seeds",
        action="store_true",
        help="refine with the mode search's seeds (hepflow refine's default; without: --no-seeds)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("refined_mocks"), help="where the refined models go"
    )
    args = parser.parse_args()
    from hepflow.cosmic.config import load_config
    from hepflow.errors import InputError
    from hepflow.outputs import write_json

    nuisances = load_config(args.config).systematics.enabled
    theta = mode_parameters(args.mcmc_auger, args.mode, nuisances=nuisances)
    # the mocks depend on all of these (the simulator draws every spectrum before any Xmax
    # histogram, so even --mocks changes them): a resumed run must repeat them exactly
    settings = {
        "model": str(args.model),
        "config": None if args.config is None else str(args.config),
        "mode": args.mode,
        "mocks": args.mocks,
        "samples": args.samples,
        "seed": SEED,
        # the MCMC samples every mode by its mass (hepflow.cosmic.modes); rows of the MCMC that
        # sampled the highest maximum only are not mixed in
        "mcmc": "modes weighed",
    }
    done: list[dict[str, Any]] = []
    if args.output is not None and args.output.exists():
        try:
            earlier = json.loads(args.output.read_text())
            same = earlier["settings"] == settings and np.allclose(earlier["theta"], theta)
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(
                f"{args.output}: not the output of this script ({err}); give another --output"
            ) from err
        if not same:
            raise InputError(
                f"{args.output} holds mocks of another run ({earlier['settings']}); repeat its options "
                "to resume, or give another --output"
            )
        done = earlier["rows"]
        print(f"resuming: {len(done)} of {args.mocks} mocks already in {args.output}")

    def write(rows: list[dict[str, Any]]) -> None:
        if args.output is not None:
            payload = {"mode": args.mode, "settings": settings, "theta": theta.tolist(), "rows": rows}
            write_json(args.output, {**payload, "summary": summarize(rows)})

    rows = closure(
        args.model,
        theta,
        mocks=args.mocks,
        samples=args.samples,
        seed=SEED,
        config=args.config,
        done=done,
        on_row=write,
    )
    print(
        f"mode {args.mode}: gamma {theta[0]:.2f}, lg_rcut {theta[1]:.2f}, fractions {np.round(theta[2:], 4)}"
    )
    print(
        "mock  lnL(truth)  cINN gamma      lg_rcut   best lnL  ESS     MCMC gamma      lg_rcut  converged"
        "  mass in the truth's mode: exact  cINN  cINN weighted"
    )
    for r in rows:
        c, cs, m, ms = r["cinn_mean"], r["cinn_std"], r["mcmc_mean"], r["mcmc_std"]
        exact = r.get("mcmc_mass_at_truth")
        print(
            f"{r['mock']:>4}  {r['log_likelihood_truth']:>10.1f}  "
            f"{c['gamma']:>5.2f} +- {cs['gamma']:.2f}  {c['lg_rcut']:>6.2f}  "
            f"{r['cinn_best_log_likelihood']:>8.1f}  {r['importance_ess']:>6.1f}  "
            f"{m['gamma']:>5.2f} +- {ms['gamma']:.2f}  {m['lg_rcut']:>6.2f}  {r['mcmc_converged']!s:>9}"
            f"  {'-' if exact is None else f'{exact:.3f}':>33}  {r['cinn_mass_at_truth']:.3f}"
            f"  {r['importance_mass_at_truth']:.3f}"
        )
    if args.refine:
        rows = refine_rows(
            rows,
            theta,
            args.model,
            mocks=args.mocks,
            refine=args.refine,
            workdir=args.workdir,
            samples=args.samples,
            config=args.config,
            refine_options={"seeds": args.seeds},
            on_row=write,
        )
    dens = likelihoods_at(rows, theta, mocks=args.mocks, config=args.config)
    print("log posterior density (marginal likelihood x prior): truth, MCMC mean, cINN mean")
    for d in dens:
        print(f"{d['mock']:>4}  {d['truth']:>8.1f}  {d['mcmc_mean']:>8.1f}  {d['cinn_mean']:>8.1f}")
    summary = summarize(rows)
    mass = summary.pop("mass_at_truth", None)
    if mass is not None:
        light = sum(m < 0.5 for m in mass["mcmc"])
        print(
            f"the exact posterior's mass in the truth's mode (MCMC, modes weighed): median "
            f"{np.median(mass['mcmc']):.3f}, range {min(mass['mcmc']):.3g} to {max(mass['mcmc']):.3g}; "
            f"below one half in {light} of {len(mass['mcmc'])} mocks, where a correct posterior's mean lies "
            "in another mode and its pulls cannot be within 2"
        )
    refined = [r for r in rows if "refined_mass_at_truth" in r]
    for r in refined:
        seeds = "with" if r["refined_with_seeds"] else "without"
        print(
            f"mock {r['mock']}: mass in the truth's mode: exact {r['mcmc_mass_at_truth']:.3f}, refined "
            f"cINN {r['refined_mass_at_truth']:.3f}, weighted {r['refined_weighted_mass_at_truth']:.3f} "
            f"(importance ESS {r['refined_importance_ess']:.0f}; refined {seeds} seeds)"
            + {
                True: "; refine's verdict: mode shares agree",
                False: "; refine's verdict: mode shares disagree",
            }.get(r.get("refined_modes_agree"), "")
        )
    for method, v in summary.items():
        print(
            f"{method}: pulls gamma median {v['pull_median']['gamma']:+.2f} (largest |pull| "
            f"{v['pull_max_abs']['gamma']:.2f}), lg_rcut median {v['pull_median']['lg_rcut']:+.2f} "
            f"(largest {v['pull_max_abs']['lg_rcut']:.2f}); truth inside the central 68 % / 95 % "
            f"intervals: {v['coverage_68']:.2f} / {v['coverage_95']:.2f} of mocks x parameters"
        )
    write(rows)
    if args.output is not None:
        write_json(args.output, {**json.loads(args.output.read_text()), "log_density_at": dens})


if __name__ == "__main__":
    main()
