"""The cosmic steps that train and apply the cINN: ``hepflow train|infer cosmic``.

:func:`train` fits the analysis cINN (:func:`hepflow.cosmic.network.build_flow`) on
pseudo-experiments with the shared :func:`hepflow.fit` and saves it with its metadata;
:func:`infer` writes the posterior of one observation (``"auger"`` or a file) with its summary,
and optionally its importance weights. Generation (:mod:`hepflow.cosmic.generate`), processing
(:mod:`hepflow.cosmic.processor`), the MCMC (:mod:`hepflow.cosmic.mcmc`), ensembles
(:func:`hepflow.cosmic.network.make_ensemble`), the comparison (:mod:`hepflow.cosmic.compare`)
and the report (:mod:`hepflow.cosmic.report`) are the other steps.

Example (the ``hepflow train|infer cosmic`` commands)::

    train("data/cosmic/pe_train.root", "models/cosmic")          # the shipped config
    infer("models/cosmic", "auger", output_dir="runs/cosmic/infer_auger", samples=4000)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.config import json_plain, to_dict
from hepflow.cosmic.config import PARAMETERS, CosmicConfig, load_config
from hepflow.cosmic.data import load_training_data
from hepflow.cosmic.features import context_from_features
from hepflow.cosmic.network import build_flow, load_flow, model_metadata
from hepflow.cosmic.posterior import check_finite, check_observation, importance_posterior, load_posterior
from hepflow.cosmic.systematics import Systematics
from hepflow.errors import ConfigError, InputError, ModelError, OutputError
from hepflow.posterior import is_ensemble, model_path

__all__ = ["infer", "posterior_table", "train"]


def train(
    data: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    progress: bool = True,
    resume: bool = False,
    init: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``hepflow train cosmic``: train the cINN on pseudo-experiments and save it.

    Args:
        data: a ``PseudoExperiments`` ROOT file (``hepflow generate cosmic``) or a directory of
            feature chunks with truth (``hepflow process cosmic``).
        output_dir: gets ``flow/`` (``config.json`` + ``model.safetensors``), ``history.json``,
            ``loss.png``, ``training.json`` and ``checkpoints/``.
        config: the analysis config (default: the shipped config);
            ``[training] max_pseudo_experiments`` caps the number used.
        progress: tqdm bar per epoch.
        resume: continue an interrupted training from ``output_dir/checkpoints``.
        init: start from the weights and standardisation of this trained cosmic model (same
            ``[flow]`` architecture, prior and forward model; refused otherwise) instead of a
            fresh network, e.g. to train on a ``[proposal]`` with few epochs.
        overwrite: replace a trained model in ``output_dir``; without it (or ``resume``) one is
            refused before any data is read.

    Returns the content of ``training.json`` (pseudo-experiments used, seconds, epochs, losses).
    """
    import hepflow
    from hepflow.flows.serialization import check_model_target
    from hepflow.outputs import write_json

    cfg = load_config(config)
    tc = cfg.training
    binning = cfg.model.binning()
    check_model_target(Path(output_dir) / "flow", overwrite=overwrite or resume)
    t0 = time.perf_counter()
    theta, feats = load_training_data(
        data,
        binning=binning,
        max_n=tc.max_pseudo_experiments,
        prior=to_dict(cfg.prior),
        proposal=cfg.proposal.metadata(),
        systematics=cfg.systematics.metadata(),
    )
    load_s = time.perf_counter() - t0
    prior = cfg.prior.build()
    if len(theta) < 100:
        raise InputError(f"{data}: only {len(theta)} pseudo-experiments; need at least 100")
    inside = prior.in_support(theta) & np.all(theta[:, 2:] > 0, axis=1)
    inside &= np.all((theta[:, :2] > [prior.gamma[0], prior.lg_rcut[0]]), axis=1)
    inside &= np.all((theta[:, :2] < [prior.gamma[1], prior.lg_rcut[1]]), axis=1)
    if not inside.all():
        row = int(np.flatnonzero(~inside)[0])
        raise InputError(
            f"{data}: {int((~inside).sum())} pseudo-experiments lie outside the interior of the "
            f"config's prior support, e.g. entry {row}: {theta[row].round(6).tolist()}"
        )
    if not np.isfinite(feats).all():
        raise InputError(f"{data}: non-finite features")
    out = Path(output_dir)
    model = build_flow(cfg.flow, prior=prior, binning=binning, seed=tc.seed)
    if init is not None:
        _warm_start(model, init, cfg)
    t1 = time.perf_counter()
    epoch_ends: list[float] = []

    def time_limit(_: Any) -> bool:
        # stop when one more epoch (as long as the mean so far) would end past the limit
        epoch_ends.append(time.perf_counter() - t1)
        mean_epoch = epoch_ends[-1] / len(epoch_ends)
        return tc.time_limit_s is not None and epoch_ends[-1] + mean_epoch > tc.time_limit_s

    history = hepflow.fit(
        model,
        theta,  # float64: the model casts it (and keeps prior draws inside the box)
        context_from_features(feats, binning, cfg.flow.summary),
        **tc.fit_options(),
        checkpoint_dir=out / "checkpoints",
        resume=resume,
        output_dir=out,
        progress=progress,
        callback=time_limit,
    )
    fit_s = time.perf_counter() - t1
    metadata = model_metadata(cfg, binning)
    metadata["training"] = {"data": str(data), "pseudo_experiments": len(theta)}
    if init is not None:
        metadata["training"]["init"] = str(init)
    hepflow.save_model(model.cpu(), out / "flow", metadata=metadata, overwrite=True)
    val = [v for v in history.val_loss if v is not None]
    summary = {
        "data": str(data),
        "init": None if init is None else str(init),
        "pseudo_experiments": len(theta),
        "load_seconds": load_s,
        "fit_seconds": fit_s,
        "seconds": time.perf_counter() - t0,
        "epochs": len(history.train_loss),
        "best_epoch": history.best_epoch,
        "final_train_loss": float(history.train_loss[-1]),
        "best_val_loss": float(min(val)) if val else None,
        "stopped_by": "patience"
        if history.stopped_early
        else ("time_limit" if len(history.train_loss) < tc.epochs else "epochs"),
        "device": history.device,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {k: to_dict(getattr(cfg, k)) for k in ("prior", "model", "flow", "training")},
    }
    write_json(out / "training.json", summary)
    return summary


