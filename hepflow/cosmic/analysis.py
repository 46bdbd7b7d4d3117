"""The cosmic-ray source analysis (``analyses/auger_sources``): cINN training, inference, comparison.

The neural posterior ``p(theta | x)`` of the 7 source parameters ``theta = (gamma, lg_rcut, f_H,
f_He, f_N, f_Si, f_Fe)`` given the binned Auger-like observation ``x`` (spectrum above
10^18.7 eV and Xmax distributions), learned from pseudo-experiments of the forward model
(:mod:`hepflow.cosmic`) with parameters drawn from the prior of the analysis config.

* **Context**: the 943 features of :func:`hepflow.cosmic.features.observation_features`, split
  into the 43 scalar features (spectrum log fractions, total counts, Xmax counts, means and
  standard deviations per energy bin) and the Xmax distributions (9 energy bins x 100 Xmax bins).
  ``[flow] summary = "cnn"`` (default): an MLP on the scalars next to a 1D CNN over Xmax with
  the energy bins as channels; ``"mlp"``: one MLP on all 943 features.
* **Support**: ``gamma`` and ``lg_rcut`` in a :class:`~hepflow.flows.constraints.Box` with the
  prior ranges, the five fractions on a :class:`~hepflow.flows.constraints.Simplex`, so every
  posterior sample lies in the prior support.
* **Training** goes through the shared :func:`hepflow.fit`; the model is saved with
  :func:`hepflow.save_model` (safetensors + JSON) with the analysis name, the feature
  specification, the prior and the forward-model settings as metadata: :func:`load_flow` refuses a
  model of another analysis, trained on other features, or (with a config) another prior.
* **Ensembles**: :func:`make_ensemble` (``hepflow ensemble cosmic``) puts trained cINNs of the
  same posterior in one model directory; :func:`load_flow` returns their
  :class:`~hepflow.flows.ensemble.FlowEnsemble`, used like one model everywhere below.
* **Training proposal**: with ``[proposal] prior_weight < 1`` the pseudo-experiments also cover
  the faces of the simplex (:class:`hepflow.cosmic.Proposal`); the model records it and
  :func:`sample_posterior` corrects its draws back to the prior by rejection.

Entry points (the ``hepflow train|infer|compare cosmic`` commands)::

    train("data/cosmic/pe_train.root", "models/cosmic", config="analyses/auger_sources/config.toml")
    make_ensemble(["models/cosmic", "models/cosmic_stick"], "models/cosmic_ensemble")
    infer("models/cosmic", "auger", output_dir="runs/cosmic/infer_auger", samples=4000)
    compare("models/cosmic", "runs/cosmic/comparison", config=...)   # cINN vs MCMC + calibration

The configuration is the one ``analyses/auger_sources/config.toml`` read by every cosmic command:
:class:`AugerConfig` (= :class:`hepflow.cosmic.generate.CosmicConfig`) with the sections
``[prior]``, ``[proposal]``, ``[model]``, ``[generation]``, ``[mcmc]``, ``[flow]``, ``[training]``,
``[inference]`` and ``[comparison]``; unknown keys are refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.config import shipped_config, to_dict
from hepflow.cosmic import PARAMETER_NAMES, Binning, Observation
from hepflow.cosmic.features import feature_names, observation_features, valid_rows
from hepflow.cosmic.generate import CosmicConfig, FlowConfig, as_config
from hepflow.errors import ConfigError, InputError, ModelError, OutputError
from hepflow.flows.ensemble import FlowEnsemble
from hepflow.posterior.importance import ImportanceWeights, importance_weights

__all__ = [
    "ANALYSIS",
    "AugerConfig",
    "build_flow",
    "compare",
    "context_from_features",
    "feature_spec",
    "importance_reweight",
    "infer",
    "load_config",
    "load_flow",
    "load_training_data",
    "make_ensemble",
    "marginal_metrics",
    "parameter_columns",
    "posterior_log_prob",
    "sample_posterior",
    "summarize_metrics",
    "train",
]

ANALYSIS = "auger_sources"
#: The analysis configuration: every section of ``analyses/auger_sources/config.toml``.
AugerConfig = CosmicConfig
DEFAULT_CONFIG = shipped_config("cosmic")
PARAMETERS: tuple[str, ...] = tuple(PARAMETER_NAMES)
_BLOCK = 20_000  # pseudo-experiments per block when reading and computing features

log = logging.getLogger(__name__)


def load_config(config: CosmicConfig | str | os.PathLike[str] | None = None) -> CosmicConfig:
    """The analysis config: an :class:`AugerConfig`, a TOML path, or None for the shipped file
    (``analyses/auger_sources/config.toml``; the built-in defaults where it is not installed)."""
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    return as_config(config)


# --------------------------------------------------------------------------- features
def feature_spec(binning: Binning) -> dict[str, Any]:
    """What the context of a model is: feature names and the binning they are computed in."""
    return {
        "names": list(feature_names(binning)),
        "spectrum_edges": [round(float(e), 6) for e in binning.spectrum_edges],
        "xmax_energy_edges": [round(float(e), 6) for e in binning.xmax_energy_edges],
        "xmax_edges": [
            float(binning.xmax_edges[0]),
            float(binning.xmax_edges[-1]),
            binning.xmax_edges.size - 1,
        ],
    }


def _scalar_columns(binning: Binning) -> np.ndarray:
    names = feature_names(binning)
    return np.array([i for i, n in enumerate(names) if not n.startswith("xmax_p")])


def context_from_features(features: np.ndarray, binning: Binning, summary: str) -> dict[str, np.ndarray]:
    """The model context of feature rows (n, 943): ``{"flat", "xmax"}`` (cnn) or ``{"features"}`` (mlp)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    _, n_m, n_x = binning.shape
    if x.shape[1] != len(feature_names(binning)):
        raise InputError(f"features have {x.shape[1]} columns, the binning has {len(feature_names(binning))}")
    if summary == "mlp":
        return {"features": np.ascontiguousarray(x)}
    scalars = _scalar_columns(binning)
    hist = x[:, scalars.size :].reshape(-1, n_m, n_x)
    return {"flat": np.ascontiguousarray(x[:, scalars]), "xmax": np.ascontiguousarray(hist)}


