"""cINN against the MCMC on held-out mock observations, and the cINN's calibration.

:func:`compare` (``hepflow compare cosmic``) simulates mocks from the prior, runs the MCMC of
``[mcmc]`` and the cINN on each, and measures the marginals of the cINN in units of the MCMC
posterior width (:func:`marginal_metrics`, aggregated by :func:`summarize_metrics`), with and
without importance weights, the wall-time ratio, and the calibration (SBC, coverage, TARP) on
further mocks. ``mcmc_from`` reuses the MCMC runs of an earlier comparison, checked mock by mock.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.config import to_dict
from hepflow.cosmic.config import PARAMETERS, CosmicConfig, load_config
from hepflow.cosmic.data import parameter_columns
from hepflow.cosmic.mcmc import check_mcmc_systematics
from hepflow.cosmic.observation import Observation
from hepflow.cosmic.posterior import importance_reweight, load_posterior
from hepflow.cosmic.systematics import NUISANCE_NAMES
from hepflow.errors import InputError, ModelError, OutputError
from hepflow.posterior import model_path

__all__ = ["compare", "marginal_metrics", "simulate_mocks", "summarize_metrics"]


def marginal_metrics(
    cinn: np.ndarray, mcmc: np.ndarray, names: Sequence[str] = PARAMETERS
) -> dict[str, dict[str, float]]:
    """Per parameter, cINN vs MCMC marginals in units of the MCMC posterior sigma.

    ``cinn`` (n, d) and ``mcmc`` (m, d) samples of one observation. Returns ``{name: {"mean_shift":
    (mean_c - mean_m) / sd_m, "width_ratio": sd_c / sd_m, "wasserstein": W1(c, m) / sd_m,
    "mcmc_mean", "mcmc_std", "cinn_mean", "cinn_std"}}`` (``scipy.stats.wasserstein_distance``).

    Example:
        >>> g = np.random.default_rng(0)
        >>> m = marginal_metrics(g.normal(0.5, 1, (20000, 1)), g.normal(0, 1, (20000, 1)), ["x"])
        >>> round(m["x"]["mean_shift"], 1), round(m["x"]["wasserstein"], 1), round(m["x"]["width_ratio"], 1)
        (0.5, 0.5, 1.0)
    """
    from scipy.stats import wasserstein_distance

    c, m = np.asarray(cinn, float), np.asarray(mcmc, float)
    if c.ndim != 2 or m.ndim != 2 or c.shape[1] != m.shape[1] or c.shape[1] != len(names):
        d = len(names)
        raise InputError(f"samples must be (n, {d}) and (m, {d}), got {c.shape} and {m.shape}")
    out = {}
    for j, name in enumerate(names):
        sd_m, sd_c = float(m[:, j].std(ddof=1)), float(c[:, j].std(ddof=1))
        scale = sd_m if sd_m > 0 else float("nan")
        out[name] = {
            "mean_shift": float((c[:, j].mean() - m[:, j].mean()) / scale),
            "width_ratio": sd_c / scale,
            "wasserstein": float(wasserstein_distance(c[:, j], m[:, j]) / scale),
            "mcmc_mean": float(m[:, j].mean()),
            "mcmc_std": sd_m,
            "cinn_mean": float(c[:, j].mean()),
            "cinn_std": sd_c,
        }
    return out


def summarize_metrics(
    per_mock: Sequence[Mapping[str, Mapping[str, float]]],
    names: Sequence[str] = PARAMETERS,
    *,
    mean_tol: float = 0.2,
    width_tol: float = 0.2,
) -> dict[str, Any]:
    """Aggregate :func:`marginal_metrics` over mocks: per parameter and over all (median, mean, 90 %
    quantile of ``|mean_shift|``, ``|width_ratio - 1|``, ``wasserstein``; fractions within the targets).

    Example:
        >>> per = [{"x": {"mean_shift": s, "width_ratio": 1.1, "wasserstein": abs(s)}} for s in (0.1, -0.3)]
        >>> s = summarize_metrics(per, ["x"])
        >>> s["x"]["abs_mean_shift"]["median"], s["x"]["mean_within_tol"], s["all"]["width_within_tol"]
        (0.2, 0.5, 1.0)
    """

    def stats(v: np.ndarray) -> dict[str, float]:
        v = v[np.isfinite(v)]
        if not v.size:
            return {"median": float("nan"), "mean": float("nan"), "q90": float("nan"), "n": 0}
        return {
            "median": float(np.median(v)),
            "mean": float(v.mean()),
            "q90": float(np.quantile(v, 0.9)),
            "n": int(v.size),
        }

    def block(keys: Sequence[str]) -> dict[str, Any]:
        shift = np.array([abs(p[k]["mean_shift"]) for p in per_mock for k in keys], float)
        width = np.array([p[k]["width_ratio"] for p in per_mock for k in keys], float)
        w1 = np.array([p[k]["wasserstein"] for p in per_mock for k in keys], float)
        dev = np.abs(width - 1.0)
        return {
            "abs_mean_shift": stats(shift),
            "width_ratio": stats(width),
            "abs_width_deviation": stats(dev),
            "wasserstein": stats(w1),
            "mean_within_tol": _fraction(shift <= mean_tol, shift),
            "width_within_tol": _fraction(dev <= width_tol, dev),
        }

    out: dict[str, Any] = {name: block([name]) for name in names}
    out["all"] = block(list(names))
    out["targets"] = {"abs_mean_shift": mean_tol, "abs_width_deviation": width_tol}
    return out


def _fraction(passed: np.ndarray, values: np.ndarray) -> float:
    finite = np.isfinite(values)
    return float(np.mean(passed[finite])) if finite.any() else float("nan")


def simulate_mocks(
    cfg: CosmicConfig, n: int, seed: int, *, stream: int
) -> tuple[np.ndarray, list[Observation]]:
    """``n`` held-out mock observations: prior draws and pseudo-experiments from ``seed``.

    Returns the true parameters (n, 7), or (n, 9) with ``[systematics]``: the nuisances
    ``nu_E, nu_X`` drawn from their priors too, as the training pseudo-experiments were.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))
    syst = cfg.systematics.build()
    prior, model = cfg.prior.build(), cfg.model.build(systematics=syst)
    theta = prior.sample(n, rng)
    if syst is not None:
        theta = np.concatenate([theta, syst.sample(n, rng)], axis=1)
    sims = model.simulate(theta, rng) if n else {"spectrum": np.zeros((0,)), "xmax": np.zeros((0,))}
    obs = [Observation(model.binning, sims["spectrum"][i], sims["xmax"][i]) for i in range(n)]
    return theta, obs


