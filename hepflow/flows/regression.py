"""A feed-forward regression baseline sharing the context pipeline of the flows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError, InputError
from hepflow.flows.base import MLP, seeded
from hepflow.flows.constraints import Constraint, Support, constraint_from_config
from hepflow.flows.context import Context, ContextEncoder, as_tensor, batch_size_of
from hepflow.flows.standardization import Standardize
from hepflow.flows.summary import MLPSummary, Summary, summary_from_config

__all__ = ["Regressor"]


class Regressor(nn.Module):
    """Point estimate ``theta_hat(context)``: an MLP on the summary-network embedding.

    Trained by :func:`hepflow.fit` like a flow: ``training_loss`` is the mean squared error in
    standardised (and, with constraints, unconstrained) target units, so every parameter
    weighs the same. :meth:`predict` returns estimates in user units inside the support.

    Example:
        >>> import torch, hepflow
        >>> reg = Regressor(theta_dim=2, context_dim=3, width=16)
        >>> theta, ctx = torch.randn(256, 2), torch.randn(256, 3)
        >>> _ = hepflow.fit(reg, theta, ctx, epochs=1, progress=False)
        >>> reg.predict(ctx[:5]).shape
        torch.Size([5, 2])
    """

    #: what :meth:`training_loss` measures (the loss axis of :func:`hepflow.training.plot_history`)
    loss_name = "mean squared error [standardised units]"

    def __init__(
        self,
        theta_dim: int,
        context_dim: int | None = None,
        *,
        width: int = 128,
        layers: int = 3,
        activation: str = "relu",
        summary: Summary | None = None,
        embedding_dim: int = 32,
        constraints: Sequence[Constraint] = (),
        dequantize: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if (summary is None) == (context_dim is None):
            raise ConfigError("a Regressor needs exactly one of context_dim or summary=")
        self.theta_dim = theta_dim
        self.metadata: dict[str, Any] = {}
        self._hparams: dict[str, Any] = {
            "theta_dim": theta_dim,
            "width": width,
            "layers": layers,
            "activation": activation,
            "embedding_dim": embedding_dim,
            "seed": seed,
        }
        with seeded(seed):
            if summary is None:
                summary = MLPSummary(context_dim, embedding_dim, width=width, activation=activation)
            self.context_encoder = ContextEncoder(summary, dequantize=dequantize)
            self.support = Support(theta_dim, list(constraints))
            self.theta_scaler = Standardize((self.support.out_features,))
            self.head = MLP(
                summary.output_dim, self.support.out_features, width=width, layers=layers, act=activation
            )
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))

    def config(self) -> dict[str, Any]:
        cfg = dict(self._hparams)
        cfg["summary"] = self.context_encoder.summary.config()
        cfg["dequantize"] = self.context_encoder.dequantize_config
        cfg["constraints"] = [c.config() for c in self.support.constraints]
        return cfg

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Regressor:
        cfg = dict(cfg)
        summary = summary_from_config(cfg.pop("summary"))
        constraints = [constraint_from_config(c) for c in cfg.pop("constraints", [])]
        return cls(cfg.pop("theta_dim"), summary=summary, constraints=constraints, **cfg)

    @property
    def context_keys(self) -> list[str]:
        return list(self.context_encoder.keys)

    def _theta(self, theta: Any) -> Tensor:
        p = self.theta_scaler.mean
        t = as_tensor(theta, dtype=p.dtype, device=p.device)
        if t.dim() == 1 and self.theta_dim == 1:
            t = t.unsqueeze(1)
        if t.dim() != 2 or t.shape[1] != self.theta_dim:
            raise InputError(f"theta has shape {tuple(t.shape)}; expected (batch, {self.theta_dim})")
        return t

    def _context(self, context: Any) -> dict[str, Tensor]:
        if context is None:
            raise InputError(f"the regressor needs a context with keys {self.context_keys}")
        p = self.theta_scaler.mean
        return self.context_encoder.as_dict(context, dtype=p.dtype, device=p.device)

    def _predict_std(self, ctx: Mapping[str, Tensor]) -> Tensor:
        return self.head(self.context_encoder(ctx))

    def training_loss(self, theta: Tensor, context: Context, weights: Tensor | None = None) -> Tensor:
        """Mean squared error in standardised units (averaged over events and parameters).

        With per-event ``weights`` ``(batch,)``: ``mean_i(w_i * mse_i)``, ``mse_i`` the event's
        squared error averaged over the parameters; the weights are taken relative to 1 (see
        :meth:`hepflow.ConditionalINN.training_loss`) and may be negative.
        """
        ctx = context if isinstance(context, Mapping) else {"context": context}
        u, _ = self.support(theta)
        if weights is None:
            return torch.mean((self._predict_std(ctx).float() - self.theta_scaler(u)) ** 2)
        mse = ((self._predict_std(ctx).float() - self.theta_scaler(u)) ** 2).mean(1)
        return (weights.to(mse.dtype) * mse).mean()

    @torch.no_grad()
    def predict(self, context: Any) -> Tensor:
        """Point estimates ``(batch, theta_dim)`` in user units."""
        ctx = self._context(context)
        theta, _ = self.support.inverse(self.theta_scaler.inverse(self._predict_std(ctx)))
        return theta

    @torch.no_grad()
    def prepare(self, theta: Any, context: Any = None, *, force: bool = False) -> None:
        """Fit the target and context standardisation on training data (once)."""
        if bool(self.prepared) and not force:
            return
        t, ctx = self._theta(theta), self._context(context)
        if batch_size_of(ctx) != t.shape[0]:
            raise InputError(f"theta has {t.shape[0]} events but the context has {batch_size_of(ctx)}")
        inside = self.support.contains(t)
        if not bool(inside.all()):
            raise InputError(f"{int((~inside).sum())} training theta(s) lie outside the constraints' support")
        self.theta_scaler.fit(self.support(t)[0])
        self.context_encoder.fit(ctx)
        self.prepared.fill_(True)
