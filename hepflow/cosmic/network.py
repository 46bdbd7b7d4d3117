"""The cosmic cINN: its construction, its metadata, and trained models on disk.

* :func:`build_flow`: the cINN ``p(theta | observation)`` of ``[flow]``, with the prior support as
  constraints (a :class:`~hepflow.flows.constraints.Box` for ``gamma`` and ``lg_rcut``, a
  :class:`~hepflow.flows.constraints.Simplex` for the five fractions), so every sample lies in it;
* :func:`model_metadata`: what a saved model records (analysis, parameters, feature
  specification, summary network, prior, forward model, training proposal);
* :func:`check_model`: the check of that record, run by the posterior layer once per model before
  any weights are read: another analysis, other features, or (with a config) another prior or
  forward model is refused;
* :func:`load_flow`: the trained network (or :class:`~hepflow.flows.ensemble.FlowEnsemble`) with
  its ``metadata`` and ``binning``, e.g. to initialise another training;
* :func:`make_ensemble`: ``hepflow ensemble cosmic``, one model directory of several cINNs of the
  same posterior.

Sampling is :mod:`hepflow.cosmic.posterior`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from hepflow.config import json_plain, to_dict
from hepflow.cosmic.config import ANALYSIS, PARAMETERS, CosmicConfig, FlowConfig, load_config
from hepflow.cosmic.features import feature_names, feature_spec, scalar_columns
from hepflow.cosmic.observation import Binning
from hepflow.errors import ConfigError, InputError, ModelError

__all__ = [
    "MISSING_MODEL",
    "binning_of",
    "build_flow",
    "check_model",
    "load_flow",
    "make_ensemble",
    "model_metadata",
]

#: the message for a directory without a cosmic model
MISSING_MODEL = (
    "no cosmic model at {path}: train one with `hepflow train cosmic` (or build an ensemble with "
    "`hepflow ensemble cosmic`) first"
)


def build_flow(cfg: FlowConfig, *, prior: Any, binning: Binning, seed: int | None = None) -> Any:
    """The cINN ``p(theta | observation)`` with the prior support as constraints."""
    from hepflow.flows.base import seeded
    from hepflow.flows.constraints import Box, Simplex
    from hepflow.flows.inn import ConditionalINN
    from hepflow.flows.summary import CNNSummary, Combined, MLPSummary

    with seeded(seed):  # the summary network too: the same seed gives the same weights
        _, n_m, n_x = binning.shape
        n_scalar = int(scalar_columns(binning).size)
        if cfg.summary == "mlp":
            summary = Combined(
                features=MLPSummary(
                    len(feature_names(binning)), cfg.mlp_embedding, width=cfg.summary_width, layers=2
                )
            )
        else:
            summary = Combined(
                flat=MLPSummary(n_scalar, cfg.flat_embedding, width=cfg.summary_width, layers=2),
                xmax=CNNSummary(
                    (n_x,),
                    cfg.xmax_embedding,
                    channels=cfg.cnn_channels,
                    in_channels=n_m,
                    width=cfg.summary_width,
                ),
            )
        return ConditionalINN(
            theta_dim=len(PARAMETERS),
            summary=summary,
            **cfg.inn_options(),
            constraints=[
                Box([0, 1], low=[prior.gamma[0], prior.lg_rcut[0]], high=[prior.gamma[1], prior.lg_rcut[1]]),
                Simplex([2, 3, 4, 5, 6], coordinates=cfg.simplex),
            ],
            seed=seed,
        )


def model_metadata(cfg: CosmicConfig, binning: Binning) -> dict[str, Any]:
    """What a trained cosmic model records about the posterior it learned."""
    proposal = cfg.proposal.metadata()
    systematics = cfg.systematics.metadata()
    return {
        "analysis": ANALYSIS,
        "parameters": list(PARAMETERS),
        "features": feature_spec(binning),
        "summary": cfg.flow.summary,
        "prior": to_dict(cfg.prior),
        "forward_model": to_dict(cfg.model),
        **({} if proposal is None else {"proposal": proposal}),
        # trained on pseudo-experiments with nuisances drawn from their priors: the posterior
        # it learned is marginalised over nu_E, nu_X
        **({} if systematics is None else {"systematics": systematics}),
    }


def binning_of(metadata: Mapping[str, Any], where: object = "model") -> Binning:
    """The binning of the observations a model was trained on (from its forward-model settings)."""
    lg_e_min = (metadata.get("forward_model") or {}).get("lg_e_min")
    try:
        return Binning.auger(lg_e_min=float(lg_e_min))
    except (TypeError, ValueError, ConfigError, InputError) as err:
        raise ModelError(f"{where}: the metadata has no valid forward_model.lg_e_min ({lg_e_min!r})") from err


def check_model(metadata: Mapping[str, Any], path: Path, *, config: CosmicConfig | None = None) -> None:
    """Refuse a model of another analysis, trained on other features, or (with ``config``) under
    another prior or forward model than the config's. Raises :class:`~hepflow.errors.ModelError`."""
    meta = metadata
    if meta.get("analysis") != ANALYSIS:
        raise ModelError(f"{path} is a model of analysis {meta.get('analysis')!r}, not {ANALYSIS!r}")
    binning = binning_of(meta, path)
    if meta.get("features") != feature_spec(binning) or meta.get("summary") not in ("cnn", "mlp"):
        raise ModelError(
            f"{path} was trained on other features than this version computes "
            f"({len((meta.get('features') or {}).get('names', []))} named, "
            f"summary {meta.get('summary')!r}); retrain it"
        )
    if meta.get("parameters") != list(PARAMETERS):
        raise ModelError(f"{path} infers {meta.get('parameters')}, not {list(PARAMETERS)}")
    if config is not None:
        for key, ours in (("prior", to_dict(config.prior)), ("forward_model", to_dict(config.model))):
            if json_plain(meta.get(key)) != json_plain(ours):
                raise ModelError(f"{path} was trained with {key} {meta.get(key)}, the config has {ours}")
        theirs, ours_s = meta.get("systematics"), config.systematics.metadata()
        if json_plain(theirs) != json_plain(ours_s):
            raise ModelError(
                f"{path} was trained with systematics {theirs or 'off'}, the config's [systematics] is "
                f"{ours_s or 'off'}: its posterior is {'' if theirs else 'not '}marginalised over nu_E, nu_X"
            )


