"""The conditional invertible neural network (cINN): ``p(theta | context)`` as a normalizing flow.

Data path (forward, parameters to latent)::

    theta --support transform--> u --standardise--> v --[coupling, ActNorm, mixing] x depth--> z ~ N(0, 1)
    context --dequantize--> --standardise--> --summary network--> embedding (once per batch)

The embedding conditions every coupling subnet; the summary network trains jointly with the
flow. Sampling runs the same path backwards, so samples always lie in the support of the
constraints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hepflow.errors import ConfigError, InputError
from hepflow.flows.actnorm import ActNorm
from hepflow.flows.base import Flow, Transform, seeded
from hepflow.flows.constraints import Constraint, Support, constraint_from_config
from hepflow.flows.context import Context, ContextEncoder, as_tensor, batch_size_of, index_context
from hepflow.flows.coupling import AffineCoupling
from hepflow.flows.mixing import Permutation, RandomOrthogonal
from hepflow.flows.spline import SplineCoupling
from hepflow.flows.standardization import Standardize
from hepflow.flows.summary import IdentitySummary, MLPSummary, Summary, summary_from_config

__all__ = ["ConditionalINN"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    return t


def _log_base(z: Tensor, dim: int, temperature: float = 1.0) -> Tensor:
    """``log N(z; 0, temperature^2 I)`` per row."""
    if temperature == 1.0:
        return -0.5 * (z * z).sum(1) - (0.5 * _LOG_2PI) * dim
    t2 = temperature * temperature
    return -0.5 * (z * z).sum(1) / t2 - (0.5 * _LOG_2PI + math.log(temperature)) * dim


class ConditionalINN(nn.Module):
    """A conditional normalizing flow for posteriors ``p(theta | context)``.

    Arguments:
        theta_dim: number of parameters (the user-facing dimension, simplex components included).
        context_dim: number of flat context features; use ``summary=`` for structured contexts.
            With neither, the flow is unconditional.

    Keyword arguments:
        blocks: ``"spline"`` (rational-quadratic spline couplings, the default: multimodal
            posteriors, also in one dimension) or ``"affine"`` (GLOW / Real NVP couplings with a
            soft-clamped log-scale).
        depth: number of coupling blocks; each is followed by an ActNorm and a fixed mixing.
        width, layers: hidden units and hidden layers of each coupling subnet.
        activation: subnet activation (``relu``, ``silu``, ``gelu``, ...).
        clamp: soft clamp of the affine log-scale (``|s| < clamp``).
        bins, bound: spline bins and the half-width of the spline interval (identity outside).
        mixing: ``"orthogonal"`` (fixed random rotation) or ``"permutation"``.
        actnorm: insert a data-initialised ActNorm after every coupling.
        summary: the summary (condition) network. The default for a flat context of at most
            ``embedding_dim`` features is :class:`~hepflow.flows.summary.IdentitySummary`: the
            standardised context goes straight into every coupling subnet (in the engine
            benchmark this trains to a lower NLL than a learned embedding, and faster). A wider
            flat context is compressed by an :class:`~hepflow.flows.summary.MLPSummary` to
            ``embedding_dim`` features (two hidden layers of ``min(64, width)`` units).
        embedding_dim: size of the default summary network's embedding (wider flat contexts).
        constraints: :class:`~hepflow.flows.constraints.Box` / :class:`~hepflow.flows.constraints.Simplex`
            support transforms; samples never leave the support.
        dequantize: integer context columns to dequantize (indices, or ``{key: indices}`` for a
            dict context).
        seed: seed of the weight initialisation and of the random mixing (default: torch's
            global generator).

    Example:
        >>> import torch
        >>> model = ConditionalINN(theta_dim=2, context_dim=3, depth=2, width=16)
        >>> theta, ctx = torch.randn(10, 2), torch.randn(10, 3)
        >>> model.log_prob(theta, ctx).shape
        torch.Size([10])
        >>> model.sample(100, ctx[:4]).shape
        torch.Size([4, 100, 2])
    """

    #: what :meth:`training_loss` measures (the loss axis of :func:`hepflow.training.plot_history`)
    loss_name = "negative log-likelihood [nats]"

    def __init__(
        self,
        theta_dim: int,
        context_dim: int | None = None,
        *,
        blocks: str = "spline",
        depth: int = 6,
        width: int = 128,
        layers: int = 2,
        activation: str = "relu",
        clamp: float = 2.0,
        bins: int = 8,
        bound: float = 5.0,
        mixing: str = "orthogonal",
        actnorm: bool = True,
        summary: Summary | None = None,
        embedding_dim: int = 32,
        constraints: Sequence[Constraint] = (),
        dequantize: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(theta_dim, int) or theta_dim < 1:
            raise ConfigError(f"theta_dim must be a positive integer, got {theta_dim!r}")
        if blocks not in ("affine", "spline"):
            raise ConfigError(f"blocks must be 'affine' or 'spline', got {blocks!r}")
        if mixing not in ("orthogonal", "permutation"):
            raise ConfigError(f"mixing must be 'orthogonal' or 'permutation', got {mixing!r}")
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        if summary is not None and context_dim is not None:
            raise ConfigError("give either context_dim (flat context) or summary= (any context), not both")
        if context_dim is not None and (not isinstance(context_dim, int) or context_dim < 1):
            raise ConfigError(f"context_dim must be a positive integer, got {context_dim!r}")
        self.theta_dim = theta_dim
        self.metadata: dict[str, Any] = {}
        self._hparams: dict[str, Any] = {
            "theta_dim": theta_dim,
            "blocks": blocks,
            "depth": depth,
            "width": width,
            "layers": layers,
            "activation": activation,
            "clamp": clamp,
            "bins": bins,
            "bound": bound,
            "mixing": mixing,
            "actnorm": actnorm,
            "embedding_dim": embedding_dim,
            "seed": seed,
        }
        with seeded(seed):
            self._build(summary, context_dim, constraints, dequantize, seed)

    def _build(
        self,
        summary: Summary | None,
        context_dim: int | None,
        constraints: Sequence[Constraint],
        dequantize: Sequence[int] | Mapping[str, Sequence[int]] | None,
        seed: int | None,
    ) -> None:
        h = self._hparams
        if summary is None and context_dim is not None and context_dim <= h["embedding_dim"]:
            summary = IdentitySummary(context_dim)
        elif summary is None and context_dim is not None:
            summary = MLPSummary(
                context_dim, h["embedding_dim"], width=min(64, h["width"]), activation=h["activation"]
            )
        if summary is None and dequantize:
            raise ConfigError("dequantize needs a context (context_dim or summary)")
        self.context_encoder = None if summary is None else ContextEncoder(summary, dequantize=dequantize)
        self.support = Support(self.theta_dim, list(constraints))
        self.latent_dim = self.support.out_features
        self.theta_scaler = Standardize((self.latent_dim,))
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))
        cond = 0 if summary is None else summary.output_dim
        gen = torch.Generator().manual_seed(
            seed if seed is not None else int(torch.randint(2**62, ()).item())
        )
        transforms: list[Transform] = []
        for _ in range(h["depth"]):
            if h["blocks"] == "affine":
                transforms.append(
                    AffineCoupling(
                        self.latent_dim,
                        cond,
                        width=h["width"],
                        layers=h["layers"],
                        clamp=h["clamp"],
                        activation=h["activation"],
                    )
                )
            else:
                transforms.append(
                    SplineCoupling(
                        self.latent_dim,
                        cond,
                        bins=h["bins"],
                        bound=h["bound"],
                        width=h["width"],
                        layers=h["layers"],
                        activation=h["activation"],
                    )
                )
            if h["actnorm"]:
                transforms.append(ActNorm(self.latent_dim))
            if self.latent_dim > 1:
                mix = RandomOrthogonal if h["mixing"] == "orthogonal" else Permutation
                transforms.append(mix(self.latent_dim, generator=gen))
        self.flow = Flow(transforms)

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (used by :func:`hepflow.save_model`)."""
        cfg = dict(self._hparams)
        enc = self.context_encoder
        cfg["summary"] = None if enc is None else enc.summary.config()
        cfg["dequantize"] = None if enc is None else enc.dequantize_config
        cfg["constraints"] = [c.config() for c in self.support.constraints]
        return cfg

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ConditionalINN:
        """Rebuild an (untrained) model from :meth:`config`."""
        cfg = dict(cfg)
        summary = cfg.pop("summary", None)
        constraints = [constraint_from_config(c) for c in cfg.pop("constraints", [])]
        theta_dim = cfg.pop("theta_dim")
        return cls(
            theta_dim,
            summary=None if summary is None else summary_from_config(summary),
            constraints=constraints,
            **cfg,
        )

    @property
    def context_keys(self) -> list[str]:
        """Names of the context tensors the model reads (``["context"]`` for a flat tensor)."""
        return [] if self.context_encoder is None else list(self.context_encoder.keys)

    # ------------------------------------------------------------------ helpers
    def _dtype_device(self) -> tuple[torch.dtype, torch.device]:
        p = self.theta_scaler.mean
        return p.dtype, p.device

    def _theta(self, theta: Any) -> Tensor:
        dtype, device = self._dtype_device()
        original = as_tensor(theta)
        t = as_tensor(original, dtype=dtype, device=device)
        if t.dim() == 2 and original.dtype.is_floating_point and original.dtype != dtype:
            t = self.support.round_inside(t, original)  # rounding alone must not leave the support
        if t.dim() == 1 and self.theta_dim == 1:
            t = t.unsqueeze(1)
        if t.dim() != 2 or t.shape[1] != self.theta_dim:
            raise InputError(f"theta has shape {tuple(t.shape)}; expected (batch, {self.theta_dim})")
        return t

    def _context(self, context: Any) -> dict[str, Tensor] | None:
        if self.context_encoder is None:
            if context is not None:
                raise InputError("this model is unconditional; pass context=None")
            return None
        if context is None:
            raise InputError(f"this model needs a context with keys {self.context_keys}")
        dtype, device = self._dtype_device()
        return self.context_encoder.as_dict(context, dtype=dtype, device=device)

    def _grouped(self, x: Any, width: int, name: str, context: Any) -> tuple[Tensor, Any]:
        """Check ``x`` of shape ``(n_obs, n, width)`` against a context of ``n_obs`` observations."""
        dtype, device = self._dtype_device()
        t = as_tensor(x, dtype=dtype, device=device)
        if t.dim() != 3 or t.shape[2] != width:
            raise InputError(f"{name} has shape {tuple(t.shape)}; expected (n_obs, n, {width})")
        ctx = self._context(context)
        if ctx is not None and batch_size_of(ctx) != t.shape[0]:
            raise InputError(f"{name} has {t.shape[0]} observations but the context has {batch_size_of(ctx)}")
        return t, ctx

    def embed(self, context: Context) -> Tensor:
        """The summary-network embedding ``(batch, embedding)`` of a (checked) context dict."""
        assert self.context_encoder is not None
        return self.context_encoder(context)

    def _log_prob(self, theta: Tensor, ctx: Mapping[str, Tensor] | None) -> Tensor:
        emb = None if ctx is None else self.context_encoder(ctx)
        u, ld_support = self.support(theta)
        z, ld_flow = self.flow(self.theta_scaler(u), emb)
        log_base = -0.5 * (z * z).sum(1) - (0.5 * _LOG_2PI) * self.latent_dim
        return log_base + ld_flow + ld_support + self.theta_scaler.log_abs_det().to(z.dtype)

    # ------------------------------------------------------------------ public API
    def log_prob(self, theta: Any, context: Any = None) -> Tensor:
        """``log p(theta | context)`` per event, shape ``(batch,)``; ``-inf`` outside the support.

        ``theta`` and ``context`` may be tensors or numpy arrays (a dict of them for a structured
        context); event ``i`` of ``theta`` is evaluated with event ``i`` of ``context``.
        """
        t = self._theta(theta)
        ctx = self._context(context)
        if ctx is not None and batch_size_of(ctx) != t.shape[0]:
            raise InputError(f"theta has {t.shape[0]} events but the context has {batch_size_of(ctx)}")
        if not self.support.active:
            return self._log_prob(t, ctx)
        inside = self.support.contains(t)
        safe = torch.where(inside.unsqueeze(1), t, self.support.interior(t.dtype, t.device))
        lp = self._log_prob(safe, ctx)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    @torch.no_grad()
    def log_prob_grouped(self, theta: Any, context: Any = None, *, temperature: float = 1.0) -> Tensor:
        """``log p`` of samples grouped by observation: ``theta (n_obs, n, theta_dim)`` -> ``(n_obs, n)``.

        Observation ``i`` of ``context`` conditions ``theta[i]``, as in :meth:`sample`: the
        summary network runs once per observation and its embedding is shared by the ``n``
        samples (no repeated context). ``-inf`` outside the support. ``temperature``: the density
        of the flow with a widened base distribution ``N(0, temperature^2)`` (see :meth:`sample`).
        """
        t, ctx = self._grouped(theta, self.theta_dim, "theta", context)
        n_obs, n, d = t.shape
        flat = t.reshape(n_obs * n, d)
        inside = self.support.contains(flat) if self.support.active else None
        if inside is not None:
            flat = torch.where(inside.unsqueeze(1), flat, self.support.interior(flat.dtype, flat.device))
        emb = None if ctx is None else self.context_encoder(ctx)  # one row per observation
        u, ld_support = self.support(flat)
        z, ld_flow = self.flow(self.theta_scaler(u), emb)
        log_base = _log_base(z, self.latent_dim, _check_temperature(temperature))
        lp = log_base + ld_flow + ld_support + self.theta_scaler.log_abs_det().to(z.dtype)
        if inside is not None:
            lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
        return lp.reshape(n_obs, n)

    def forward(self, theta: Any, context: Any = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(theta, context)

    def training_loss(
        self, theta: Tensor, context: Context | None = None, weights: Tensor | None = None
    ) -> Tensor:
        """Mean negative log-likelihood of a batch (what :func:`hepflow.fit` minimises).

        With per-event ``weights`` ``(batch,)`` the result is ``mean_i(w_i * nll_i)``: the weights
        are taken relative to 1 (:func:`hepflow.fit` passes them divided by the mean weight of
        the training set), which makes it an unbiased estimate of the weighted mean NLL that does
        not divide by the batch's own, possibly non-positive, weight sum. Weights may be
        negative. Without weights the plain mean is returned.
        """
        ctx = None if context is None else (context if isinstance(context, Mapping) else {"context": context})
        if weights is None:
            return -self._log_prob(theta, ctx).mean()
        nll = -self._log_prob(theta, ctx)
        return (weights.to(nll.dtype) * nll).mean()

    def transform_noise(
        self, noise: Tensor, context: Any = None, *, return_log_prob: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Map latent noise ``(n_obs, n, latent_dim)`` to samples ``(n_obs, n, theta_dim)``.

        Observation ``i`` of ``context`` conditions ``noise[i]``. This is the deterministic core
        of :meth:`sample` (and of the exported samplers). With ``return_log_prob`` it also returns
        ``log p(sample | context)`` of shape ``(n_obs, n)``.
        """
        noise, ctx = self._grouped(noise, self.latent_dim, "noise", context)
        return self._transform_noise(noise, ctx, return_log_prob)

    def _transform_noise(
        self,
        noise: Tensor,
        ctx: Mapping[str, Tensor] | None,
        return_log_prob: bool = False,
        temperature: float = 1.0,
    ) -> Tensor | tuple[Tensor, Tensor]:
        # unchecked core of transform_noise (traced by the exporters)
        n_obs, n, d = noise.shape
        # one embedding row per observation: the couplings broadcast it over its n samples
        emb = None if ctx is None else self.context_encoder(ctx)
        z = noise.reshape(n_obs * n, d)
        v, ld_flow = self.flow.inverse(z, emb)
        theta, ld_support = self.support.inverse(self.theta_scaler.inverse(v))
        theta = theta.reshape(n_obs, n, self.theta_dim)
        if not return_log_prob:
            return theta
        log_base = _log_base(z, self.latent_dim, temperature)
        lp = log_base - ld_flow - ld_support + self.theta_scaler.log_abs_det().to(z.dtype)
        return theta, lp.reshape(n_obs, n)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        context: Any = None,
        *,
        return_log_prob: bool = False,
        generator: torch.Generator | None = None,
        max_rows: int = 2**16,
        temperature: float = 1.0,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` posterior samples per observation: a tensor ``(n_obs, n, theta_dim)``.

        A single flat observation of shape ``(context_dim,)`` counts as ``n_obs = 1``; an
        unconditional model returns ``(n, theta_dim)``. Observations are processed in chunks of
        at most ``max_rows`` samples. With ``return_log_prob`` the model's ``log p`` of each sample
        is returned too, shape ``(n_obs, n)`` (the highest is the posterior mode estimate).
        Call ``model.eval()`` first if the model was not trained by :func:`hepflow.fit`.

        ``temperature`` > 1 samples from a widened base distribution ``N(0, temperature^2)``: a
        broader version of the posterior with the same modes (a proposal that covers more than
        the flow's own highest-density region, e.g. for sequential refinement); the returned
        ``log p`` is then the density of that tempered flow
        (:meth:`log_prob_grouped` with the same ``temperature``).
        """
        dtype, device = self._dtype_device()
        t = _check_temperature(temperature)
        if self.context_encoder is None:
            noise = t * torch.randn(1, n, self.latent_dim, generator=generator, dtype=dtype).to(device)
            out = self._transform_noise(noise, None, return_log_prob, t)
            return (out[0][0], out[1][0]) if return_log_prob else out[0]
        if isinstance(context, Mapping):
            ctx: Any = context
        else:
            ctx = as_tensor(context, dtype=dtype)
            if ctx.dim() == 1 and self.context_keys == ["context"]:
                ctx = ctx.unsqueeze(0)
        ctx = self._context(ctx)
        n_obs = batch_size_of(ctx)
        step = max(1, max_rows // max(n, 1))
        samples, logps = [], []
        for start in range(0, n_obs, step):
            part = index_context(ctx, slice(start, start + step))
            m = batch_size_of(part)
            noise = t * torch.randn(m, n, self.latent_dim, generator=generator, dtype=dtype).to(device)
            out = self._transform_noise(noise, part, return_log_prob, t)
            if return_log_prob:
                samples.append(out[0])
                logps.append(out[1])
            else:
                samples.append(out)
        theta = torch.cat(samples, 0)
        return (theta, torch.cat(logps, 0)) if return_log_prob else theta

    @torch.no_grad()
    def prepare(
        self, theta: Any, context: Any = None, *, init_batch: int = 4096, force: bool = False
    ) -> None:
        """Fit the standardisation buffers and initialise the ActNorms from training data.

        Called by :func:`hepflow.fit` before the first epoch; a no-op on a prepared model unless
        ``force``. Raises :class:`~hepflow.errors.InputError` if a ``theta`` lies outside the
        constraints' support.
        """
        if bool(self.prepared) and not force:
            return
        t = self._theta(theta)
        ctx = self._context(context)
        if self.support.active:
            inside = self.support.contains(t)
            if not bool(inside.all()):
                bad = int((~inside).sum())
                row = int((~inside).nonzero()[0, 0])
                raise InputError(
                    f"{bad} training theta(s) lie outside the constraints' support, e.g. row {row}: "
                    f"{t[row].tolist()}"
                )
        u, _ = self.support(t)
        self.theta_scaler.fit(u)
        if ctx is not None:
            self.context_encoder.fit(ctx)
        # data-dependent ActNorm initialisation on a first batch
        was_training = self.training
        self.train()
        k = min(init_batch, t.shape[0])
        ctx_k = None if ctx is None else index_context(ctx, slice(0, k))
        for m in self.flow.modules():
            if isinstance(m, ActNorm):
                m._initialized = bool(m.initialized)
        self._log_prob(t[:k], ctx_k)
        self.train(was_training)
        self.prepared.fill_(True)

    def extra_repr(self) -> str:
        h = self._hparams
        return f"theta_dim={self.theta_dim}, blocks={h['blocks']!r}, depth={h['depth']}, width={h['width']}"
