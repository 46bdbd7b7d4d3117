"""A posterior learned under a training proposal, corrected back to the prior by rejection.

A flow trained on simulations whose parameters come from a proposal ``r(theta)`` instead of the
prior ``pi(theta)`` learns ``q_r(theta | x) ∝ L(x | theta) r(theta)``. Accepting its draws with
probability ``a(theta) = lambda pi(theta) / r(theta) <= 1`` gives exact draws of the posterior
under the prior; the density of the accepted draws is ``q_r(theta | x) a(theta) / A(x)``, with
``A(x)`` the observation's acceptance rate (estimated from the draws). For a defensive mixture
``r = lambda pi + (1 - lambda) g`` the bound holds everywhere (:class:`hepflow.cosmic.Proposal`).

Example:
    >>> import numpy as np
    >>> from hepflow.flows.inn import ConditionalINN
    >>> base = FlowPosterior(ConditionalINN(1, 2, depth=2, width=8, seed=0).eval())
    >>> half = RejectionPosterior(base, lambda t: np.where(t[:, 0] > 0, 0.0, -np.inf), initial_rate=0.5)
    >>> x, lp = half.sample(50, np.zeros((3, 2), np.float32), seed=1)
    >>> bool((x > 0).all()), x.shape, lp.shape
    (True, (3, 50, 1), (3, 50))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hepflow.errors import ModelError
from hepflow.posterior.base import FlowPosterior, Posterior, torch_generator

__all__ = ["RejectionPosterior"]


class RejectionPosterior(Posterior):
    """Draws of ``base`` accepted with probability ``exp(log_acceptance(theta))``.

    Arguments:
        base: the flow posterior under the training proposal.
        log_acceptance: ``(m, theta_dim) -> (m,)`` log acceptance probability (<= 0).
        initial_rate: the expected acceptance rate before any draw (sizes the first round; for a
            defensive mixture its prior weight ``lambda``).
        max_draws: an observation whose ``max_draws * n`` draws do not give ``n`` accepted ones
            is refused with its rate: its posterior lies where the proposal puts almost all the mass.
    """

    def __init__(
        self,
        base: FlowPosterior,
        log_acceptance: Callable[[np.ndarray], np.ndarray],
        *,
        initial_rate: float,
        max_draws: int = 1000,
    ) -> None:
        if not 0.0 < initial_rate <= 1.0:
            raise ModelError(f"initial_rate must lie in (0, 1], got {initial_rate}")
        self.base = base
        self.log_acceptance = log_acceptance
        self.initial_rate = float(initial_rate)
        self.max_draws = int(max_draws)
        self.parameters = base.parameters
        self.metadata = base.metadata

    def sample(
        self,
        n: int,
        x: Any,
        *,
        seed: int | None = None,
        generator: Any = None,
        log_prob: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Accepted draws and their density (always: the acceptance rate comes with the draws)."""
        from hepflow.flows.context import index_context

        ctx = self.base.context(x)
        gen = torch_generator(seed, generator)
        rng = np.random.default_rng(seed)
        n_obs = len(next(iter(ctx.values()))) if isinstance(ctx, dict) else len(ctx)
        samples = np.empty((n_obs, n, self.theta_dim))
        log_q = np.empty((n_obs, n))
        filled = np.zeros(n_obs, dtype=np.int64)
        drawn = np.zeros(n_obs, dtype=np.int64)
        accepted = np.zeros(n_obs, dtype=np.int64)
        todo = np.arange(n_obs)
        while todo.size:
            need = n - filled[todo]
            # acceptance so far (the initial rate before the first round)
            rate = np.where(
                drawn[todo] > 0,
                np.maximum(accepted[todo], 1) / np.maximum(drawn[todo], 1),
                self.initial_rate,
            )
            m = int(np.ceil(((need + 4 * np.sqrt(need) + 8) / rate).max()))
            m = min(m, max(n, 2**16 // max(todo.size, 1)) * 8)  # bound the memory of one round
            sub = index_context(ctx, todo) if isinstance(ctx, dict) else ctx[todo]
            draws, lq = self.base.sample_context(m, sub, generator=gen, log_prob=True)
            log_acc = self.log_acceptance(draws.reshape(-1, draws.shape[-1])).reshape(lq.shape)
            keep = np.log(rng.random(lq.shape)) < log_acc
            for j, i in enumerate(todo):
                k = np.flatnonzero(keep[j])[: n - filled[i]]
                samples[i, filled[i] : filled[i] + k.size] = draws[j, k]
                log_q[i, filled[i] : filled[i] + k.size] = lq[j, k] + log_acc[j, k]
                filled[i] += k.size
            drawn[todo] += m
            accepted[todo] += keep.sum(axis=1)
            todo = todo[filled[todo] < n]
            stuck = todo[drawn[todo] >= self.max_draws * n]
            if stuck.size:
                i = int(stuck[0])
                raise ModelError(
                    f"observation {i}: only {accepted[i]} of {drawn[i]} cINN draws pass the correction "
                    f"from the training proposal to the prior (rate {accepted[i] / drawn[i]:.2g}): the "
                    "posterior lies where the proposal puts almost all the training mass"
                )
        return samples, log_q - np.log(accepted / drawn)[:, None]

    def log_prob(self, theta: Any, x: Any) -> np.ndarray:
        """Refused: the normalisation (the acceptance rate) comes with the draws of :meth:`sample`."""
        raise ModelError(
            "the density of a proposal-trained model's corrected draws comes with its samples "
            "(RejectionPosterior.sample)"
        )
