"""The cosmic posterior ``p(theta | observation)`` behind the posterior layer's interface.

:func:`load_posterior` gives a :class:`~hepflow.posterior.Posterior` whose ``x`` is an
:class:`~hepflow.cosmic.Observation`, a sequence of them, or rows of features: a
:class:`~hepflow.posterior.FlowPosterior` (or :class:`~hepflow.posterior.EnsemblePosterior`) of the
trained cINN, wrapped in a :class:`~hepflow.posterior.RejectionPosterior` when the model was
trained on a ``[proposal]`` (its draws are corrected back to the prior). Samples are float64 with
the five fractions renormalised in double precision and every sample in the prior box.

:func:`importance_reweight` weights samples by ``L(x | theta) pi(theta) / q(theta | x)`` with the
analysis likelihood; :func:`sample_posterior` and :func:`posterior_log_prob` are the same
posterior for a loaded network (:func:`hepflow.cosmic.network.load_flow`).

Example (a trained model)::

    post = load_posterior("models/cosmic")
    samples, log_q = post.sample(4000, Observation.from_auger(), seed=7)   # (1, 4000, 7), (1, 4000)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from hepflow.cosmic.config import PARAMETERS, CosmicConfig
from hepflow.cosmic.features import Observations, observations_context
from hepflow.cosmic.network import binning_of, load_checked
from hepflow.cosmic.observation import Binning, Observation
from hepflow.errors import ModelError
from hepflow.posterior import (
    FlowPosterior,
    ImportancePosterior,
    ImportanceWeights,
    Posterior,
    RejectionPosterior,
    importance_weights,
)

__all__ = [
    "FRACTIONS",
    "as_posterior",
    "check_finite",
    "check_observation",
    "importance_posterior",
    "importance_reweight",
    "load_posterior",
    "log_target",
    "model_prior",
    "model_proposal",
    "posterior_log_prob",
    "sample_posterior",
]

#: the parameter indices of the five fractions (one simplex)
FRACTIONS = (2, 3, 4, 5, 6)


def check_finite(columns: Mapping[str, np.ndarray], what: str) -> None:
    """Refuse (:class:`~hepflow.errors.ModelError`) posterior columns with NaN or infinite values,
    naming the columns and counts, so that no such table is written.

    Example:
        >>> check_finite({"gamma": np.array([1.0, np.nan]), "f_H": np.array([0.2, 0.3])}, "m")
        Traceback (most recent call last):
        ...
        hepflow.errors.ModelError: m: NaN or infinite values in gamma (1 of 2); nothing written
    """
    bad = {name: int(np.count_nonzero(~np.isfinite(v))) for name, v in columns.items()}
    if any(bad.values()):
        listed = ", ".join(f"{name} ({n} of {len(columns[name])})" for name, n in bad.items() if n)
        raise ModelError(f"{what}: NaN or infinite values in {listed}; nothing written")


def check_observation(
    metadata: Mapping[str, Any], observation: Observation, where: object, *, name: str | None = None
) -> None:
    """Refuse (:class:`~hepflow.errors.ModelError`) a model refined for one observation
    (``hepflow refine cosmic``) applied to another: its posterior is trained for that one alone.

    Example:
        >>> from hepflow.cosmic.observation import Binning
        >>> b = Binning.auger()
        >>> obs = Observation(b, np.ones(b.shape[0]), np.ones(b.shape[1:]))
        >>> check_observation({}, obs, "models/cosmic")  # an amortized model: any observation
        >>> check_observation({"refinement": {"observation": "auger", "observation_digest": "0"}},
        ...                   obs, "m", name="mock.root")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hepflow.errors.ModelError: m was refined for the observation auger ... for mock.root; ...
    """
    ref = metadata.get("refinement")
    if not ref:
        return
    if ref.get("observation_digest") != observation.digest():
        raise ModelError(
            f"{where} was refined for the observation {ref.get('observation')} and is no posterior "
            f"for {name or observation.source}; use the amortized model it was refined from, or refine it "
            "for this observation"
        )


def model_prior(metadata: dict[str, Any]) -> Any:
    """The :class:`~hepflow.cosmic.Prior` a model was trained under (from its metadata)."""
    from hepflow.cosmic import Prior

    p = metadata["prior"]
    return Prior(gamma=tuple(p["gamma"]), lg_rcut=tuple(p["lg_rcut"]), concentration=p["concentration"])


def model_proposal(metadata: dict[str, Any]) -> Any:
    """The :class:`~hepflow.cosmic.Proposal` a model was trained on, None for the prior."""
    from hepflow.cosmic import Proposal

    p = metadata.get("proposal")
    if p is None:
        return None
    return Proposal(model_prior(metadata), prior_weight=p["prior_weight"], concentration=p["concentration"])


def as_posterior(model: Any, *, max_draws: int = 1000) -> Posterior:
    """The posterior of a loaded cosmic network (with ``metadata`` and ``binning``), or ``model``
    itself when it is a :class:`~hepflow.posterior.Posterior` already."""
    if isinstance(model, Posterior):
        return model
    return _wrap(
        FlowPosterior(model, parameters=PARAMETERS, metadata=model.metadata), model.binning, max_draws
    )


def _wrap(post: FlowPosterior, binning: Binning, max_draws: int) -> Posterior:
    post.features = partial(observations_context, binning=binning, summary=post.metadata["summary"])
    post.simplices = [FRACTIONS]
    post.binning = binning
    proposal = model_proposal(post.metadata)
    if proposal is None:
        return post
    corrected = RejectionPosterior(
        post, proposal.log_acceptance, initial_rate=proposal.prior_weight, max_draws=max_draws
    )
    corrected.binning = binning
    return corrected


def load_posterior(
    model_dir: str | os.PathLike[str], *, config: CosmicConfig | None = None, max_draws: int = 1000
) -> Posterior:
    """The posterior of a trained cosmic model directory (one cINN or an ensemble).

    With ``config`` the model must have been trained with the config's prior and forward model;
    a model of another analysis or trained on other features is refused
    (:func:`hepflow.cosmic.network.check_model`, run once per model before its weights are read).
    ``max_draws``: see :class:`~hepflow.posterior.RejectionPosterior` (proposal-trained models).
    The posterior carries the observations' ``binning``.
    """
    post = load_checked(model_dir, config=config)
    return _wrap(post, binning_of(post.metadata, model_dir), max_draws)


def sample_posterior(
    model: Any,
    observations: Observations,
    n: int,
    *,
    seed: int = 7,
    log_prob: bool = True,
    max_draws: int = 1000,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(samples (n_obs, n, 7) float64, log_prob (n_obs, n))`` for observations or feature rows.

    ``model``: a cosmic posterior (:func:`load_posterior`) or a loaded network
    (:func:`~hepflow.cosmic.network.load_flow`). ``log_prob=False`` skips the density where it
    costs extra (an ensemble evaluates every member at every sample) and returns None for it
    there; a single flow's sampling pass gives it at no cost, so it is returned anyway. A model
    trained on a proposal gives the density of its corrected draws (see
    :class:`~hepflow.posterior.RejectionPosterior`).
    """
    return as_posterior(model, max_draws=max_draws).sample(n, observations, seed=seed, log_prob=log_prob)


