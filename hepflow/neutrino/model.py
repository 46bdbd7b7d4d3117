"""The neutrino analysis's models: the cINN, the regression baseline, and loading them back.

Target: the neutrino (px, py, eta) as in nu-Flows (:data:`TARGETS`); pz = pT sinh(eta) is
derived per sample (:func:`neutrino_pz`). The flow's support is bounded by ``[support]``
(:class:`~hepflow.neutrino.config.SupportConfig`, a
:class:`~hepflow.flows.constraints.MomentumBound`): every posterior sample has
``|px|, |py| < pt_max`` and ``|pz| < pz_max``, well within the 6.5 TeV beam energy (the regression is not
bounded). Context: flat features (MET, lepton, multiplicities; the discrete ones dequantized)
and the set of up to ten jets (attention-pooling set encoder with a mask), see
:mod:`hepflow.neutrino.features`. Both models share the summary network layout
(:class:`~hepflow.neutrino.config.SummaryConfig`); the unfolding study builds its flow here too.

A saved model carries its analysis, feature specification and event selection in its metadata;
:func:`check_model` refuses any other (a cosmic model, a flow trained on other features) before
its weights are read (and a flow whose constraints differ from the ``support`` its metadata
records: :func:`check_support`), :func:`check_selection` refuses to apply it to events of another selection,
and :func:`load_models` returns the flow as a :class:`~hepflow.posterior.FlowPosterior`.

Example:
    >>> from hepflow.neutrino.config import NeutrinoConfig
    >>> cfg = NeutrinoConfig()
    >>> flow = build_flow(cfg.flow, cfg.summary, support=cfg.support, seed=1)
    >>> flow.theta_dim, len(FEATURE_SPEC["flat"]), TARGETS
    (3, 9, ('nu_px', 'nu_py', 'nu_eta'))
    >>> flow.support.constraints[0]
    MomentumBound(dims=[0, 1, 2], pt_max=2000.0, pz_max=5000.0)
    >>> check_model({"analysis": "cosmic"}, "m/flow")
    Traceback (most recent call last):
    ...
    hepflow.errors.ModelError: m/flow is a model of analysis 'cosmic', not 'ttbar_neutrino'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hepflow.config import json_plain, to_dict
from hepflow.errors import ConfigError, ModelError
from hepflow.flows.base import seeded
from hepflow.flows.config import FlowArchitecture
from hepflow.neutrino.config import RegressionConfig, SummaryConfig, SupportConfig
from hepflow.neutrino.features import DISCRETE_FEATURES, FLAT_FEATURES, JET_FEATURES
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.posterior import FlowPosterior, load_posterior

__all__ = [
    "ANALYSIS",
    "FEATURE_SPEC",
    "TARGETS",
    "build_flow",
    "build_regression",
    "check_model",
    "check_selection",
    "check_support",
    "load_models",
    "neutrino_pz",
    "support_config",
]

#: the ``analysis`` metadata of the neutrino models
ANALYSIS = "ttbar_neutrino"
#: what the flow and the regression estimate, in order
TARGETS: tuple[str, ...] = ("nu_px", "nu_py", "nu_eta")
#: the features a model was trained on (saved in its metadata, checked when loading)
FEATURE_SPEC: dict[str, list[str]] = {
    "flat": list(FLAT_FEATURES),
    "jets": list(JET_FEATURES),
    "targets": list(TARGETS),
}
#: the discrete flat features, dequantized in training
_DEQUANTIZE = {"flat": [FLAT_FEATURES.index(k) for k in DISCRETE_FEATURES]}


def summary_network(cfg: SummaryConfig, *, n_flat: int = len(FLAT_FEATURES)) -> Any:
    """The condition network: an MLP over the ``n_flat`` flat features and a set encoder over the
    jets."""
    from hepflow.flows.summary import Combined, MLPSummary, SetSummary

    return Combined(
        flat=MLPSummary(n_flat, cfg.flat_embedding, width=cfg.set_width),
        jets=SetSummary(
            len(JET_FEATURES),
            cfg.jet_embedding,
            width=cfg.set_width,
            heads=cfg.set_heads,
            blocks=cfg.set_blocks,
        ),
    )


def build_flow(
    cfg: FlowArchitecture,
    summary: SummaryConfig,
    *,
    theta_dim: int = len(TARGETS),
    support: SupportConfig | None = None,
    seed: int | None = None,
    extra_flat: Sequence[bool] = (),
) -> Any:
    """The cINN for p(nu px, py, eta | event), its samples bounded by ``support`` (the neutrino
    analysis passes its ``[support]``; None: unbounded); with ``theta_dim``, for any other
    ``theta_dim`` targets conditioned on the same detector-level event (the unfolding study uses
    it, without a support). ``extra_flat`` adds flat inputs after :data:`FLAT_FEATURES`, one per
    entry, True for a discrete one (dequantized in training), for studies of other conditioning
    inputs (``benchmarks/neutrino_inputs.py``)."""
    from hepflow.flows.inn import ConditionalINN

    constraint = None if support is None else support.constraint()
    if constraint is not None and theta_dim != len(TARGETS):
        raise ConfigError(f"[support] bounds the neutrino's {', '.join(TARGETS)}, not {theta_dim} targets")
    with seeded(seed):  # the summary network too: the same seed gives the same weights
        return ConditionalINN(
            theta_dim=theta_dim,
            summary=summary_network(summary, n_flat=len(FLAT_FEATURES) + len(extra_flat)),
            **cfg.inn_options(),
            constraints=[] if constraint is None else [constraint],
            dequantize={
                "flat": _DEQUANTIZE["flat"]
                + [len(FLAT_FEATURES) + i for i, discrete in enumerate(extra_flat) if discrete]
            },
            seed=seed,
        )


def neutrino_pz(px: Any, py: Any, eta: Any) -> Any:
    """``pz = pT sinh(eta)`` of (px, py, eta) arrays, in their dtype: how the inference columns
    derive pz from the flow's samples, and how :class:`~hepflow.flows.constraints.MomentumBound`
    bounds it.

    Example:
        >>> import numpy as np
        >>> float(neutrino_pz(np.float32(30.0), np.float32(40.0), np.float32(np.arcsinh(2.0))))
        100.0
    """
    import numpy as np

    return np.hypot(px, py) * np.sinh(eta)


def support_config(constraints: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``[support]`` table a flow's saved ``constraints`` amount to (``enabled = false`` for
    none): what :func:`check_support` compares with the metadata."""
    if not constraints:
        return {"enabled": False}
    if len(constraints) != 1 or constraints[0].get("type") != "MomentumBound":
        return {"enabled": True, "constraints": list(constraints)}
    c = constraints[0]
    return {"enabled": True, "pt_max": float(c["pt_max"]), "pz_max": float(c["pz_max"])}