def _warm_start(model: Any, init: str | os.PathLike[str], cfg: CosmicConfig) -> None:
    """Copy the weights and buffers of the trained model ``init`` into ``model`` (same architecture)."""
    if is_ensemble(init):
        raise ModelError(f"{init} is an ensemble: initialise from one of its members")
    start = load_flow(init, config=cfg)  # refuses another analysis, features, prior or forward model
    ours, theirs = json_plain(model.config()), json_plain(start.config())
    differ = sorted(k for k in ours.keys() | theirs.keys() if k != "seed" and ours.get(k) != theirs.get(k))
    if differ:
        raise ModelError(
            f"{init} has another architecture than the config's [flow] ({', '.join(differ)} differ): "
            "it cannot initialise this training"
        )
    model.load_state_dict(start.state_dict())


def infer(
    model_dir: str | os.PathLike[str],
    observation: str | os.PathLike[str] = "auger",
    *,
    output_dir: str | os.PathLike[str],
    samples: int | None = None,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    entry: int = 0,
    seed: int | None = None,
    importance: bool = False,
    mcmc: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``hepflow infer cosmic``: posterior samples for ``"auger"`` or an observation file.

    Writes into ``output_dir`` (atomically): ``samples.parquet`` and ``samples.root`` (TTree
    ``Posterior``) with the columns ``gamma, lg_rcut, f_H, f_He, f_N, f_Si, f_Fe`` (fractions sum
    to one) and ``log_prob`` (the cINN density), and ``summary.json`` (mean, median, std,
    quantiles 2.5/16/50/84/97.5 %, mode = highest-density sample, timing). ``observation``: see
    :func:`hepflow.cosmic.generate.load_observation` (``entry`` for a pseudo-experiment file).
    ``samples``/``seed`` default to ``[inference]``; with ``config`` the model must have been
    trained with the config's prior and forward model. Returns the summary.

    ``importance``: also weight the samples by likelihood x prior / cINN density
    (:func:`hepflow.cosmic.posterior.importance_posterior`, the config's forward model and
    prior): a column ``weight`` (normalised to one) and, in the summary, ``importance``
    (effective sample size, efficiency ESS / n, seconds) and ``posterior_importance`` (the
    summary of as many resampled draws). A
    low efficiency says the cINN posterior is far from the likelihood's for this observation.

    Every run checks the model (:func:`hepflow.cosmic.ppc.predictive_check` with ``[check]``):
    ``model_check`` in the summary holds the posterior predictive p-values of the total, the
    spectrum and the Xmax deviance for the cINN samples, and ``model_check_warnings`` a line per
    p-value below ``[check] threshold`` ("the model does not describe the data (Xmax part,
    p < 0.001)"). ``mcmc``: a ``hepflow mcmc cosmic`` output of the same observation (refused
    otherwise): its samples get the check too, and ``verdict``
    (:func:`hepflow.cosmic.verdict.verdict`, ``[verdict]``) says whether the cINN and the MCMC
    agree and which to use. With ``importance`` and no ``mcmc`` the verdict compares the cINN
    with its importance-resampled draws (the exact posterior when the ESS is large).
    """
    import hepflow
    from hepflow.cosmic.generate import load_observation
    from hepflow.cosmic.mcmc import mcmc_with_nuisances, read_mcmc
    from hepflow.cosmic.ppc import predictive_check
    from hepflow.cosmic.pretrained import resolve
    from hepflow.cosmic.verdict import verdict
    from hepflow.outputs import write_json, write_parquet, write_root

    model_dir, config = resolve(model_dir, config)  # "pretrained": the shipped model and its config
    cfg = load_config(config) if config is not None else None
    settings = cfg if cfg is not None else load_config()  # defaults; the model is checked only against cfg
    icfg = settings.inference
    k = icfg.samples if samples is None else int(samples)
    if k < 2:
        raise ConfigError(f"samples must be >= 2, got {k}")
    out = Path(output_dir)
    targets = [out / n for n in ("samples.parquet", "samples.root", "summary.json")]
    if not overwrite and (existing := [t for t in targets if t.exists()]):
        raise OutputError(f"{existing[0]} exists; pass --overwrite to replace it")
    if mcmc is not None:  # refuse the MCMC of another observation before any work
        lg_e_min = settings.model.lg_e_min
        mc, mc_info = read_mcmc(
            mcmc, observation=observation, entry=entry, lg_e_min=lg_e_min, purpose="this inference"
        )
    t0 = time.perf_counter()
    posterior = load_posterior(model_dir, config=cfg)
    t_load = time.perf_counter() - t0
    obs = load_observation(observation, binning=posterior.binning, entry=entry)
    metadata = getattr(posterior, "metadata", None) or {}
    check_observation(metadata, obs, model_dir, name=str(observation))
    model_syst = metadata.get("systematics")
    mc_check = None
    if mcmc is not None:
        mc_check = mcmc_with_nuisances(
            mcmc, mc, mc_info, model_syst, against=f"the model {model_dir} was trained with"
        )
    # a model trained with [systematics]: its model check simulates with nuisances (from their priors)
    fwd = settings.model.build(
        reference=obs, systematics=None if model_syst is None else Systematics.from_metadata(model_syst)
    )
    x, logp = posterior.sample(k, obs, seed=icfg.seed if seed is None else seed, log_prob=True)
    elapsed = time.perf_counter() - t0
    x, logp = x[0], logp[0]
    post = hepflow.posterior_summary(x, log_prob=logp)
    cols = {name: np.ascontiguousarray(x[:, i]) for i, name in enumerate(PARAMETERS)}
    cols["log_prob"] = logp
    reweighted: dict[str, Any] = {}
    iw = resampled = None
    if importance:
        t1 = time.perf_counter()
        marginal: dict[str, Any] = {}  # with systematics: how the nuisances were integrated out
        weighted = importance_posterior(posterior, model=fwd, prior=settings.prior.build(), record=marginal)
        iw = weighted.weights(x, logp, obs)
        cols["weight"] = iw.weights
        resampled = x[iw.resample(rng=icfg.seed if seed is None else seed)]
        reweighted = {
            "importance": {
                "ess": iw.ess,
                "efficiency": iw.efficiency,
                "seconds": time.perf_counter() - t1,
                **({"marginal_likelihood": marginal} if marginal else {}),
            },
            "posterior_importance": posterior_table(hepflow.posterior_summary(resampled)),
        }
    check_finite(cols, f"the posterior of {model_dir} for {observation}")
    checks = {"cinn": x} if mc_check is None else {"cinn": x, "mcmc": mc_check}
    ccfg = settings.check
    model_check = {
        name: predictive_check(obs, theta, model=fwd, n_replicas=ccfg.n_replicas, seed=ccfg.seed)
        for name, theta in checks.items()
    }
    checked: dict[str, Any] = {
        "model_check": {name: c.summary() for name, c in model_check.items()},
        "model_check_threshold": ccfg.threshold,
        "model_check_warnings": {
            name: c.warnings(threshold=ccfg.threshold) for name, c in model_check.items()
        },
    }
    if mcmc is not None or resampled is not None:
        v = verdict(
            x,
            mc if mcmc is not None else resampled,
            ess=None if iw is None else iw.ess,
            n=k,
            thresholds=settings.verdict,
            reference="MCMC" if mcmc is not None else "importance-weighted cINN",
        )
        checked["verdict"] = v.to_dict()
    if mcmc is not None and iw is not None:
        # the cINN's draws resampled by their importance weights, against the MCMC: whether the
        # weighted cINN is a usable posterior where the plain one is not (its ESS included)
        vi = verdict(
            resampled,
            mc,
            ess=iw.ess,
            n=k,
            thresholds=settings.verdict,
            subject="importance-weighted cINN",
        )
        checked["verdict_importance"] = vi.to_dict()
    if mcmc is not None:
        checked["mcmc"] = str(mcmc)
    table = ak.zip(cols, depth_limit=1)
    write_parquet(table, targets[0])
    write_root(table, targets[1], treename="Posterior")
    summary = {
        "observation": str(observation),
        "entry": entry if str(observation) != "auger" else None,
        "model": str(model_path(model_dir)),
        "samples": k,
        "seconds": {"model_load": t_load, "to_posterior": elapsed},
        "observation_counts": {"n_spectrum": obs.n_spectrum, "n_xmax": obs.n_xmax.tolist()},
        # a model trained with [systematics]: the posterior is marginalised over nu_E, nu_X
        "systematics": model_syst,
        "posterior": posterior_table(post),
        **reweighted,
        **checked,
    }
    write_json(targets[2], summary)
    return summary


def posterior_table(post: Any) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(PARAMETERS):
        d = {"mean": float(post.mean[i]), "median": float(post.median[i]), "std": float(post.std[i])}
        d.update({f"q{q:g}": float(v[i]) for q, v in post.quantiles.items()})
        if post.mode is not None:
            d["mode"] = float(post.mode[i])
        out[name] = d
    return out