def posterior_log_prob(model: Any, observations: Observations, samples: np.ndarray) -> np.ndarray:
    """The cINN's ``log q(theta | x)`` (n_obs, n) of samples (n_obs, n, 7) grouped by observation.

    For the samples of :func:`sample_posterior` with ``log_prob=False``; a model trained on a
    ``[proposal]`` is refused (the density of its corrected draws comes with the draws).
    """
    return as_posterior(model).log_prob(samples, observations)


def log_target(
    theta: np.ndarray,
    observation: Observation,
    *,
    model: Any,
    prior: Any,
    record: dict[str, Any] | None = None,
) -> np.ndarray:
    """``log L(x | theta) + log pi(theta)`` of samples (n, 7) for one observation (the exact
    posterior's unnormalised log density; ``-inf`` outside the prior support).

    With a forward model that has systematics the likelihood is the marginal one,
    ``p(x | theta) = integral L(x | theta, nu) p(nu) dnu``, estimated per sample
    (:class:`hepflow.cosmic.marginal.MarginalLikelihood`): the posterior a cINN trained with
    ``[systematics]`` approximates; ``record``, when given, receives the estimate's diagnostics
    (:meth:`~hepflow.cosmic.marginal.MarginalEstimate.summary`)."""
    from hepflow.cosmic import Likelihood

    like = Likelihood(observation, model=model)
    with np.errstate(divide="ignore"):
        if getattr(model, "systematics", None) is not None:
            from hepflow.cosmic.marginal import MarginalLikelihood

            est = MarginalLikelihood(like).estimate(theta)
            if record is not None:
                record.update(est.summary())
            return est.log_likelihood + prior.log_prob(theta)
        return like(theta) + prior.log_prob(theta)


def importance_posterior(
    posterior: Posterior, *, model: Any, prior: Any, record: dict[str, Any] | None = None
) -> ImportancePosterior:
    """The cINN posterior importance-weighted to the exact posterior of the analysis likelihood.

    ``model`` the forward model (:class:`hepflow.cosmic.ForwardModel`) and ``prior`` the prior the
    MCMC uses. The weighted (or resampled) samples follow the exact posterior when the cINN covers
    it; the effective sample size measures how close the cINN was
    (:mod:`hepflow.posterior.importance`). Costs one vectorised likelihood call per sample, 111 to
    141 with systematics (the nuisances integrated out, :func:`log_target`; ``record``
    receives that estimate's diagnostics).
    """
    return ImportancePosterior(posterior, partial(log_target, model=model, prior=prior, record=record))


def importance_reweight(
    samples: np.ndarray,
    log_q: np.ndarray,
    observation: Observation,
    *,
    model: Any,
    prior: Any,
    record: dict[str, Any] | None = None,
) -> ImportanceWeights:
    """Importance weights ``L(x | theta) pi(theta) / q(theta | x)`` of cINN samples (n, 7) with
    density ``log_q`` (n,) of one observation (see :func:`importance_posterior`)."""
    return importance_weights(
        log_target(samples, observation, model=model, prior=prior, record=record), log_q
    )
