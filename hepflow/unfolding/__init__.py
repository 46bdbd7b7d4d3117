"""Unfolding: detector-level distributions back to the particle level.

* :mod:`~hepflow.unfolding.binning`: bin edges, weighted histograms, statistical replicas;
* :mod:`~hepflow.unfolding.response`: response matrix, efficiency and fake rates from simulation;
* :mod:`~hepflow.unfolding.ibu`: iterative Bayesian unfolding (D'Agostini), the baseline;
* :mod:`~hepflow.unfolding.cinn`: cINN unfolding (posterior sampling per measured event);
* :mod:`~hepflow.unfolding.result`: the unfolded spectrum with its uncertainties, and its
  comparison (bias, pulls, chi2) with a truth;
* :mod:`~hepflow.unfolding.observables`: the ttbar observables at both levels.

The ttbar study that uses them is :mod:`hepflow.unfolding.study`.
"""

from __future__ import annotations

from hepflow.unfolding.ibu import iterative_bayes, unfold_ibu
from hepflow.unfolding.response import FakeRate, Response, build_response, fake_rate
from hepflow.unfolding.result import Unfolded, chi2, compare

__all__ = [
    "FakeRate",
    "Response",
    "Unfolded",
    "build_response",
    "chi2",
    "compare",
    "fake_rate",
    "iterative_bayes",
    "unfold_ibu",
]
