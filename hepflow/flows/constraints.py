"""Support transforms: bounded and simplex-valued targets mapped to unconstrained space.

A model with constraints learns a flow in unconstrained space and maps samples back through the
inverse transform, so posterior samples never leave the prior support. ``log_prob`` includes the
log-determinant of the transform, so densities are those of the user-facing parameters.

* :class:`Box` -- each dimension in ``(low, high)``; either bound may be infinite. Both bounds
  finite: scaled logit / sigmoid; one bound: inverse softplus / softplus; none: identity.
* :class:`Simplex` -- ``K`` components that are positive and sum to one (element fractions),
  mapped to ``K - 1`` unconstrained dimensions, either with the additive log-ratio
  ``u_i = log(x_i / x_K)`` (inverse: a softmax) or with stick-breaking logits
  ``u_i = log(x_i / (x_{i+1} + ... + x_K))``. With the log-ratio every coordinate runs off to
  infinity when the reference ``x_K`` goes to zero; with stick-breaking only the coordinates
  whose tail ``x_{i+1} + ... + x_K`` vanishes do, so posteriors at an edge of the simplex (say the
  last two fractions near zero) keep the others finite. For both the density is with respect to
  the first ``K - 1`` components and ``log|det| = -sum_i log x_i`` over all ``K``.
* :class:`MomentumBound` -- a particle's ``(px, py, eta)`` with ``|px|, |py| < pt_max`` and
  ``|pz| = pT |sinh(eta)| < pz_max``: a box in the transverse plane and an eta bound that
  depends on pT (``|eta| < asinh(pz_max / pT)``), so no value has a longitudinal momentum beyond
  ``pz_max`` whatever its pT (a plain box on eta cannot do that: its pz grows with pT).

Example:
    >>> import torch
    >>> support = Support(4, [Box([0], low=0.0, high=1.0), Simplex([1, 2, 3])])
    >>> support.out_features
    3
    >>> theta = torch.tensor([[0.25, 0.2, 0.3, 0.5]])
    >>> u, logdet = support(theta)
    >>> back, _ = support.inverse(u)
    >>> bool(torch.allclose(back, theta, atol=1e-6))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hepflow.errors import ConfigError

__all__ = ["Box", "Constraint", "MomentumBound", "Simplex", "Support", "constraint_from_config"]


def _encode(v: float) -> float | str:
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _softplus_inv(v: Tensor) -> Tensor:
    # log(exp(v) - 1), stable for small and large v
    return v + torch.log(-torch.expm1(-v))


class Constraint(nn.Module):
    """Base class: a bijection from the support of ``len(dims)`` parameters to ``R^out_features``."""

    dims: tuple[int, ...]
    out_features: int

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def contains(self, x: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def interior(self) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def config(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


def _as_list(value: float | Sequence[float], n: int, name: str) -> list[float]:
    if isinstance(value, (int, float, str)):
        return [float(value)] * n
    vals = [float(v) for v in value]
    if len(vals) != n:
        raise ConfigError(f"Box: {name} has {len(vals)} values for {n} dims")
    return vals


class Box(Constraint):
    """Parameters ``dims`` restricted to ``(low, high)`` (per dimension; ``±inf`` allowed).

    Example:
        >>> import torch
        >>> box = Box([0, 1], low=[0.0, 0.0], high=[1.0, float("inf")])
        >>> x, _ = box.inverse(torch.tensor([[-30.0, -30.0], [30.0, 30.0]]))
        >>> bool(((x >= 0) & (x[:, :1] <= 1)).all())
        True
    """

    _KINDS = ("free", "both", "lower", "upper")

    def __init__(
        self,
        dims: Sequence[int],
        *,
        low: float | Sequence[float] = -math.inf,
        high: float | Sequence[float] = math.inf,
    ) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        if not self.dims:
            raise ConfigError("Box needs at least one dimension")
        n = len(self.dims)
        lo, hi = _as_list(low, n, "low"), _as_list(high, n, "high")
        for d, a, b in zip(self.dims, lo, hi, strict=True):
            if math.isnan(a) or math.isnan(b) or not a < b:
                raise ConfigError(f"Box: dimension {d} needs low < high, got low={a}, high={b}")
        self.low_values, self.high_values = lo, hi
        self.out_features = n
        groups: dict[str, list[int]] = {k: [] for k in self._KINDS}
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            fa, fb = math.isfinite(a), math.isfinite(b)
            kind = "both" if fa and fb else "lower" if fa else "upper" if fb else "free"
            groups[kind].append(i)
        self.kinds = tuple(k for k in self._KINDS if groups[k])
        order: list[int] = []
        for k in self.kinds:
            idx = groups[k]
            order += idx
            self.register_buffer(f"{k}_idx", torch.tensor(idx, dtype=torch.long))
            self.register_buffer(
                f"{k}_low", torch.tensor([lo[i] if math.isfinite(lo[i]) else 0.0 for i in idx])
            )
            self.register_buffer(
                f"{k}_high", torch.tensor([hi[i] if math.isfinite(hi[i]) else 0.0 for i in idx])
            )
        self.register_buffer("restore", torch.argsort(torch.tensor(order, dtype=torch.long)))
        self.register_buffer("low", torch.tensor(lo))
        self.register_buffer("high", torch.tensor(hi))

    def _buffers_of(self, kind: str, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        return (
            getattr(self, f"{kind}_idx"),
            getattr(self, f"{kind}_low").to(dtype),
            getattr(self, f"{kind}_high").to(dtype),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        outs, logdet = [], x.new_zeros(x.shape[0])
        for kind in self.kinds:
            idx, lo, hi = self._buffers_of(kind, x.dtype)
            v = x[:, idx]
            if kind == "free":
                u = v
            elif kind == "both":
                w = hi - lo
                p = (v - lo) / w
                u = torch.log(p) - torch.log1p(-p)
                logdet = logdet - (torch.log(p) + torch.log1p(-p) + torch.log(w)).sum(1)
            else:
                r = v - lo if kind == "lower" else hi - v
                u = _softplus_inv(r)
                logdet = logdet - torch.log(-torch.expm1(-r)).sum(1)
                if kind == "upper":
                    u = -u
            outs.append(u)
        return torch.cat(outs, 1)[:, self.restore], logdet

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        outs, logdet = [], u.new_zeros(u.shape[0])
        for kind in self.kinds:
            idx, lo, hi = self._buffers_of(kind, u.dtype)
            v = u[:, idx]
            if kind == "free":
                x = v
            elif kind == "both":
                w = hi - lo
                x = torch.minimum(torch.maximum(lo + w * torch.sigmoid(v), lo), hi)
                logdet = logdet + (torch.log(w) + F.logsigmoid(v) + F.logsigmoid(-v)).sum(1)
            elif kind == "lower":
                x = lo + F.softplus(v)
                logdet = logdet + F.logsigmoid(v).sum(1)
            else:
                x = hi - F.softplus(-v)
                logdet = logdet + F.logsigmoid(-v).sum(1)
            outs.append(x)
        return torch.cat(outs, 1)[:, self.restore], logdet

    def contains(self, x: Tensor) -> Tensor:
        """Rows strictly inside the box (``low < x < high`` in every dimension)."""
        return ((x > self.low.to(x.dtype)) & (x < self.high.to(x.dtype))).all(1)

    def round_inside(self, x: Tensor, original: Tensor) -> Tensor:
        """``x`` (``original`` cast to a coarser dtype) with the values that the rounding moved onto
        a bound moved to the nearest representable value inside; values that were outside stay."""
        lo, hi = self.low.to(x.dtype), self.high.to(x.dtype)
        lo_o, hi_o = self.low.to(original.dtype), self.high.to(original.dtype)
        x = torch.where((x <= lo) & (original > lo_o), torch.nextafter(lo, hi).expand_as(x), x)
        return torch.where((x >= hi) & (original < hi_o), torch.nextafter(hi, lo).expand_as(x), x)

    def interior(self) -> Tensor:
        lo, hi = self.low, self.high
        mid = torch.where(torch.isfinite(lo) & torch.isfinite(hi), 0.5 * (lo + hi), torch.zeros_like(lo))
        mid = torch.where(torch.isfinite(lo) & ~torch.isfinite(hi), lo + 1.0, mid)
        return torch.where(~torch.isfinite(lo) & torch.isfinite(hi), hi - 1.0, mid)

    def config(self) -> dict[str, Any]:
        return {
            "type": "Box",
            "dims": list(self.dims),
            "low": [_encode(v) for v in self.low_values],
            "high": [_encode(v) for v in self.high_values],
        }

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, low={self.low_values}, high={self.high_values}"


SimplexCoordinates = Literal["log_ratio", "stick_breaking"]


class Simplex(Constraint):
    """``K >= 2`` parameters that are positive and sum to one, as ``K - 1`` unconstrained values.

    Args:
        dims: the ``K`` columns, in the order the coordinates use (the last is the reference of
            the log-ratio, and the end of the stick).
        atol: tolerance of :meth:`contains` on the sum.
        coordinates: ``"log_ratio"`` (``u_i = log(x_i / x_K)``) or ``"stick_breaking"``
            (``u_i = logit(x_i / (x_i + ... + x_K))``).

    Example:
        >>> import torch
        >>> simplex = Simplex([0, 1, 2])
        >>> x, _ = simplex.inverse(torch.randn(5, 2) * 20)
        >>> bool((x >= 0).all()), bool(((x.sum(1) - 1).abs() < 1e-6).all())
        (True, True)
        >>> stick = Simplex([0, 1, 2], coordinates="stick_breaking")
        >>> u, _ = stick(torch.tensor([[0.5, 0.25, 0.25]]))
        >>> [round(v, 6) for v in u[0].tolist()]  # logit(0.5), logit(0.25 / 0.5)
        [0.0, 0.0]
    """

    def __init__(
        self, dims: Sequence[int], *, atol: float = 1e-4, coordinates: SimplexCoordinates = "log_ratio"
    ) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        if len(self.dims) < 2:
            raise ConfigError(f"Simplex needs at least 2 components, got dims={list(self.dims)}")
        if coordinates not in ("log_ratio", "stick_breaking"):
            raise ConfigError(
                f"Simplex coordinates must be 'log_ratio' or 'stick_breaking', got {coordinates!r}"
            )
        self.atol = float(atol)
        self.coordinates: SimplexCoordinates = coordinates
        self.out_features = len(self.dims) - 1

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logx = torch.log(x)
        if self.coordinates == "log_ratio":
            u = logx[:, :-1] - logx[:, -1:]
        else:  # log of the tail sums x_{i+1} + ... + x_K, from the end
            log_tail = torch.flip(torch.logcumsumexp(torch.flip(logx, (1,)), 1), (1,))
            u = logx[:, :-1] - log_tail[:, 1:]
        return u, -logx.sum(1)

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        if self.coordinates == "log_ratio":
            logp = torch.log_softmax(torch.cat((u, torch.zeros_like(u[:, :1])), 1), 1)
        else:  # x_i = s_i prod_{j<i} (1 - s_j), x_K = prod_j (1 - s_j), s = sigmoid(u)
            log_rest = torch.cumsum(F.logsigmoid(-u), 1)
            log_before = torch.cat((torch.zeros_like(u[:, :1]), log_rest[:, :-1]), 1)
            logp = torch.cat((F.logsigmoid(u) + log_before, log_rest[:, -1:]), 1)
        x = torch.exp(logp)
        return x / x.sum(1, keepdim=True), logp.sum(1)

    def contains(self, x: Tensor) -> Tensor:
        """Rows with every component positive and a sum within ``atol`` of one."""
        return (x > 0).all(1) & ((x.sum(1) - 1.0).abs() <= self.atol)

    def interior(self) -> Tensor:
        k = len(self.dims)
        return torch.full((k,), 1.0 / k)

    def config(self) -> dict[str, Any]:
        return {
            "type": "Simplex",
            "dims": list(self.dims),
            "atol": self.atol,
            "coordinates": self.coordinates,
        }

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, coordinates={self.coordinates}"


class MomentumBound(Constraint):
    """A particle's ``(px, py, eta)`` (columns ``dims``, in this order) with ``|px| < pt_max``,
    ``|py| < pt_max`` and ``|pz| = pT |sinh(eta)| < pz_max`` (``pT = hypot(px, py)``).

    Coordinates: ``px = b tanh(u_x / 2)``, ``py = b tanh(u_y / 2)`` and
    ``eta = H(pT) tanh(u_eta / 2)`` with ``H(pT) = asinh(pz_max / pT)``; the Jacobian is
    triangular (H depends on px and py only), ``log|det| = sum log(b_i / 2 (1 - tanh^2))``. The
    bounds ``b = pt_max`` and ``H`` of the transform are shrunk by :attr:`MARGIN` (relative) so
    that float32 rounding never puts a value of :meth:`inverse` on a bound of :meth:`contains`
    (the true bounds); the forward transform takes values in that thin margin as on its edge.

    Example:
        >>> import torch
        >>> bound = MomentumBound([0, 1, 2], pt_max=2000.0, pz_max=5000.0)
        >>> x, _ = bound.inverse(torch.randn(1000, 3) * 50)  # far into the tails
        >>> pz = torch.hypot(x[:, 0], x[:, 1]) * torch.sinh(x[:, 2])
        >>> bool((x[:, :2].abs() < 2000).all()), bool((pz.abs() < 5000).all())
        (True, True)
        >>> bound.contains(torch.tensor([[100.0, 0.0, 4.7], [100.0, 0.0, 4.5]])).tolist()  # pz 5497, 4500
        [False, True]
    """

    #: relative shrinking of the bounds, larger than float32 rounding (6e-8)
    MARGIN = 1e-6

    def __init__(self, dims: Sequence[int], *, pt_max: float, pz_max: float) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        if len(self.dims) != 3:
            raise ConfigError(f"MomentumBound needs 3 dims (px, py, eta), got dims={list(self.dims)}")
        for name, value in (("pt_max", pt_max), ("pz_max", pz_max)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"MomentumBound: {name} must be finite and positive, got {value}")
        self.pt_max, self.pz_max = float(pt_max), float(pz_max)
        self.out_features = 3

    def _eta_bound(self, x: Tensor) -> Tensor:
        """``asinh(pz_max / pT)`` shrunk by the margin; pT below 1e-6 GeV counts as 1e-6."""
        pt = torch.hypot(x[:, 0], x[:, 1]).clamp_min(1e-6)
        return torch.asinh(self.pz_max / pt) * (1.0 - self.MARGIN)

    def _bounds(self, x: Tensor) -> Tensor:
        b = x.new_full((x.shape[0], 2), self.pt_max * (1.0 - self.MARGIN))
        return torch.cat((b, self._eta_bound(x).unsqueeze(1)), 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bounds = self._bounds(x)
        # values between the shrunk and the true bounds (a relative 1e-6) count as on the shrunk one
        edge = 1.0 - torch.finfo(x.dtype).eps
        r = (x / bounds).clamp(-edge, edge)
        u = 2.0 * torch.atanh(r)
        logdet = -(torch.log(0.5 * bounds) + torch.log1p(-(r * r))).sum(1)
        return u, logdet

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        b = self.pt_max * (1.0 - self.MARGIN)
        pxy = b * torch.tanh(0.5 * u[:, :2])
        h = self._eta_bound(pxy)
        eta = h * torch.tanh(0.5 * u[:, 2])
        # d tanh(u/2)/du = sigmoid(u) sigmoid(-u) * 2
        logs = F.logsigmoid(u) + F.logsigmoid(-u) + math.log(2.0)
        logdet = (logs[:, :2] + math.log(b)).sum(1) + logs[:, 2] + torch.log(h)
        return torch.cat((pxy, eta.unsqueeze(1)), 1), logdet

    def contains(self, x: Tensor) -> Tensor:
        """Rows strictly inside: ``|px|, |py| < pt_max`` and ``|eta| < asinh(pz_max / pT)``, i.e.
        ``|pz| < pz_max``; NaN is outside."""
        bounds = self._bounds(x) / (1.0 - self.MARGIN)
        return (x.abs() < bounds).all(1)

    def interior(self) -> Tensor:
        return torch.zeros(3)

    def config(self) -> dict[str, Any]:
        return {
            "type": "MomentumBound",
            "dims": list(self.dims),
            "pt_max": self.pt_max,
            "pz_max": self.pz_max,
        }

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, pt_max={self.pt_max}, pz_max={self.pz_max}"


def constraint_from_config(cfg: dict[str, Any]) -> Constraint:
    """Rebuild a constraint from :meth:`Constraint.config`."""
    kind = cfg.get("type")
    if kind == "Box":
        return Box(cfg["dims"], low=[float(v) for v in cfg["low"]], high=[float(v) for v in cfg["high"]])
    if kind == "Simplex":
        # models saved before the choice existed used the log-ratio
        return Simplex(
            cfg["dims"], atol=cfg.get("atol", 1e-4), coordinates=cfg.get("coordinates", "log_ratio")
        )
    if kind == "MomentumBound":
        return MomentumBound(cfg["dims"], pt_max=float(cfg["pt_max"]), pz_max=float(cfg["pz_max"]))
    raise ConfigError(f"unknown constraint type {kind!r}")


class Support(nn.Module):
    """All support transforms of a ``theta_dim``-dimensional parameter vector.

    Unconstrained dimensions pass through unchanged. ``forward`` maps parameters to
    ``out_features`` unconstrained values (unconstrained dims first, then each constraint's output
    in the order given); ``inverse`` maps back to the original column order.
    """

    def __init__(self, theta_dim: int, constraints: Sequence[Constraint] = ()) -> None:
        super().__init__()
        self.theta_dim = theta_dim
        self.constraints = nn.ModuleList(constraints)
        used: dict[int, int] = {}
        for i, con in enumerate(constraints):
            if not isinstance(con, Constraint):
                raise ConfigError(
                    f"constraints must be Box, Simplex or MomentumBound objects, got {type(con).__name__}"
                )
            for d in con.dims:
                if not 0 <= d < theta_dim:
                    raise ConfigError(
                        f"constraint {con.config()['type']} names dim {d}, outside 0..{theta_dim - 1}"
                    )
                if d in used:
                    raise ConfigError(f"dim {d} appears in two constraints ({used[d]} and {i})")
                used[d] = i
        free = [d for d in range(theta_dim) if d not in used]
        order = free + [d for con in constraints for d in con.dims]
        self.register_buffer("free", torch.tensor(free, dtype=torch.long))
        self.register_buffer("restore", torch.argsort(torch.tensor(order, dtype=torch.long)))
        for i, con in enumerate(constraints):
            self.register_buffer(f"dims_{i}", torch.tensor(con.dims, dtype=torch.long))
        self.n_free = len(free)
        self.out_features = len(free) + sum(con.out_features for con in constraints)
        self.active = len(constraints) > 0

    def forward(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if not self.active:
            return theta, theta.new_zeros(theta.shape[0])
        parts = [theta[:, self.free]]
        logdet = theta.new_zeros(theta.shape[0])
        for i, con in enumerate(self.constraints):
            u, ld = con(theta[:, getattr(self, f"dims_{i}")])
            parts.append(u)
            logdet = logdet + ld
        return torch.cat(parts, 1), logdet

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        if not self.active:
            return u, u.new_zeros(u.shape[0])
        parts = [u[:, : self.n_free]]
        logdet = u.new_zeros(u.shape[0])
        start = self.n_free
        for con in self.constraints:
            x, ld = con.inverse(u[:, start : start + con.out_features])
            start += con.out_features
            parts.append(x)
            logdet = logdet + ld
        return torch.cat(parts, 1)[:, self.restore], logdet

    def contains(self, theta: Tensor) -> Tensor:
        """Boolean ``(batch,)``: rows inside the support of every constraint."""
        inside = torch.ones(theta.shape[0], dtype=torch.bool, device=theta.device)
        for i, con in enumerate(self.constraints):
            inside = inside & con.contains(theta[:, getattr(self, f"dims_{i}")])
        return inside

    def round_inside(self, theta: Tensor, original: Tensor) -> Tensor:
        """``theta`` cast from the finer ``original`` (e.g. float64 to float32), with box values that
        the rounding alone put on a bound moved to the nearest representable value inside.

        A prior draw strictly below ``high = 19.5`` can round to ``19.5`` in float32; it is then
        taken as the largest float32 below 19.5 instead of being refused as outside the support.

        Example:
            >>> import torch
            >>> support = Support(1, [Box([0], low=0.0, high=19.5)])
            >>> x64 = torch.tensor([[19.5 - 1e-9]], dtype=torch.float64)
            >>> x32 = x64.float()
            >>> bool(support.contains(x32)), bool(support.contains(support.round_inside(x32, x64)))
            (False, True)
        """
        if not self.active or theta.dtype == original.dtype:
            return theta
        theta = theta.clone()
        for i, con in enumerate(self.constraints):
            if isinstance(con, Box):
                dims = getattr(self, f"dims_{i}")
                theta[:, dims] = con.round_inside(theta[:, dims], original[:, dims].to(theta.device))
        return theta

    def interior(self, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
        """One point inside the support (centre of boxes, uniform fractions)."""
        point = torch.zeros(self.theta_dim, dtype=dtype, device=device)
        for i, con in enumerate(self.constraints):
            point[getattr(self, f"dims_{i}")] = con.interior().to(dtype=dtype, device=device)
        return point