_MCMC_ROW_KEYS = (
    "mcmc_seconds",
    "mcmc_converged",
    "mcmc_steps",
    "mcmc_samples",
    "mcmc_modes",
    "mcmc_deviance_gap_to_second_mode",
)


class _ReusedMcmc:
    """The MCMC runs of an earlier :func:`compare` output, checked against the mocks of this one."""

    def __init__(self, directory: Path, cfg: CosmicConfig, mocks: Sequence[Observation]) -> None:
        source = directory / "comparison.json"
        try:
            saved = json.loads(source.read_text())
        except FileNotFoundError:
            raise InputError(f"{source}: not found (not a `hepflow compare cosmic` output)") from None
        except (OSError, ValueError) as err:
            raise InputError(f"{source}: unreadable ({err})") from None
        settings = to_dict(cfg.mcmc)
        old = saved.get("settings", {}).get("mcmc")
        if old != settings:
            diff = sorted(k for k in set(settings) | set(old or {}) if (old or {}).get(k) != settings.get(k))
            raise InputError(f"{source}: MCMC settings differ from the config's [mcmc] ({', '.join(diff)})")
        check_mcmc_systematics(
            source,
            saved.get("settings", {}).get("systematics"),
            cfg.systematics.metadata(),
            against="the config has",
            remedy="compare without --mcmc-from",
        )
        rows = {r.get("index"): r for r in saved.get("mocks", [])}
        if len(rows) != len(mocks):
            # the mocks are drawn together: another number of mocks gives other mocks
            raise InputError(f"{source}: has {len(rows)} mocks; this comparison needs {len(mocks)}")
        self.rows: list[dict[str, Any]] = []
        for i, obs in enumerate(mocks):
            row = rows.get(i)
            if row is None:
                raise InputError(f"{source}: has no mock {i}")
            if row.get("observation_sha256") != obs.digest():
                raise InputError(
                    f"{source}: mock {i} is not the same observation (other [comparison] seed, prior or "
                    "forward model, or a comparison written before observation digests were recorded)"
                )
            missing = [k for k in _MCMC_ROW_KEYS if k not in row]
            if missing:
                raise InputError(f"{source}: mock {i} lacks {', '.join(missing)}")
            self.rows.append({k: row[k] for k in _MCMC_ROW_KEYS})
        self.directory = directory

    def mock(self, i: int) -> tuple[ak.Array, np.ndarray, dict[str, Any]]:
        """Samples (table and (n, 7) parameters) and the MCMC fields of mock ``i``."""
        path = self.directory / "mcmc" / f"mock_{i:03d}.parquet"
        try:
            samples = ak.from_parquet(path)
        except FileNotFoundError:
            raise InputError(f"{path}: not found") from None
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise InputError(f"{path}: unreadable parquet ({type(err).__name__}: {err})") from None
        expected = self.rows[i]["mcmc_samples"]
        if len(samples) != expected:
            raise InputError(f"{path}: not the saved MCMC run ({len(samples)} rows instead of {expected})")
        return samples, parameter_columns(samples, path), dict(self.rows[i])


