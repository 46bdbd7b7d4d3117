"""The posterior interface: ``sample`` and ``log_prob`` of ``p(theta | x)``, whatever sits behind it.

A :class:`Posterior` answers two questions for a batch of observations ``x``:

* :meth:`Posterior.sample`: ``n`` draws per observation, ``(n_obs, n, theta_dim)`` float64, and
  their log density ``(n_obs, n)`` where it comes with the draws (or when asked for);
* :meth:`Posterior.log_prob`: the log density of draws grouped by observation,
  ``(n_obs, n, theta_dim) -> (n_obs, n)``.

``x`` is whatever the posterior's ``features`` callable turns into the model context (an
analysis passes observations, or event columns), or the context itself when there is no such
callable. Behind the interface sit a trained flow (:class:`FlowPosterior`), an equal-weight
ensemble of flows (:class:`~hepflow.posterior.ensemble.EnsemblePosterior`), the rejection of a
posterior learned under a training proposal back to the prior
(:class:`~hepflow.posterior.rejection.RejectionPosterior`) and importance weights with a
likelihood (:class:`~hepflow.posterior.importance.ImportancePosterior`); every analysis, the
coffea sampler and the exporters use the same objects (in the spirit of sbi's posterior classes).

Example:
    >>> import torch
    >>> from hepflow.flows.inn import ConditionalINN
    >>> post = FlowPosterior(ConditionalINN(2, 3, depth=2, width=8, seed=1).eval(), parameters=("a", "b"))
    >>> x, lp = post.sample(5, torch.zeros(4, 3).numpy(), seed=0)
    >>> x.shape, x.dtype, lp.shape
    ((4, 5, 2), dtype('float64'), (4, 5))
    >>> bool(abs(post.log_prob(x, torch.zeros(4, 3).numpy()) - lp).max() < 1e-4)
    True
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hepflow.errors import ModelError

__all__ = ["FlowPosterior", "Posterior", "torch_generator"]

#: turns what a user has (observations, event columns) into the model's context
Features = Callable[[Any], Any]


class Posterior(abc.ABC):
    """``p(theta | x)`` for batches of observations.

    Attributes:
        parameters: the names of the ``theta_dim`` parameters, in order.
        metadata: what the posterior is of and how it was made (the model's saved metadata).
    """

    parameters: tuple[str, ...]
    metadata: dict[str, Any]

    @property
    def theta_dim(self) -> int:
        """Number of parameters."""
        return len(self.parameters)

    @abc.abstractmethod
    def sample(
        self,
        n: int,
        x: Any,
        *,
        seed: int | None = None,
        generator: Any = None,
        log_prob: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(samples (n_obs, n, theta_dim) float64, log_prob (n_obs, n) or None)``.

        ``seed`` (or a torch ``generator`` that successive calls share) makes the draws
        reproducible. The density is returned when ``log_prob`` is true, and also when it comes
        with the draws at no cost; None otherwise (:meth:`log_prob` computes it later).
        """

    @abc.abstractmethod
    def log_prob(self, theta: Any, x: Any) -> np.ndarray:
        """``log p(theta | x)`` of draws grouped by observation: (n_obs, n, theta_dim) -> (n_obs, n)."""


def torch_generator(seed: int | None, generator: Any = None) -> Any:
    """``generator`` if given, else a CPU torch generator seeded with ``seed`` (random for None)."""
    import torch

    if generator is not None:
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def _simplex_dims(model: Any) -> list[tuple[int, ...]]:
    """The parameter indices of every simplex constraint of a flow (or of an ensemble's first member)."""
    from hepflow.flows.constraints import Simplex

    flow = model.members[0] if hasattr(model, "members") else model
    support = getattr(flow, "support", None)
    return [c.dims for c in getattr(support, "constraints", ()) if isinstance(c, Simplex)]


class FlowPosterior(Posterior):
    """A trained conditional flow (:class:`~hepflow.flows.inn.ConditionalINN`) as a posterior.

    The draws come back as float64 with the components of every simplex constraint
    renormalised in double precision (they sum to one within 1e-12); the flow's support
    transforms keep every draw in the support. The density comes with the draws.

    Arguments:
        model: the flow, in eval mode (or a :class:`~hepflow.flows.ensemble.FlowEnsemble`, whose
            density costs every member at every draw: see
            :class:`~hepflow.posterior.ensemble.EnsemblePosterior`).
        parameters: the parameter names (default: ``metadata["parameters"]``, else ``theta_0..``).
        metadata: the model's metadata (default: ``model.metadata``).
        features: maps ``x`` to the model context (default: ``x`` is the context).
        simplices: the parameter indices of each simplex whose components are renormalised
            (default: the simplex constraints of the flow's support).
    """

    def __init__(
        self,
        model: Any,
        *,
        parameters: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        features: Features | None = None,
        simplices: Sequence[Sequence[int]] | None = None,
    ) -> None:
        from hepflow.flows.ensemble import FlowEnsemble

        self.model = model
        #: whether the density comes with the draws at no extra cost (not for a mixture)
        self.density_with_draws = not isinstance(model, FlowEnsemble)
        self.metadata = dict((getattr(model, "metadata", None) or {}) if metadata is None else metadata)
        names = parameters if parameters is not None else self.metadata.get("parameters")
        if names is None:
            names = [f"theta_{i}" for i in range(int(model.theta_dim))]
        if len(names) != int(model.theta_dim):
            raise ModelError(f"{len(names)} parameter names for a model of {model.theta_dim} parameters")
        self.parameters = tuple(names)
        self.features = features
        self.simplices = [tuple(s) for s in simplices] if simplices is not None else _simplex_dims(model)

    def context(self, x: Any) -> Any:
        """The model context of ``x``."""
        return x if self.features is None else self.features(x)

    def as_array(self, theta: Any) -> np.ndarray:
        """Draws of the flow (a tensor) as float64 numpy, simplex components renormalised."""
        x = theta.double().cpu().numpy()
        for dims in self.simplices:
            idx = list(dims)
            part = np.clip(x[..., idx], 0.0, None)
            x[..., idx] = part / part.sum(axis=-1, keepdims=True)
        return x

    def sample(
        self,
        n: int,
        x: Any,
        *,
        seed: int | None = None,
        generator: Any = None,
        log_prob: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.sample_context(
            n, self.context(x), generator=torch_generator(seed, generator), log_prob=log_prob
        )

    def sample_context(
        self, n: int, context: Any, *, generator: Any, log_prob: bool = False, temperature: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`sample` for a context that is built already (and a torch ``generator``).

        ``temperature`` (a single flow only): draws of the flow with a widened base
        distribution, and their density under it (:meth:`ConditionalINN.sample
        <hepflow.flows.inn.ConditionalINN.sample>`).
        """
        import torch

        tempered = {} if temperature == 1.0 else {"temperature": temperature}
        if tempered and not self.density_with_draws:
            raise ModelError("temperature needs a single flow, not an ensemble")
        with torch.no_grad():
            if not (log_prob or self.density_with_draws):
                return self.as_array(self.model.sample(n, context, generator=generator)), None
            theta, logp = self.model.sample(n, context, return_log_prob=True, generator=generator, **tempered)
        return self.as_array(theta), logp.double().cpu().numpy()

    def log_prob(self, theta: Any, x: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            lp = self.model.log_prob_grouped(theta, self.context(x))
        return lp.double().cpu().numpy()