def check_support(metadata: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse (:class:`~hepflow.errors.ModelError`) a saved flow whose constraints differ from the
    ``support`` its metadata records (an edited ``config.json``); a model saved before the
    support existed records none and is loaded as it is (unbounded samples)."""
    from hepflow.flows.serialization import read_config

    recorded = metadata.get("support")
    if recorded is None:
        return
    expected = (
        {"enabled": False}
        if not recorded.get("enabled", True)
        else {"enabled": True, "pt_max": float(recorded["pt_max"]), "pz_max": float(recorded["pz_max"])}
    )
    actual = support_config(read_config(path)["config"].get("constraints") or [])
    if actual != expected:
        raise ModelError(
            f"{path}: its metadata records [support] {expected}, its flow has {actual}: "
            "the model files do not belong together, train it again"
        )


def _check_flow(metadata: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    check_model(metadata, path)
    check_support(metadata, path)


def build_regression(cfg: RegressionConfig, summary: SummaryConfig, *, seed: int | None = None) -> Any:
    """The feed-forward regression of (px, py, eta) with the same inputs."""
    from hepflow.flows.regression import Regressor

    with seeded(seed):
        return Regressor(
            theta_dim=len(TARGETS),
            summary=summary_network(summary),
            width=cfg.width,
            layers=cfg.layers,
            dequantize=_DEQUANTIZE,
            seed=seed,
        )


def check_model(metadata: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse (:class:`~hepflow.errors.ModelError`) a model of another analysis or other features."""
    if metadata.get("analysis") != ANALYSIS:
        raise ModelError(f"{path} is a model of analysis {metadata.get('analysis')!r}, not {ANALYSIS!r}")
    if metadata.get("features") != FEATURE_SPEC:
        raise ModelError(
            f"{path} was trained on features {metadata.get('features')}, this data has {FEATURE_SPEC}"
        )


def check_selection(model_dir: str | os.PathLike[str], selection: NeutrinoSelection) -> None:
    """Refuse (:class:`~hepflow.errors.ModelError`) ``selection`` if it differs from the one the
    models in ``model_dir`` were trained with, naming the key and both values.

    Reads only the models' ``config.json`` (every member of an ensemble flow); a model that
    records no selection (saved by other means) is not checked.
    """
    from hepflow.flows.serialization import read_config
    from hepflow.posterior.loading import is_ensemble, member_names, model_path

    flow = model_path(Path(model_dir) / "flow")
    folders = [model_path(flow / m) for m in member_names(flow)] if is_ensemble(flow) else [flow]
    current = json_plain(to_dict(selection))
    for folder in [*folders, Path(model_dir) / "regression"]:
        recorded = (read_config(folder).get("metadata") or {}).get("selection")
        if recorded is None:
            continue
        for key in sorted(set(recorded) | set(current)):
            if recorded.get(key) != current.get(key):
                raise ModelError(
                    f"{folder} was trained on events selected with [selection] {key} = "
                    f"{recorded.get(key)!r}, this config has {current.get(key)!r}: use the model's "
                    "selection, or train a model for this one"
                )


def _check_targets(model: Any, path: Path) -> None:
    """Refuse a model that does not estimate the analysis's targets (a config with another theta_dim)."""
    if int(model.theta_dim) != len(TARGETS):
        raise ModelError(
            f"{path} estimates {int(model.theta_dim)} parameters, the neutrino analysis "
            f"{len(TARGETS)} ({', '.join(TARGETS)})"
        )


def _missing(path: Path) -> str:
    return f"{path} does not exist: train with `hepflow train neutrino` first"


def load_models(model_dir: str | os.PathLike[str]) -> tuple[FlowPosterior, Any]:
    """(flow posterior, regression) of a training output directory, refusing a foreign model.

    Each model's metadata is checked (:func:`check_model`, and for the flow
    :func:`check_support`) once, before its weights are read. A flow trained before
    ``[support]`` existed has no constraint: it loads, and its samples are unbounded as before.
    ``"pretrained"`` loads the model shipped with hepflow, checked against its model card
    (:mod:`hepflow.neutrino.pretrained`).
    """
    import hepflow
    from hepflow.flows.serialization import read_config
    from hepflow.neutrino.pretrained import resolve_model

    model_dir = resolve_model(model_dir)

    flow_dir, regression_dir = Path(model_dir) / "flow", Path(model_dir) / "regression"
    if not flow_dir.is_dir():
        raise ModelError(_missing(flow_dir))
    flow = load_posterior(flow_dir, check=_check_flow, missing=_missing(flow_dir))
    _check_targets(flow, flow_dir)
    if not regression_dir.is_dir():
        raise ModelError(_missing(regression_dir))
    check_model(read_config(regression_dir).get("metadata", {}) or {}, regression_dir)
    regression = hepflow.load_model(regression_dir).eval()
    _check_targets(regression, regression_dir)
    return flow, regression
