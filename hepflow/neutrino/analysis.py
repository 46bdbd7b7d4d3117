"""The neutrino analysis in one namespace (its parts live in modules of their own).

* :mod:`~hepflow.neutrino.config`: the settings (:class:`NeutrinoConfig` and its tables);
* :mod:`~hepflow.neutrino.model`: the cINN and regression builders and loading them back;
* :mod:`~hepflow.neutrino.data`: the training data from processed features;
* :mod:`~hepflow.neutrino.inference`: the per-event posterior and baseline columns;
* :mod:`~hepflow.neutrino.pipeline`: one function per command (process, train, infer, report).

Target: the neutrino (px, py, eta) as in nu-Flows; pz = pT sinh(eta) is derived per sample.
Context: flat features (MET, lepton, multiplicities; the discrete ones dequantized) and the
set of up to ten jets (attention-pooling set encoder with a mask).
"""

from __future__ import annotations

from hepflow.neutrino.config import (
    DEFAULT_CONFIG,
    FlowConfig,
    GenerationConfig,
    InferenceConfig,
    NeutrinoConfig,
    RegressionConfig,
    SummaryConfig,
    TrainingConfig,
)
from hepflow.neutrino.data import TrainingData, load_training_data
from hepflow.neutrino.inference import inference_columns
from hepflow.neutrino.model import (
    ANALYSIS,
    FEATURE_SPEC,
    TARGETS,
    build_flow,
    build_regression,
    check_model,
    load_models,
)
from hepflow.neutrino.pipeline import train
from hepflow.neutrino.selection import NeutrinoSelection

__all__ = [
    "ANALYSIS",
    "DEFAULT_CONFIG",
    "FEATURE_SPEC",
    "TARGETS",
    "FlowConfig",
    "GenerationConfig",
    "InferenceConfig",
    "NeutrinoConfig",
    "NeutrinoSelection",
    "RegressionConfig",
    "SummaryConfig",
    "TrainingConfig",
    "TrainingData",
    "build_flow",
    "build_regression",
    "check_model",
    "inference_columns",
    "load_models",
    "load_training_data",
    "train",
]
