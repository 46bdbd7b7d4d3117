"""An equal-weight ensemble of flow posteriors of the same ``p(theta | x)``.

The members must be posteriors of the same thing: every metadata key except the per-member
ones (``training``, how each member was trained) must agree. The mixture
(:class:`~hepflow.flows.ensemble.FlowEnsemble`) draws ``n / K`` samples from every member; its
density needs every member at every draw, so :meth:`EnsemblePosterior.sample` computes it only
when asked for.

Example:
    >>> import numpy as np
    >>> from hepflow.flows.inn import ConditionalINN
    >>> members = [FlowPosterior(ConditionalINN(2, 3, depth=2, width=8, seed=s).eval()) for s in (1, 2)]
    >>> ens = EnsemblePosterior(members)
    >>> x, lp = ens.sample(6, np.zeros((4, 3), np.float32), seed=0)
    >>> x.shape, lp is None
    ((4, 6, 2), True)
    >>> ens.log_prob(x, np.zeros((4, 3), np.float32)).shape
    (4, 6)
"""

from __future__ import annotations

from collections.abc import Sequence

from hepflow.config import json_plain
from hepflow.errors import ModelError
from hepflow.posterior.base import FlowPosterior

__all__ = ["PER_MEMBER_METADATA", "EnsemblePosterior"]

#: metadata that may differ between members (how each was trained, the summary of its own
#: training sample: hepflow.posterior.shift)
PER_MEMBER_METADATA = ("training", "training_summary")


class EnsemblePosterior(FlowPosterior):
    """The equal-weight mixture of two or more :class:`FlowPosterior` of the same posterior.

    Arguments:
        members: the member posteriors (their ``features`` and parameters are the first one's).
        where: names the ensemble in errors (e.g. its directory).

    Raises :class:`~hepflow.errors.ModelError` when the members' metadata differ (naming the
    keys) or when there are fewer than two.
    """

    def __init__(self, members: Sequence[FlowPosterior], *, where: str = "ensemble") -> None:
        from hepflow.flows.ensemble import FlowEnsemble

        if len(members) < 2:
            raise ModelError(f"{where}: an ensemble needs at least two models, got {len(members)}")
        first = members[0].metadata
        for i, m in enumerate(members[1:], start=1):
            keys = (first.keys() | m.metadata.keys()) - set(PER_MEMBER_METADATA)
            differ = [k for k in sorted(keys) if json_plain(m.metadata.get(k)) != json_plain(first.get(k))]
            if differ:
                raise ModelError(f"{where}: member {i} differs from member 0 in {', '.join(differ)}")
        metadata = {k: v for k, v in first.items() if k not in PER_MEMBER_METADATA}
        metadata["members"] = [m.metadata.get("training") for m in members]
        super().__init__(
            FlowEnsemble([m.model for m in members]).eval(),
            parameters=members[0].parameters,
            metadata=metadata,
            features=members[0].features,
            simplices=members[0].simplices,
        )
        self.members = list(members)