def compare(
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    n_mocks: int | None = None,
    n_calibration: int | None = None,
    mcmc_from: str | os.PathLike[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``hepflow compare cosmic``: cINN vs MCMC on held-out mocks, and cINN calibration.

    1. ``n_mocks`` (``[comparison]``) mock observations with parameters from the prior (seed
       ``[comparison] seed``, independent of the training set): the MCMC of ``[mcmc]`` (emcee,
       :func:`hepflow.cosmic.mcmc.run_mcmc`, seed ``[mcmc] seed + i``) and the cINN (``[comparison]
       samples`` samples, timed from loading the model to the samples) on each;
       :func:`marginal_metrics` per mock and :func:`summarize_metrics` over them (also over the
       mocks whose MCMC converged only: ``summary_mcmc_converged``), and the
       wall-time ratio MCMC / cINN. The MCMC samples of mock ``i`` go to ``mcmc/mock_{i:03d}.parquet``.
       The same cINN samples importance-weighted with the likelihood (:func:`importance_reweight`,
       resampled) give ``summary_importance``; ``importance`` has their sampling efficiency
       (ESS / n) and the time ratio with the likelihood calls counted.
    2. ``n_calibration`` further mocks, cINN only (``calibration_samples`` each): SBC ranks,
       coverage at 68 / 95 %, TARP (:func:`hepflow.calibration.calibration_report`) with plots.

    ``mcmc_from``: the output directory of an earlier comparison whose MCMC runs are reused
    instead of run again (their samples, wall times and diagnostics), e.g. to compare several
    trained models against one reference. It must hold the same mocks (checked per mock by
    :meth:`~hepflow.cosmic.Observation.digest`) sampled with the same ``[mcmc]`` settings;
    anything else is refused with the first difference named.

    Writes ``comparison.json`` (everything, also returned) and the calibration plots. The MCMC
    samples every mode it finds that holds at least ``[mcmc] min_mode_mass`` of the posterior
    mass, in proportion to the masses (:mod:`hepflow.cosmic.modes`); the number of modes found
    and the deviance of the second listed minus that of the first (the heaviest) are recorded
    per mock.
    """
    from hepflow.calibration import calibration_report
    from hepflow.cosmic.mcmc import run_mcmc
    from hepflow.cosmic.pretrained import resolve
    from hepflow.outputs import write_json, write_parquet

    model_dir, config = resolve(model_dir, config)  # "pretrained": the shipped model and its config
    cfg = load_config(config)
    cc = cfg.comparison
    n_mocks = cc.n_mocks if n_mocks is None else int(n_mocks)
    n_cal = cc.n_calibration if n_calibration is None else int(n_calibration)
    out = Path(output_dir)
    target = out / "comparison.json"
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass --overwrite to replace it")
    checked = load_posterior(model_dir, config=cfg)  # refuse a mismatching model before any MCMC runs
    if checked.metadata.get("refinement"):
        raise ModelError(
            f"{model_dir} was refined for the observation "
            f"{checked.metadata['refinement'].get('observation')}: "
            "it is no amortized posterior to compare on mocks; compare the model it was refined from"
        )
    # with [systematics] the MCMC samples the nuisances and the importance weights use the
    # likelihood marginalised over them (hepflow.cosmic.marginal)
    prior, fwd = cfg.prior.build(), cfg.model.build(systematics=cfg.systematics.build())

    truth, mocks = simulate_mocks(cfg, n_mocks, cc.seed, stream=0)
    theta_true, nu_true = truth[:, : len(PARAMETERS)], truth[:, len(PARAMETERS) :]  # nu: (n, 0) when off
    reused = _ReusedMcmc(Path(mcmc_from), cfg, mocks) if mcmc_from is not None else None
    per_mock, per_mock_is, rows = [], [], []
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    post = load_posterior(model_dir)  # once, as the MCMC's forward model is built once above
    t_load = time.perf_counter() - t0
    for i in tqdm(range(n_mocks), desc="mocks (MCMC + cINN)", disable=not progress):
        obs = mocks[i]
        t0 = time.perf_counter()
        x, log_q = post.sample(cc.samples, obs, seed=cc.seed + i, log_prob=False)
        t_cinn = time.perf_counter() - t0  # time to the posterior samples
        t0 = time.perf_counter()
        if log_q is None:  # the cINN density is needed for the weights only
            log_q = post.log_prob(x, obs)
        iw = importance_reweight(x[0], log_q[0], obs, model=fwd, prior=prior)
        t_is = time.perf_counter() - t0
        if reused is not None:
            samples, mc, mcmc_row = reused.mock(i)
        else:
            res = run_mcmc(
                obs,
                seed=cfg.mcmc.seed + i,
                model=fwd,
                prior=prior,
                progress=False,
                **cfg.mcmc.options(),
            )
            samples, mc = res.samples, res.theta()
            gap = res.modes[1].deviance - res.modes[0].deviance if len(res.modes) > 1 else None
            mcmc_row = {
                "mcmc_seconds": res.wall_time,
                "mcmc_converged": res.converged,
                "mcmc_steps": res.n_steps,
                "mcmc_samples": len(res.samples),
                "mcmc_modes": len(res.modes),
                "mcmc_deviance_gap_to_second_mode": gap,
            }
        write_parquet(samples, out / "mcmc" / f"mock_{i:03d}.parquet")
        metrics = marginal_metrics(x[0], mc)
        per_mock.append(metrics)
        metrics_is = marginal_metrics(x[0][iw.resample(rng=cc.seed + i)], mc)
        per_mock_is.append(metrics_is)
        rows.append(
            {
                "index": i,
                "theta_true": dict(zip(PARAMETERS, theta_true[i].tolist(), strict=True)),
                **(
                    {"nuisances_true": dict(zip(NUISANCE_NAMES, nu_true[i].tolist(), strict=True))}
                    if nu_true.size
                    else {}
                ),
                "observation_sha256": obs.digest(),
                **mcmc_row,
                "cinn_seconds": t_cinn,
                "time_ratio": mcmc_row["mcmc_seconds"] / t_cinn,
                "metrics": metrics,
                "importance": {
                    "ess": iw.ess,
                    "efficiency": iw.efficiency,
                    "seconds": t_is,
                    "metrics": metrics_is,
                },
            }
        )
    comparison: dict[str, Any] = {"n_mocks": n_mocks, "cinn_samples": cc.samples, "mocks": rows}
    if n_mocks:
        t_m = np.array([r["mcmc_seconds"] for r in rows])
        t_c = np.array([r["cinn_seconds"] for r in rows])
        comparison["summary"] = summarize_metrics(per_mock)
        # an MCMC that did not converge is no reference: the same summary over the converged ones
        converged = [m for m, r in zip(per_mock, rows, strict=True) if r["mcmc_converged"]]
        comparison["summary_mcmc_converged"] = summarize_metrics(converged) if converged else None
        # the cINN samples reweighted by likelihood x prior / cINN density (resampled)
        comparison["summary_importance"] = summarize_metrics(per_mock_is)
        eff = np.array([r["importance"]["efficiency"] for r in rows])
        t_w = np.array([r["importance"]["seconds"] for r in rows])
        comparison["importance"] = {
            "efficiency_median": float(np.median(eff)),
            "efficiency_min": float(eff.min()),
            "seconds_median": float(np.median(t_w)),
            "time_ratio_median": float(np.median(t_m / (t_c + t_w))),
            "note": "cINN samples with weights L pi / q (hepflow.cosmic.posterior.importance_reweight), "
            "resampled to unweighted draws for the metrics; time = cINN + likelihood at every sample",
        }
        comparison["timing"] = {
            "mcmc_seconds_median": float(np.median(t_m)),
            "mcmc_seconds_total": float(t_m.sum()),
            "cinn_seconds_median": float(np.median(t_c)),
            "cinn_model_load_seconds": t_load,
            "time_ratio_median": float(np.median(t_m / t_c)),
            "time_ratio_of_totals": float(t_m.sum() / t_c.sum()),
            "time_ratio_median_with_model_load": float(np.median(t_m / (t_c + t_load))),
            "note": "cINN time per mock: features + sampling with the model loaded once (as the MCMC's "
            "forward model is built once); the load is listed separately and counted on every mock "
            "in time_ratio_median_with_model_load. MCMC: run_mcmc wall time incl. the mode search; "
            "same machine, sequential",
        }
        comparison["mcmc_converged_fraction"] = float(np.mean([r["mcmc_converged"] for r in rows]))

    # calibration on further mocks (cINN only)
    calibration: dict[str, Any] | None = None
    if n_cal:
        truth_cal, cal_obs = simulate_mocks(cfg, n_cal, cc.seed, stream=1)
        theta_cal = truth_cal[:, : len(PARAMETERS)]
        post = load_posterior(model_dir)
        t0 = time.perf_counter()
        xs, _ = post.sample(cc.calibration_samples, cal_obs, seed=cc.seed + 10_000, log_prob=False)
        t_cal = time.perf_counter() - t0
        calibration = calibration_report(theta_cal, xs, list(PARAMETERS), plot_dir=out)
        calibration["sampling_seconds"] = t_cal
        cov, calibrated = calibration["coverage"], calibration["coverage_target"]
        # against what a calibrated posterior covers with calibration_samples draws, not the level
        calibration["max_coverage_deviation"] = {
            level: float(max(abs(v - calibrated[level]) for v in cov[level].values())) for level in cov
        }
    comparison["calibration"] = calibration
    comparison["settings"] = {
        "comparison": to_dict(cc),
        "mcmc": to_dict(cfg.mcmc),
        "systematics": cfg.systematics.metadata(),
        "model": str(model_path(model_dir)),
        "mock_parameters": "drawn from the prior (with [systematics] the nuisances from theirs); mocks "
        "simulated with the config's forward model",
        "mcmc_from": None if mcmc_from is None else str(mcmc_from),
    }
    write_json(target, comparison)
    return comparison
