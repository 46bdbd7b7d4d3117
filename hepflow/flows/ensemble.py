"""Deep ensembles of conditional flows: an equal-weight mixture of posteriors.

Flows trained for the same posterior from different initialisations (or on other data, or with
other coordinates) make partly independent errors; their mixture
``q(theta | x) = (1/K) sum_k q_k(theta | x)`` averages the errors of the means and is more
conservative than a single member (Lakshminarayanan et al. 2017; for simulation-based
inference, Hermans et al. 2022, "A trust crisis in simulation-based inference?").

:meth:`FlowEnsemble.sample` draws ``n / K`` samples from every member, so ``n`` samples cost
about what ``n`` samples of one member cost; the mixture density of the samples, which needs
every member at every sample, is computed only when asked for (``return_log_prob``).

Example:
    >>> import torch
    >>> from hepflow.flows.inn import ConditionalINN
    >>> members = [ConditionalINN(2, 3, depth=2, width=16, seed=s).eval() for s in (1, 2)]
    >>> ens = FlowEnsemble(members)
    >>> ctx = torch.randn(4, 3)
    >>> x, lp = ens.sample(10, ctx, return_log_prob=True, generator=torch.Generator().manual_seed(0))
    >>> x.shape, lp.shape
    (torch.Size([4, 10, 2]), torch.Size([4, 10]))
    >>> bool(torch.allclose(lp, ens.log_prob_grouped(x, ctx), atol=1e-5))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hepflow.errors import ModelError

__all__ = ["FlowEnsemble"]


class FlowEnsemble(nn.Module):
    """Equal-weight mixture of conditional flows with the same parameters and context.

    Arguments:
        members: two or more flows (:class:`~hepflow.flows.inn.ConditionalINN`) with the same
            ``theta_dim`` and context keys.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ModelError(f"an ensemble needs at least two members, got {len(members)}")
        dims = {int(m.theta_dim) for m in members}
        keys = {tuple(m.context_keys) for m in members}
        if len(dims) != 1 or len(keys) != 1:
            raise ModelError(
                f"ensemble members must share theta_dim and context keys, got theta_dim {sorted(dims)} "
                f"and context keys {sorted(keys)}"
            )
        self.members = nn.ModuleList(members)
        self.theta_dim = dims.pop()
        self.context_keys = list(keys.pop())

    def __len__(self) -> int:
        return len(self.members)

    def counts(self, n: int) -> list[int]:
        """Samples per member for ``n`` in all: ``n // K`` each, the remainder to the first ones."""
        k = len(self.members)
        return [n // k + (1 if i < n % k else 0) for i in range(k)]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        context: Any = None,
        *,
        return_log_prob: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``n`` mixture samples per observation, ``(n_obs, n, theta_dim)``, in random order.

        With ``return_log_prob`` also the mixture's ``log q`` of every sample, ``(n_obs, n)``.
        """
        parts = [
            m.sample(k, context, generator=generator)
            for m, k in zip(self.members, self.counts(n), strict=True)
            if k > 0
        ]
        theta = torch.cat(parts, dim=-2)
        theta = theta[..., torch.randperm(n, generator=generator), :]
        if not return_log_prob:
            return theta
        return theta, self.log_prob_grouped(theta, context)

    @torch.no_grad()
    def log_prob_grouped(self, theta: Any, context: Any = None) -> Tensor:
        """Mixture ``log q`` of samples grouped by observation, ``(n_obs, n, d)`` -> ``(n_obs, n)``."""
        lps = torch.stack([m.log_prob_grouped(theta, context) for m in self.members])
        return torch.logsumexp(lps, dim=0) - math.log(len(self.members))

    def log_prob(self, theta: Any, context: Any = None) -> Tensor:
        """Mixture ``log q(theta_i | context_i)`` per event, shape ``(batch,)``."""
        lps = torch.stack([m.log_prob(theta, context) for m in self.members])
        return torch.logsumexp(lps, dim=0) - math.log(len(self.members))

    def forward(self, theta: Any, context: Any = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(theta, context)