def observation_context(obs: Observation, summary: str) -> dict[str, np.ndarray]:
    """The model context of one observation."""
    return context_from_features(
        observation_features(obs.spectrum, obs.xmax, binning=obs.binning), obs.binning, summary
    )


# --------------------------------------------------------------------------- training data
def load_training_data(
    source: str | os.PathLike[str],
    *,
    binning: Binning,
    max_n: int | None = None,
    prior: dict[str, Any] | None = None,
    proposal: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(theta (n, 7) float64, features (n, 943) float32)`` from a ``PseudoExperiments`` ntuple
    (``hepflow generate cosmic``) or a directory of feature chunks (``hepflow process cosmic``).

    ``prior`` (the ``[prior]`` section as a dict): an ntuple whose metadata names another prior
    is refused, since the cINN would learn the posterior under that prior; so is one drawn from
    another ``proposal`` (:meth:`~hepflow.cosmic.generate.ProposalConfig.metadata` of the
    ``[proposal]`` section, None for the prior itself), since the model records the proposal
    its samples are corrected for. Feature directories carry no such record. Of the first ``max_n``
    pseudo-experiments, those with a NaN, infinite or negative count (ntuple) or a non-finite
    feature (feature chunks), or a non-finite parameter, are dropped and their number logged:
    everything returned is finite.
    """
    path = Path(source)
    if path.is_dir():
        theta, feats = _features_from_parquet(path, binning, max_n)
        keep = valid_rows(theta, feats, nonnegative=False)
        if not keep.all():
            theta, feats = theta[keep], feats[keep]
            _log_dropped(path, int((~keep).sum()), len(keep))
        return theta, feats
    if path.is_file():
        return _features_from_ntuple(path, binning, max_n, prior, proposal)
    raise InputError(f"training data {path} does not exist (a PseudoExperiments file or a feature directory)")


def _log_dropped(path: Path, bad: int, total: int) -> None:
    log.warning("%s: dropped %d of %d pseudo-experiments with NaN, inf or negative inputs", path, bad, total)


def _features_from_ntuple(
    path: Path,
    binning: Binning,
    max_n: int | None,
    prior: dict[str, Any] | None,
    proposal: dict[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray]:
    import uproot

    from hepflow.cosmic.generate import PSEUDO_EXPERIMENT_TREE, read_pseudo_experiments

    try:
        with uproot.open(path) as f:
            if PSEUDO_EXPERIMENT_TREE not in f:
                raise InputError(
                    f"{path} has no {PSEUDO_EXPERIMENT_TREE} tree: generate it with `hepflow generate cosmic`"
                )
            n = int(f[PSEUDO_EXPERIMENT_TREE].num_entries)
            meta = json.loads(f["metadata"]) if "metadata" in f else {}
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from err
    if prior is not None and "prior" in meta and _plain(meta["prior"]) != _plain(prior):
        raise InputError(
            f"{path} was generated with prior {meta['prior']}, the config has {prior}: "
            "the cINN would learn the posterior under another prior"
        )
    if prior is not None and "prior" in meta and _plain(meta.get("proposal")) != _plain(proposal):
        raise InputError(
            f"{path} was generated with proposal {meta.get('proposal') or 'the prior'}, the config's "
            f"[proposal] is {proposal or 'the prior'}: the model would correct its samples for the wrong one"
        )
    n = n if max_n is None else min(n, max_n)
    theta = np.empty((n, len(PARAMETERS)))
    feats = np.empty((n, len(feature_names(binning))), np.float32)
    kept = 0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block = read_pseudo_experiments(path, entry_start=start, entry_stop=stop)
        ok = valid_rows(block["spectrum"], block["xmax"]) & valid_rows(block["theta"], nonnegative=False)
        m = int(ok.sum())
        theta[kept : kept + m] = block["theta"][ok]
        feats[kept : kept + m] = observation_features(
            block["spectrum"][ok], block["xmax"][ok], binning=binning
        )
        kept += m
    if kept < n:
        _log_dropped(path, n - kept, n)
    return theta[:kept], feats[:kept]


def parameter_columns(columns: Any, where: object, *, hint: str = "") -> np.ndarray:
    """The (n, 7) parameters ``gamma .. f_Fe`` of a table with those columns (truth or samples).

    Raises :class:`~hepflow.errors.InputError` naming ``where`` (and ``hint``) if one is missing.
    """
    if missing := [p for p in PARAMETERS if p not in columns.fields]:
        raise InputError(f"{where}: lacks the parameter columns {missing}{hint}")
    return np.stack([ak.to_numpy(columns[p]).astype(float) for p in PARAMETERS], axis=1)


def _features_from_parquet(path: Path, binning: Binning, max_n: int | None) -> tuple[np.ndarray, np.ndarray]:
    from hepflow.cosmic.features import feature_matrix

    files = sorted(path.glob("*.parquet"))
    if not files:
        raise InputError(f"no parquet files in {path}")
    thetas, feats, n = [], [], 0
    for f in files:
        try:
            cols = ak.from_parquet(f)
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise InputError(f"cannot read parquet file {f}: {err}") from err
        thetas.append(parameter_columns(cols, f, hint=": cannot train (process pseudo-experiments)"))
        feats.append(feature_matrix(cols, binning=binning).astype(np.float32))
        n += len(cols)
        if max_n is not None and n >= max_n:
            break
    theta, x = np.concatenate(thetas), np.concatenate(feats)
    return (theta, x) if max_n is None else (theta[:max_n], x[:max_n])


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists, ints and floats compare by value."""
    return json.loads(json.dumps(obj))


# --------------------------------------------------------------------------- model
def build_flow(cfg: FlowConfig, *, prior: Any, binning: Binning, seed: int | None = None) -> Any:
    """The cINN ``p(theta | observation)`` with the prior support as constraints."""
    from hepflow.flows.base import seeded
    from hepflow.flows.constraints import Box, Simplex
    from hepflow.flows.inn import ConditionalINN
    from hepflow.flows.summary import CNNSummary, Combined, MLPSummary

    with seeded(seed):  # the summary network too: the same seed gives the same weights
        _, n_m, n_x = binning.shape
        n_scalar = int(_scalar_columns(binning).size)
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


def _metadata(cfg: CosmicConfig, binning: Binning) -> dict[str, Any]:
    proposal = cfg.proposal.metadata()
    return {
        "analysis": ANALYSIS,
        "parameters": list(PARAMETERS),
        "features": feature_spec(binning),
        "summary": cfg.flow.summary,
        "prior": to_dict(cfg.prior),
        "forward_model": to_dict(cfg.model),
        **({} if proposal is None else {"proposal": proposal}),
    }


ENSEMBLE_FILE = "ensemble.json"
#: Metadata every member of an ensemble must share (what the posterior is of, and from what).
_SHARED_METADATA = ("analysis", "parameters", "features", "summary", "prior", "forward_model", "proposal")


def _model_path(model_dir: str | os.PathLike[str]) -> Path:
    d = Path(model_dir)
    if (d / ENSEMBLE_FILE).is_file():
        return d
    for candidate in (d, d / "flow"):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelError(
        f"no cosmic model at {d}: train one with `hepflow train cosmic` (or build an ensemble with "
        "`hepflow ensemble cosmic`) first"
    )


def load_flow(model_dir: str | os.PathLike[str], *, config: CosmicConfig | None = None) -> Any:
    """Load the cINN from a training output directory (or its ``flow`` folder), refusing a foreign model.

    A directory written by :func:`make_ensemble` gives a :class:`~hepflow.flows.ensemble.FlowEnsemble`
    of its members, with the same ``metadata`` and ``binning`` attributes.

    Raises :class:`~hepflow.errors.ModelError` if the model is not one of this analysis, was
    trained on another feature layout, or (when ``config`` is given) under another prior or
    forward model than the config's.
    """
    if (Path(model_dir) / ENSEMBLE_FILE).is_file():
        return _load_ensemble(Path(model_dir), config)
    import hepflow
    from hepflow.flows.serialization import read_config

    path = _model_path(model_dir)
    meta = read_config(path).get("metadata", {}) or {}
    if meta.get("analysis") != ANALYSIS:
        raise ModelError(f"{path} is a model of analysis {meta.get('analysis')!r}, not {ANALYSIS!r}")
    lg_e_min = (meta.get("forward_model") or {}).get("lg_e_min")
    try:
        binning = Binning.auger(lg_e_min=float(lg_e_min))
    except (TypeError, ValueError, ConfigError, InputError) as err:
        raise ModelError(f"{path}: the metadata has no valid forward_model.lg_e_min ({lg_e_min!r})") from err
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
            if _plain(meta.get(key)) != _plain(ours):
                raise ModelError(f"{path} was trained with {key} {meta.get(key)}, the config has {ours}")
    model = hepflow.load_model(path)
    model.binning = binning
    return model.eval()


def _ensemble_of(members: Sequence[Any], where: str) -> Any:
    """A :class:`FlowEnsemble` of loaded cosmic models that infer the same posterior."""
    first = members[0].metadata
    for i, m in enumerate(members[1:], start=1):
        differ = [k for k in _SHARED_METADATA if _plain(m.metadata.get(k)) != _plain(first.get(k))]
        if differ:
            raise ModelError(f"{where}: member {i} differs from member 0 in {', '.join(differ)}")
    if first.get("proposal") is not None:
        raise ModelError(
            f"{where}: members trained on a [proposal] cannot form an ensemble (their draws are "
            "corrected one model at a time)"
        )
    ensemble = FlowEnsemble(members)
    ensemble.metadata = {k: first[k] for k in _SHARED_METADATA if k in first}
    ensemble.metadata["members"] = [m.metadata.get("training") for m in members]
    ensemble.binning = members[0].binning
    return ensemble.eval()


def _load_ensemble(directory: Path, config: CosmicConfig | None) -> Any:
    try:
        names = json.loads((directory / ENSEMBLE_FILE).read_text())["members"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{directory / ENSEMBLE_FILE} is not an ensemble description: {err}") from err
    if not isinstance(names, list) or not all(isinstance(n, str) and "/" not in n for n in names):
        raise ModelError(f"{directory / ENSEMBLE_FILE}: 'members' must list member folder names")
    return _ensemble_of([load_flow(directory / n, config=config) for n in names], str(directory))


def make_ensemble(
    models: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """``hepflow ensemble cosmic``: one model directory of an equal-weight mixture of trained cINNs.

    Copies every member's ``flow`` folder (config + checksummed weights) to
    ``output_dir/member_<k>`` and writes ``ensemble.json``; the directory is complete or absent.
    :func:`load_flow` (and so infer, compare and report) use it like one model. The members must
    infer the same posterior: the same analysis, parameters, features, summary, prior, forward
    model and (with ``config``) the config's; not trained on a ``[proposal]``.
    """
    import shutil

    from hepflow.outputs import write_json

    cfg = None if config is None else load_config(config)
    for m in models:
        if (Path(m) / ENSEMBLE_FILE).is_file():
            raise ConfigError(f"{m} is an ensemble already: list its members instead")
    members = [load_flow(m, config=cfg) for m in models]
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least two models, got {len(members)}")
    _ensemble_of(members, "ensemble")
    out = Path(output_dir)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [f"member_{k}" for k in range(len(models))]
    try:
        for name, m in zip(names, models, strict=True):
            shutil.copytree(_model_path(m), tmp / name)
        write_json(tmp / ENSEMBLE_FILE, {"members": names, "sources": [str(m) for m in models]})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _model_prior(model: Any) -> Any:
    from hepflow.cosmic import Prior

    p = model.metadata["prior"]
    return Prior(gamma=tuple(p["gamma"]), lg_rcut=tuple(p["lg_rcut"]), concentration=p["concentration"])


def _model_proposal(model: Any) -> Any:
    """The :class:`~hepflow.cosmic.Proposal` the model was trained on, None for the prior."""
    from hepflow.cosmic import Proposal

    p = model.metadata.get("proposal")
    if p is None:
        return None
    return Proposal(_model_prior(model), prior_weight=p["prior_weight"], concentration=p["concentration"])


def _on_simplex(theta: Any) -> np.ndarray:
    """Flow samples as float64 with the fractions renormalised in double precision."""
    x = theta.double().cpu().numpy()
    x[..., 2:] = np.clip(x[..., 2:], 0.0, None)
    x[..., 2:] /= x[..., 2:].sum(axis=-1, keepdims=True)
    return x


def _context(
    model: Any, observations: Observation | Sequence[Observation] | np.ndarray
) -> dict[str, np.ndarray]:
    """The model's context of observations (or of rows of features)."""
    if isinstance(observations, Observation):
        observations = [observations]
    if isinstance(observations, np.ndarray):
        feats = observations
    else:
        obs = list(observations)
        feats = observation_features(
            np.stack([o.spectrum for o in obs]), np.stack([o.xmax for o in obs]), binning=model.binning
        )
    return context_from_features(feats, model.binning, model.metadata["summary"])


def sample_posterior(
    model: Any,
    observations: Observation | Sequence[Observation] | np.ndarray,
    n: int,
    *,
    seed: int = 7,
    log_prob: bool = True,
    max_draws: int = 1000,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(samples (n_obs, n, 7) float64, log_prob (n_obs, n))`` for observations or feature rows.

    The fractions are renormalised in double precision (they sum to one within 1e-12) and every
    sample lies in the prior box (the flow's constraints). ``log_prob=False`` skips the density
    where it costs extra (an ensemble evaluates every member at every sample) and returns None
    for it there; :func:`posterior_log_prob` computes it later. A single flow's sampling pass
    gives it at no cost, so it is returned anyway.

    A model trained on a :class:`~hepflow.cosmic.Proposal` (``[proposal]``) learned the posterior
    under the proposal; its draws are accepted with probability ``lambda * prior / proposal``, so
    the returned samples follow the posterior under the prior, and ``log_prob`` is the density of
    the accepted draws (the cINN's, times the acceptance, over the observation's acceptance rate).
    An observation whose rate is so low that ``max_draws * n`` draws do not give ``n`` samples is
    refused with its rate: its posterior lies where the proposal has almost all the mass.
    """
    import torch

    ctx = _context(model, observations)
    gen = torch.Generator().manual_seed(int(seed))
    proposal = _model_proposal(model)
    if proposal is not None:
        return _corrected_draws(model, ctx, n, proposal, gen, np.random.default_rng(seed), max_draws)
    if not log_prob and isinstance(model, FlowEnsemble):  # a single flow's density comes free
        return _on_simplex(model.sample(n, ctx, generator=gen)), None
    theta, logp = model.sample(n, ctx, return_log_prob=True, generator=gen)
    return _on_simplex(theta), logp.double().cpu().numpy()


def posterior_log_prob(
    model: Any, observations: Observation | Sequence[Observation] | np.ndarray, samples: np.ndarray
) -> np.ndarray:
    """The cINN's ``log q(theta | x)`` (n_obs, n) of samples (n_obs, n, 7) grouped by observation.

    For the samples of :func:`sample_posterior` with ``log_prob=False``; a model trained on a
    ``[proposal]`` is refused (the density of its corrected draws comes with the draws).
    """
    if _model_proposal(model) is not None:
        raise ModelError(
            "the density of a proposal-trained model's corrected draws comes from sample_posterior"
        )
    lp = model.log_prob_grouped(samples, _context(model, observations))
    return lp.double().cpu().numpy()


def _corrected_draws(
    model: Any,
    ctx: dict[str, np.ndarray],
    n: int,
    proposal: Any,
    gen: Any,
    rng: np.random.Generator,
    max_draws: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection from the cINN's posterior under ``proposal`` to the posterior under the prior."""
    from hepflow.flows.context import index_context

    n_obs = len(next(iter(ctx.values())))
    samples = np.empty((n_obs, n, len(PARAMETERS)))
    log_q = np.empty((n_obs, n))
    filled = np.zeros(n_obs, dtype=np.int64)
    drawn = np.zeros(n_obs, dtype=np.int64)
    accepted = np.zeros(n_obs, dtype=np.int64)
    todo = np.arange(n_obs)
    while todo.size:
        need = n - filled[todo]
        # acceptance so far (lambda, the mean over the prior predictive, before the first round)
        rate = np.where(
            drawn[todo] > 0, np.maximum(accepted[todo], 1) / np.maximum(drawn[todo], 1), proposal.prior_weight
        )
        m = int(np.ceil(((need + 4 * np.sqrt(need) + 8) / rate).max()))
        m = min(m, max(n, 2**16 // max(todo.size, 1)) * 8)  # bound the memory of one round
        theta, logp = model.sample(m, index_context(ctx, todo), return_log_prob=True, generator=gen)
        x, lq = _on_simplex(theta), logp.double().cpu().numpy()
        log_acc = proposal.log_acceptance(x.reshape(-1, x.shape[-1])).reshape(lq.shape)
        keep = np.log(rng.random(lq.shape)) < log_acc
        for j, i in enumerate(todo):
            k = np.flatnonzero(keep[j])[: n - filled[i]]
            samples[i, filled[i] : filled[i] + k.size] = x[j, k]
            log_q[i, filled[i] : filled[i] + k.size] = lq[j, k] + log_acc[j, k]
            filled[i] += k.size
        drawn[todo] += m
        accepted[todo] += keep.sum(axis=1)
        todo = todo[filled[todo] < n]
        stuck = todo[drawn[todo] >= max_draws * n]
        if stuck.size:
            i = int(stuck[0])
            raise ModelError(
                f"observation {i}: only {accepted[i]} of {drawn[i]} cINN draws pass the correction "
                f"from the training proposal to the prior (rate {accepted[i] / drawn[i]:.2g}): the "
                "posterior lies where the proposal puts almost all the training mass"
            )
    return samples, log_q - np.log(accepted / drawn)[:, None]


def importance_reweight(
    samples: np.ndarray, log_q: np.ndarray, observation: Observation, *, model: Any, prior: Any
) -> ImportanceWeights:
    """Importance weights ``L(x | theta) pi(theta) / q(theta | x)`` of cINN samples of one observation.

    ``samples`` (n, 7) and ``log_q`` (n,) from :func:`sample_posterior`; ``model`` the forward
    model (:class:`hepflow.cosmic.ForwardModel`) and ``prior`` the prior the MCMC uses. The
    weighted (or resampled) samples follow the exact posterior of the likelihood when the cINN
    covers it; the effective sample size measures how close the cINN was
    (:mod:`hepflow.posterior.importance`). Costs one vectorised likelihood call per sample.
    """
    from hepflow.cosmic import Likelihood

    like = Likelihood(observation, model=model)
    with np.errstate(divide="ignore"):
        log_target = like(samples) + prior.log_prob(samples)
    return importance_weights(log_target, log_q)


# --------------------------------------------------------------------------- train
def train(
    data: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    progress: bool = True,
    resume: bool = False,
    init: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """``hepflow train cosmic``: train the cINN on pseudo-experiments and save it.

    Args:
        data: a ``PseudoExperiments`` ROOT file (``hepflow generate cosmic``) or a directory of
            feature chunks with truth (``hepflow process cosmic``).
        output_dir: gets ``flow/`` (``config.json`` + ``model.safetensors``), ``history.json``,
            ``loss.png``, ``training.json`` and ``checkpoints/``.
        config: the analysis config (default: ``analyses/auger_sources/config.toml``);
            ``[training] max_pseudo_experiments`` caps the number used.
        progress: tqdm bar per epoch.
        resume: continue an interrupted training from ``output_dir/checkpoints``.
        init: start from the weights and standardisation of this trained cosmic model (same
            ``[flow]`` architecture, prior and forward model; refused otherwise) instead of a
            fresh network, e.g. to train on a ``[proposal]`` with few epochs.

    Returns the content of ``training.json`` (pseudo-experiments used, seconds, epochs, losses).
    """
    import hepflow
    from hepflow.outputs import write_json

    cfg = load_config(config)
    tc = cfg.training
    binning = cfg.model.binning()
    t0 = time.perf_counter()
    theta, feats = load_training_data(
        data,
        binning=binning,
        max_n=tc.max_pseudo_experiments,
        prior=to_dict(cfg.prior),
        proposal=cfg.proposal.metadata(),
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
    metadata = _metadata(cfg, binning)
    metadata["training"] = {"data": str(data), "pseudo_experiments": len(theta)}
    if init is not None:
        metadata["training"]["init"] = str(init)
    hepflow.save_model(model.cpu(), out / "flow", metadata=metadata)
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
    if (Path(init) / ENSEMBLE_FILE).is_file():
        raise ModelError(f"{init} is an ensemble: initialise from one of its members")
    start = load_flow(init, config=cfg)  # refuses another analysis, features, prior or forward model
    ours, theirs = _plain(model.config()), _plain(start.config())
    differ = sorted(k for k in ours.keys() | theirs.keys() if k != "seed" and ours.get(k) != theirs.get(k))
    if differ:
        raise ModelError(
            f"{init} has another architecture than the config's [flow] ({', '.join(differ)} differ): "
            "it cannot initialise this training"
        )
    model.load_state_dict(start.state_dict())


# --------------------------------------------------------------------------- inference
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
    (:func:`importance_reweight`, the config's forward model and prior): a column ``weight``
    (normalised to one) and, in the summary, ``importance`` (effective sample size, efficiency
    ESS / n, seconds) and ``posterior_importance`` (the summary of as many resampled draws). A
    low efficiency says the cINN posterior is far from the likelihood's for this observation.
    """
    import hepflow
    from hepflow.cosmic.generate import load_observation
    from hepflow.outputs import write_json, write_parquet, write_root

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
    t0 = time.perf_counter()
    model = load_flow(model_dir, config=cfg)
    t_load = time.perf_counter() - t0
    obs = load_observation(observation, binning=model.binning, entry=entry)
    x, logp = sample_posterior(model, obs, k, seed=icfg.seed if seed is None else seed)
    elapsed = time.perf_counter() - t0
    x, logp = x[0], logp[0]
    post = hepflow.posterior_summary(x, log_prob=logp)
    cols = {name: np.ascontiguousarray(x[:, i]) for i, name in enumerate(PARAMETERS)}
    cols["log_prob"] = logp
    reweighted: dict[str, Any] = {}
    if importance:
        t1 = time.perf_counter()
        iw = importance_reweight(
            x, logp, obs, model=settings.model.build(reference=obs), prior=settings.prior.build()
        )
        cols["weight"] = iw.weights
        resampled = x[iw.resample(rng=icfg.seed if seed is None else seed)]
        reweighted = {
            "importance": {
                "ess": iw.ess,
                "efficiency": iw.efficiency,
                "seconds": time.perf_counter() - t1,
            },
            "posterior_importance": _posterior_dict(hepflow.posterior_summary(resampled)),
        }
    table = ak.zip(cols, depth_limit=1)
    write_parquet(table, targets[0])
    write_root(table, targets[1], treename="Posterior")
    summary = {
        "observation": str(observation),
        "entry": entry if str(observation) != "auger" else None,
        "model": str(_model_path(model_dir)),
        "samples": k,
        "seconds": {"model_load": t_load, "to_posterior": elapsed},
        "observation_counts": {"n_spectrum": obs.n_spectrum, "n_xmax": obs.n_xmax.tolist()},
        "posterior": _posterior_dict(post),
        **reweighted,
    }
    write_json(targets[2], summary)
    return summary


def _posterior_dict(post: Any) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(PARAMETERS):
        d = {"mean": float(post.mean[i]), "median": float(post.median[i]), "std": float(post.std[i])}
        d.update({f"q{q:g}": float(v[i]) for q, v in post.quantiles.items()})
        if post.mode is not None:
            d["mode"] = float(post.mode[i])
        out[name] = d
    return out


# --------------------------------------------------------------------------- comparison
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


def _simulate_mocks(
    cfg: CosmicConfig, n: int, seed: int, *, stream: int
) -> tuple[np.ndarray, list[Observation]]:
    """``n`` held-out mock observations: prior draws and pseudo-experiments from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))
    prior, model = cfg.prior.build(), cfg.model.build()
    theta = prior.sample(n, rng)
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
    samples only the deepest mode it finds; the number of modes and the deviance gap to the
    second one are recorded per mock (a gap of a few units means a bimodal posterior the MCMC
    does not represent).
    """
    from hepflow.calibration import calibration_report
    from hepflow.cosmic.mcmc import run_mcmc
    from hepflow.outputs import write_json, write_parquet

    cfg = load_config(config)
    cc = cfg.comparison
    n_mocks = cc.n_mocks if n_mocks is None else int(n_mocks)
    n_cal = cc.n_calibration if n_calibration is None else int(n_calibration)
    out = Path(output_dir)
    target = out / "comparison.json"
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass --overwrite to replace it")
    load_flow(model_dir, config=cfg)  # refuse a mismatching model before any MCMC runs
    prior, fwd = cfg.prior.build(), cfg.model.build()

    theta_true, mocks = _simulate_mocks(cfg, n_mocks, cc.seed, stream=0)
    reused = _ReusedMcmc(Path(mcmc_from), cfg, mocks) if mcmc_from is not None else None
    per_mock, per_mock_is, rows = [], [], []
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    model = load_flow(model_dir)  # once, as the MCMC's forward model is built once above
    t_load = time.perf_counter() - t0
    for i in tqdm(range(n_mocks), desc="mocks (MCMC + cINN)", disable=not progress):
        obs = mocks[i]
        t0 = time.perf_counter()
        x, log_q = sample_posterior(model, obs, cc.samples, seed=cc.seed + i, log_prob=False)
        t_cinn = time.perf_counter() - t0  # time to the posterior samples
        t0 = time.perf_counter()
        if log_q is None:  # the cINN density is needed for the weights only
            log_q = posterior_log_prob(model, obs, x)
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
            "note": "cINN samples with weights L pi / q (hepflow.cosmic.analysis.importance_reweight), "
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
        theta_cal, cal_obs = _simulate_mocks(cfg, n_cal, cc.seed, stream=1)
        model = load_flow(model_dir)
        t0 = time.perf_counter()
        xs, _ = sample_posterior(
            model, cal_obs, cc.calibration_samples, seed=cc.seed + 10_000, log_prob=False
        )
        t_cal = time.perf_counter() - t0
        calibration = calibration_report(theta_cal, xs, list(PARAMETERS), plot_dir=out)
        calibration["sampling_seconds"] = t_cal
        cov = calibration["coverage"]
        calibration["max_coverage_deviation"] = {
            level: float(max(abs(v - float(level)) for v in cov[level].values())) for level in cov
        }
    comparison["calibration"] = calibration
    comparison["settings"] = {
        "comparison": to_dict(cc),
        "mcmc": to_dict(cfg.mcmc),
        "model": str(_model_path(model_dir)),
        "mock_parameters": "drawn from the prior; mocks simulated with the config's forward model",
        "mcmc_from": None if mcmc_from is None else str(mcmc_from),
    }
    write_json(target, comparison)
    return comparison
