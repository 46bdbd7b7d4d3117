"""The neutrino analysis: configuration, models, training and per-event inference columns.

Everything analysis-specific is here and in :mod:`hepflow.neutrino.features`; training goes
through the shared :func:`hepflow.fit`, sampling through the shared engine.

Target: the neutrino (px, py, eta) as in nu-Flows; pz = pT sinh(eta) is derived per sample.
Context: flat features (MET, lepton, multiplicities; the discrete ones dequantized) and the
set of up to ten jets (attention-pooling set encoder with a mask).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepflow.config import from_dict, read_toml, shipped_config, to_dict
from hepflow.errors import InputError, ModelError
from hepflow.flows.base import seeded
from hepflow.flows.config import FlowArchitecture
from hepflow.inference.summaries import marginal_mode
from hepflow.neutrino.features import (
    DISCRETE_FEATURES,
    FLAT_FEATURES,
    JET_FEATURES,
    context_arrays,
    truth_array,
)
from hepflow.neutrino.processor import NeutrinoSelection
from hepflow.neutrino.quadratic import lepton_mass, reconstruct_w_mass, solve_neutrino_pz
from hepflow.training.config import FitConfig

ANALYSIS = "ttbar_neutrino"
TARGETS = ("nu_px", "nu_py", "nu_eta")
FEATURE_SPEC = {"flat": list(FLAT_FEATURES), "jets": list(JET_FEATURES), "targets": list(TARGETS)}
DEFAULT_CONFIG = shipped_config("neutrino")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryConfig:
    """The condition network shared by flow and regression: an MLP over the flat features
    concatenated with an attention-pooling set encoder over the jets."""

    flat_embedding: int = 32
    jet_embedding: int = 32
    set_width: int = 64
    set_heads: int = 4
    set_blocks: int = 1


@dataclass(frozen=True)
class FlowConfig(FlowArchitecture):
    """The cINN (defaults after nu-Flows: 7 spline couplings, 10 bins, 2 x 64 subnets)."""

    depth: int = 7
    width: int = 64
    bins: int = 10
    bound: float = 4.0


@dataclass(frozen=True)
class RegressionConfig:
    """The feed-forward regression baseline (same inputs and summary network, MSE)."""

    width: int = 128
    layers: int = 3


@dataclass(frozen=True)
class TrainingConfig(FitConfig):
    """``[training]``: :func:`hepflow.fit` options for both models, sized for a CPU."""

    epochs: int = 25
    batch_size: int = 512
    patience: int = 6
    max_events: int | None = None


@dataclass(frozen=True)
class InferenceConfig:
    """Posterior sampling per event."""

    samples: int = 256
    batch_events: int = 2048
    seed: int = 7


@dataclass(frozen=True)
class GenerationConfig:
    """Samples the analysis trains and tests on (``hepflow generate ttbar``)."""

    train_events: int = 100_000
    test_events: int = 20_000
    train_seed: int = 11
    test_seed: int = 99


@dataclass(frozen=True)
class NeutrinoConfig:
    """The whole ``analyses/ttbar_neutrino/config.toml``."""

    selection: NeutrinoSelection = field(default_factory=NeutrinoSelection)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None) -> NeutrinoConfig:
        """Read a config file (default: the one in ``analyses/ttbar_neutrino``); strict."""
        path = DEFAULT_CONFIG if path is None else Path(path)
        return from_dict(cls, read_toml(path), where=str(path))


# --- data ----------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """Tensors for training: target (n, 3) and context dict; counts of dropped events."""

    theta: np.ndarray
    context: dict[str, np.ndarray]
    n_read: int
    n_missing_truth: int
    n_non_finite: int


def load_training_data(directory: str | os.PathLike[str], *, max_events: int | None = None) -> TrainingData:
    """Read processed feature chunks; drop (count and log) events without truth or with NaN/inf.

    An event is dropped as non-finite when its truth or any conditioning feature (flat
    features, the ``max_jets`` leading jets) is NaN or infinite; the feature processor already
    excludes such events, so this guards against files written by other means. Nothing
    non-finite is returned, so nothing non-finite reaches a training batch.
    """
    from hepflow.outputs import read_parquet_dir

    columns = read_parquet_dir(directory)
    if "nu_px_true" not in columns.fields:
        raise InputError(f"{directory}: the feature files have no truth columns (nu_*_true); cannot train")
    if max_events is not None:
        columns = columns[:max_events]
    theta = truth_array(columns)
    ctx = context_arrays(columns)
    missing = np.isnan(theta).any(axis=1)  # None in the table: no W neutrino in the event
    finite = np.isfinite(ctx["flat"]).all(axis=1) & np.isfinite(ctx["jets"]).all(axis=(1, 2))
    finite &= np.isfinite(theta).all(axis=1) | missing
    non_finite = ~finite & ~missing
    keep = ~missing & finite
    if non_finite.any():
        log.warning(
            "%s: dropped %d of %d events with NaN or inf features or truth",
            directory,
            int(non_finite.sum()),
            len(columns),
        )
    return TrainingData(
        theta=theta[keep],
        context={k: v[keep] for k, v in ctx.items()},
        n_read=len(columns),
        n_missing_truth=int(missing.sum()),
        n_non_finite=int(non_finite.sum()),
    )


# --- models --------------------------------------------------------------------------------


def _summary(cfg: SummaryConfig) -> Any:
    from hepflow.flows.summary import Combined, MLPSummary, SetSummary

    return Combined(
        flat=MLPSummary(len(FLAT_FEATURES), cfg.flat_embedding, width=cfg.set_width),
        jets=SetSummary(
            len(JET_FEATURES),
            cfg.jet_embedding,
            width=cfg.set_width,
            heads=cfg.set_heads,
            blocks=cfg.set_blocks,
        ),
    )


_DEQUANTIZE = {"flat": [FLAT_FEATURES.index(k) for k in DISCRETE_FEATURES]}


def build_flow(
    cfg: FlowArchitecture, summary: SummaryConfig, *, theta_dim: int = len(TARGETS), seed: int | None = None
) -> Any:
    """The cINN for p(nu px, py, eta | event); with ``theta_dim``, for any other ``theta_dim``
    targets conditioned on the same detector-level event (the unfolding study uses it)."""
    from hepflow.flows.inn import ConditionalINN

    with seeded(seed):  # the summary network too: the same seed gives the same weights
        return ConditionalINN(
            theta_dim=theta_dim,
            summary=_summary(summary),
            **cfg.inn_options(),
            dequantize=_DEQUANTIZE,
            seed=seed,
        )


def build_regression(cfg: RegressionConfig, summary: SummaryConfig, *, seed: int | None = None) -> Any:
    """The feed-forward regression of (px, py, eta) with the same inputs."""
    from hepflow.flows.regression import Regressor

    with seeded(seed):
        return Regressor(
            theta_dim=len(TARGETS),
            summary=_summary(summary),
            width=cfg.width,
            layers=cfg.layers,
            dequantize=_DEQUANTIZE,
            seed=seed,
        )


# --- training ------------------------------------------------------------------------------


def train(
    data_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: NeutrinoConfig | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the cINN and the regression baseline on processed features; save both.

    Writes ``output_dir/flow`` and ``output_dir/regression`` (safetensors + JSON config with the
    feature specification), their training histories and loss plots, and ``training.json``.
    """
    import hepflow
    from hepflow.outputs import write_json

    cfg = config or NeutrinoConfig()
    tc = cfg.training
    data = load_training_data(data_dir, max_events=tc.max_events)
    if len(data.theta) < 100:
        raise InputError(f"{data_dir}: only {len(data.theta)} usable events with truth; need at least 100")
    out = Path(output_dir)
    summary: dict[str, Any] = {
        "events_read": data.n_read,
        "events_used": len(data.theta),
        "dropped_missing_truth": data.n_missing_truth,
        "dropped_non_finite": data.n_non_finite,
        "config": to_dict(cfg),
    }
    metadata = {"analysis": ANALYSIS, "features": FEATURE_SPEC, "selection": to_dict(cfg.selection)}
    fit_options = {**tc.fit_options(), "progress": progress, "resume": resume}
    for name, model in (
        ("flow", build_flow(cfg.flow, cfg.summary, seed=tc.seed)),
        ("regression", build_regression(cfg.regression, cfg.summary, seed=tc.seed)),
    ):
        t0 = time.perf_counter()
        history = hepflow.fit(
            model,
            data.theta,
            data.context,
            checkpoint_dir=out / "checkpoints" / name,
            output_dir=out / f"history_{name}",
            **fit_options,
        )
        hepflow.save_model(model.cpu(), out / name, metadata={**metadata, "model": name})
        summary[name] = {
            "seconds": time.perf_counter() - t0,
            "epochs": len(history.train_loss),
            "best_epoch": history.best_epoch,
            "best_val_loss": float(min(v for v in history.val_loss if v is not None)),
        }
    write_json(out / "training.json", summary)
    return summary