def load_checked(model_dir: str | os.PathLike[str], *, config: CosmicConfig | None = None) -> Any:
    """The model directory as a :class:`~hepflow.posterior.FlowPosterior` (or ensemble), checked."""
    from hepflow.posterior import EnsemblePosterior, load_posterior

    post = load_posterior(
        model_dir,
        check=partial(check_model, config=config),
        missing=MISSING_MODEL.format(path=Path(model_dir)),
    )
    if isinstance(post, EnsemblePosterior):
        _refuse_proposal_members(post, model_dir)
    return post


def _refuse_proposal_members(ensemble: Any, where: object) -> None:
    if ensemble.metadata.get("proposal") is not None:
        raise ModelError(
            f"{where}: members trained on a [proposal] cannot form an ensemble (their draws are "
            "corrected one model at a time)"
        )


def load_flow(model_dir: str | os.PathLike[str], *, config: CosmicConfig | None = None) -> Any:
    """The trained cINN of a model directory (or its ``flow`` folder), refusing a foreign model.

    An ensemble directory gives a :class:`~hepflow.flows.ensemble.FlowEnsemble`. The network
    carries ``metadata`` and ``binning``. For posterior samples use
    :func:`hepflow.cosmic.posterior.load_posterior`.
    """
    post = load_checked(model_dir, config=config)
    model = post.model
    model.metadata = post.metadata
    model.binning = binning_of(post.metadata, model_dir)
    return model.eval()


def make_ensemble(
    models: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """``hepflow ensemble cosmic``: one model directory of an equal-weight mixture of trained cINNs.

    Copies every member's ``flow`` folder (config + checksummed weights) to
    ``output_dir/member_<k>`` and writes ``ensemble.json``; the directory is complete or absent
    (:func:`hepflow.posterior.write_ensemble`); an output that equals, contains or lies inside a
    member is refused, and ``overwrite`` replaces only an earlier ensemble. The members must infer
    the same posterior: the
    same analysis, parameters, features, summary, prior, forward model and (with ``config``) the
    config's; not trained on a ``[proposal]``.
    """
    from hepflow.posterior import EnsemblePosterior, check_ensemble_sources, write_ensemble
    from hepflow.posterior.loading import check_ensemble_target

    cfg = None if config is None else load_config(config)
    check_ensemble_sources(models)  # before any model is loaded
    check_ensemble_target(models, output_dir, overwrite=overwrite)
    _refuse_proposal_members(EnsemblePosterior([load_checked(m, config=cfg) for m in models]), "ensemble")
    return write_ensemble(models, output_dir, overwrite=overwrite)
