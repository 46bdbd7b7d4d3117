"""The flow engine: invertible blocks, support transforms, summary networks and the cINN.

One concept per module:

* :mod:`~hepflow.flows.coupling` -- conditional affine coupling (soft-clamped log-scale);
* :mod:`~hepflow.flows.spline` -- conditional rational-quadratic spline coupling;
* :mod:`~hepflow.flows.mixing` -- fixed random orthogonal / permutation mixing;
* :mod:`~hepflow.flows.actnorm` -- data-initialised ActNorm;
* :mod:`~hepflow.flows.constraints` -- box, simplex and momentum-bound support transforms;
* :mod:`~hepflow.flows.dequantization` -- uniform dequantization of integer context columns;
* :mod:`~hepflow.flows.standardization` -- standardisation buffers;
* :mod:`~hepflow.flows.summary` -- MLP, set (jets) and CNN (histograms) summary networks;
* :mod:`~hepflow.flows.inn` -- :class:`ConditionalINN`;
* :mod:`~hepflow.flows.ensemble` -- :class:`FlowEnsemble`, an equal-weight mixture of flows;
* :mod:`~hepflow.flows.regression` -- the :class:`Regressor` baseline;
* :mod:`~hepflow.flows.serialization` -- :func:`save_model` / :func:`load_model`.
"""

from __future__ import annotations

from hepflow.flows.actnorm import ActNorm
from hepflow.flows.base import MLP, Flow, Transform
from hepflow.flows.constraints import Box, MomentumBound, Simplex, Support
from hepflow.flows.coupling import AffineCoupling
from hepflow.flows.dequantization import Dequantize
from hepflow.flows.ensemble import FlowEnsemble
from hepflow.flows.inn import ConditionalINN
from hepflow.flows.mixing import Permutation, RandomOrthogonal
from hepflow.flows.regression import Regressor
from hepflow.flows.serialization import load_model, save_model
from hepflow.flows.spline import SplineCoupling
from hepflow.flows.standardization import Standardize
from hepflow.flows.summary import CNNSummary, Combined, IdentitySummary, MLPSummary, SetSummary, Summary

__all__ = [
    "MLP",
    "ActNorm",
    "AffineCoupling",
    "Box",
    "CNNSummary",
    "Combined",
    "ConditionalINN",
    "Dequantize",
    "Flow",
    "FlowEnsemble",
    "IdentitySummary",
    "MLPSummary",
    "MomentumBound",
    "Permutation",
    "RandomOrthogonal",
    "Regressor",
    "SetSummary",
    "Simplex",
    "SplineCoupling",
    "Standardize",
    "Summary",
    "Support",
    "Transform",
    "load_model",
    "save_model",
]