# --- inference -----------------------------------------------------------------------------


def load_models(model_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Load (flow, regression) from a training output directory, refusing a foreign model."""
    import hepflow

    models = []
    for name in ("flow", "regression"):
        path = Path(model_dir) / name
        if not path.is_dir():
            raise ModelError(f"{path} does not exist: train with `hepflow train neutrino` first")
        model = hepflow.load_model(path)
        meta = getattr(model, "metadata", {}) or {}
        if meta.get("analysis") != ANALYSIS:
            raise ModelError(f"{path} is a model of analysis {meta.get('analysis')!r}, not {ANALYSIS!r}")
        if meta.get("features") != FEATURE_SPEC:
            raise ModelError(
                f"{path} was trained on features {meta.get('features')}, this data has {FEATURE_SPEC}"
            )
        models.append(model.eval())
    return models[0], models[1]


@torch.no_grad()
def inference_columns(
    columns: ak.Array,
    flow: Any,
    regression: Any,
    *,
    samples: int = 256,
    batch_events: int = 2048,
    seed: int = 7,
) -> dict[str, Any]:
    """Posterior samples, summaries and baselines for every selected event.

    Returns a dict of columns: ``flow_px/py/pz`` (``samples`` per event), their ``_mode`` (the
    highest-density joint sample), ``_peak`` (the mode of each one-dimensional marginal,
    :func:`hepflow.inference.summaries.marginal_mode`), ``_median``, ``_mean``, ``_std``;
    ``quad_pz``, ``quad_pz_alt``, ``quad_is_complex``;
    ``ff_px/py/pz``; and the reconstructed leptonic W mass ``mw_flow``, ``mw_quad``, ``mw_ff``.
    """
    n = len(columns)
    ctx = context_arrays(columns)
    device = next(flow.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    px = np.empty((n, samples), np.float32)
    py = np.empty((n, samples), np.float32)
    pz = np.empty((n, samples), np.float32)
    mode = np.empty((n, 3), np.float32)
    peak = np.empty((n, 3), np.float32)
    ff = np.empty((n, 3), np.float32)
    for start in range(0, n, batch_events):
        sl = slice(start, min(start + batch_events, n))
        batch = {k: torch.as_tensor(v[sl], device=device) for k, v in ctx.items()}
        theta, logp = flow.sample(samples, batch, return_log_prob=True, generator=gen)
        theta = theta.float().cpu().numpy()
        logp = logp.float().cpu().numpy()
        pt = np.hypot(theta[..., 0], theta[..., 1])
        px[sl], py[sl], pz[sl] = theta[..., 0], theta[..., 1], pt * np.sinh(theta[..., 2])
        best = np.argmax(np.where(np.isnan(logp), -np.inf, logp), axis=1)
        rows = np.arange(sl.stop - sl.start)
        mode[sl] = np.stack([px[sl][rows, best], py[sl][rows, best], pz[sl][rows, best]], axis=1)
        peak[sl] = marginal_mode(np.stack([px[sl], py[sl], pz[sl]], axis=-1))
        ff[sl] = regression.predict(batch).float().cpu().numpy()
    out: dict[str, Any] = {"flow_px": px, "flow_py": py, "flow_pz": pz}
    for i, (name, values) in enumerate((("px", px), ("py", py), ("pz", pz))):
        out[f"flow_{name}_mode"] = mode[:, i]
        out[f"flow_{name}_peak"] = peak[:, i]
        out[f"flow_{name}_median"] = np.median(values, axis=1)
        out[f"flow_{name}_mean"] = values.mean(axis=1)
        out[f"flow_{name}_std"] = values.std(axis=1, ddof=1)
    ff_pt = np.hypot(ff[:, 0], ff[:, 1])
    out.update({"ff_px": ff[:, 0], "ff_py": ff[:, 1], "ff_pz": ff_pt * np.sinh(ff[:, 2])})

    lep = {k: ak.to_numpy(columns[f"lep_{k}"]).astype(np.float64) for k in ("px", "py", "pz", "e")}
    mass = lepton_mass(ak.to_numpy(columns.lep_flavor))
    met_px = ak.to_numpy(columns.met_px).astype(np.float64)
    met_py = ak.to_numpy(columns.met_py).astype(np.float64)
    quad = solve_neutrino_pz(lep["px"], lep["py"], lep["pz"], met_px, met_py, lep_mass=mass)
    out["quad_pz"] = np.asarray(quad.pz, np.float32)
    out["quad_pz_alt"] = np.asarray(quad.pz_alt, np.float32)
    out["quad_is_complex"] = np.asarray(quad.is_complex, bool)

    def w_mass(nu_px: np.ndarray, nu_py: np.ndarray, nu_pz: np.ndarray) -> np.ndarray:
        m = reconstruct_w_mass(lep["px"], lep["py"], lep["pz"], lep["e"], nu_px, nu_py, nu_pz, lep_mass=mass)
        return np.asarray(m, np.float32)

    out["mw_flow"] = w_mass(out["flow_px_mode"], out["flow_py_mode"], out["flow_pz_mode"])
    out["mw_quad"] = w_mass(met_px, met_py, out["quad_pz"])
    out["mw_ff"] = w_mass(out["ff_px"], out["ff_py"], out["ff_pz"])
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
