"""Cosmic-ray source inference: forward model of the Auger spectrum and Xmax distributions.

One concept per module. The analysis (``hepflow generate|process|train|infer|mcmc|compare|report
cosmic``): :mod:`~hepflow.cosmic.config` (the shipped ``config.toml``, every section),
:mod:`~hepflow.cosmic.generate` (pseudo-experiments, shower lists, observation files),
:mod:`~hepflow.cosmic.processor` (coffea processors), :mod:`~hepflow.cosmic.features` (features
and the model context), :mod:`~hepflow.cosmic.data` (training data), :mod:`~hepflow.cosmic.network`
(the cINN, its metadata and check, ensembles), :mod:`~hepflow.cosmic.posterior` (sampling,
rejection to the prior, importance weights), :mod:`~hepflow.cosmic.pipeline` (train, infer),
:mod:`~hepflow.cosmic.mcmc` (the baseline), :mod:`~hepflow.cosmic.compare` (cINN against MCMC,
calibration), :mod:`~hepflow.cosmic.ppc` (posterior predictive model check),
:mod:`~hepflow.cosmic.verdict` (cINN and MCMC: agree, or which to use) and
:mod:`~hepflow.cosmic.report`. The forward model:

* :mod:`~hepflow.cosmic.tables`: CRPropa-3 propagation tables shipped by astrotools;
* :mod:`~hepflow.cosmic.source`: injection spectrum (power law, rigidity cut-off, 5 species);
* :mod:`~hepflow.cosmic.propagation`: source-distance model and propagation matrix;
* :mod:`~hepflow.cosmic.xmax`: generalized Gumbel Xmax parametrisation;
* :mod:`~hepflow.cosmic.auger`: published Auger data (spectrum 2020, Xmax 2014, detector response);
* :mod:`~hepflow.cosmic.observation`: binning and binned observations;
* :mod:`~hepflow.cosmic.model`: the forward model (expected counts, simulator);
* :mod:`~hepflow.cosmic.priors`: prior on the 7 parameters;
* :mod:`~hepflow.cosmic.likelihood`: combined-fit deviance and log-likelihood.

Example:
    >>> from hepflow.cosmic import ForwardModel, Likelihood, Observation, Prior
    >>> obs = Observation.from_auger()                     # E > 10^18.7 eV
    >>> model = ForwardModel(obs, hadronic_model="EPOS-LHC")
    >>> theta = Prior().sample(4096, rng=0)                # (n, 7)
    >>> sims = model.simulate(theta, rng=1)                # spectrum (n, 15), xmax (n, 9, 100)
    >>> loglike = Likelihood(obs, model=model)(theta)      # (n,)

See docs/cosmic_model.md for every modelling choice.
"""

from __future__ import annotations

from hepflow.cosmic.likelihood import Deviance, Likelihood, multinomial_deviance, poisson_deviance
from hepflow.cosmic.model import ForwardModel
from hepflow.cosmic.observation import Binning, Observation
from hepflow.cosmic.priors import Prior, Proposal
from hepflow.cosmic.source import PARAMETER_NAMES, SPECIES
from hepflow.cosmic.systematics import NUISANCE_NAMES, Systematics

__all__ = [
    "NUISANCE_NAMES",
    "PARAMETER_NAMES",
    "SPECIES",
    "Binning",
    "Deviance",
    "ForwardModel",
    "Likelihood",
    "Observation",
    "Prior",
    "Proposal",
    "Systematics",
    "multinomial_deviance",
    "poisson_deviance",
]
