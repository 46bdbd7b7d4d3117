"""The posterior layer: one ``sample`` / ``log_prob`` interface whatever sits behind it.

* :mod:`~hepflow.posterior.base`: :class:`Posterior` (the interface) and :class:`FlowPosterior`
  (a trained conditional flow, its support transforms and metadata, and the map from what a
  user has to the model context);
* :mod:`~hepflow.posterior.ensemble`: :class:`EnsemblePosterior`, the equal-weight mixture of
  flows of the same posterior;
* :mod:`~hepflow.posterior.rejection`: :class:`RejectionPosterior`, a posterior learned under a
  training proposal, corrected back to the prior;
* :mod:`~hepflow.posterior.importance`: importance weights with a likelihood and
  :class:`ImportancePosterior`;
* :mod:`~hepflow.posterior.loading`: model directories (one flow or an ensemble) loaded as a
  posterior, with the analysis's metadata check done once, there.

Every analysis (``hepflow.neutrino``, ``hepflow.cosmic``, ``hepflow.unfolding``) samples through
these classes; the exporters (:mod:`hepflow.inference.export`) take a posterior or its flow.
"""

from __future__ import annotations

from hepflow.posterior.base import FlowPosterior, Posterior
from hepflow.posterior.ensemble import EnsemblePosterior
from hepflow.posterior.importance import ImportancePosterior, ImportanceWeights, importance_weights
from hepflow.posterior.loading import (
    ENSEMBLE_FILE,
    check_ensemble_sources,
    is_ensemble,
    load_posterior,
    model_path,
    write_ensemble,
)
from hepflow.posterior.rejection import RejectionPosterior

__all__ = [
    "ENSEMBLE_FILE",
    "EnsemblePosterior",
    "FlowPosterior",
    "ImportancePosterior",
    "ImportanceWeights",
    "Posterior",
    "RejectionPosterior",
    "check_ensemble_sources",
    "importance_weights",
    "is_ensemble",
    "load_posterior",
    "model_path",
    "write_ensemble",
]
