"""hepflow: conditional invertible neural networks for HEP inference.

The data path is visible in the package layout::

    NanoAOD --> hepflow.<analysis>.processor --> hepflow.<analysis>.features --> hepflow.flows
            --> hepflow.training --> hepflow.posterior --> hepflow.<analysis>.pipeline --> hepflow.outputs

(``<analysis>``: ``neutrino``, ``cosmic``, ``unfolding``; docs/architecture.md)

The engine is imported lazily so that ``import hepflow`` (and the command line) stays fast::

    import hepflow
    model = hepflow.ConditionalINN(theta_dim=2, context_dim=3)
    history = hepflow.fit(model, theta, context, epochs=50)
    samples = model.sample(1000, context_obs)      # (n_obs, 1000, theta_dim)
    logp = model.log_prob(theta, context)          # (batch,)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "ConditionalINN": "hepflow.flows.inn",
    "fit": "hepflow.training.fit",
    "load_model": "hepflow.flows.serialization",
    "save_model": "hepflow.flows.serialization",
    "posterior_summary": "hepflow.inference.summaries",
}

__all__ = ["ConditionalINN", "__version__", "fit", "load_model", "posterior_summary", "save_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hepflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
