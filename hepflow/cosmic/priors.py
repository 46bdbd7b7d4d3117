"""Prior on the source parameters ``(gamma, lg(R_cut/V), f_H, f_He, f_N, f_Si, f_Fe)``.

Independent uniform priors on ``gamma`` and ``lg R_cut`` and a symmetric Dirichlet on the five
fractions (``concentration=1``: uniform on the simplex). The default ranges contain both minima
of the Auger combined fit (``gamma ~ 1, lg R ~ 18.7`` and the hard, heavy ``gamma < 0`` one);
``lg R_cut <= 19.5`` keeps the Fe cut-off (``26 R_cut``) inside the 10^21 eV reach of the tables.

A bijection to R^6 (logit of the box coordinates, stick-breaking logits of the fractions) is
provided for samplers and flows that work on unconstrained spaces.

Example:
    >>> prior = Prior()
    >>> theta = prior.sample(1000, rng=0)
    >>> theta.shape, bool(prior.in_support(theta).all())
    ((1000, 7), True)
    >>> np.allclose(prior.from_unconstrained(prior.to_unconstrained(theta)), theta)
    True

:class:`Proposal` is a training distribution with the prior's support that puts more
pseudo-experiments near the faces of the simplex (sparse compositions), where a Dirichlet(1)
prior puts almost none; :meth:`Proposal.accept` corrects draws from it back to the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from hepflow.cosmic.source import PARAMETER_NAMES, as_params, valid_params
from hepflow.errors import ConfigError

__all__ = ["Prior", "Proposal"]

_K = len(PARAMETER_NAMES) - 2  # number of fractions
_N_PARAMS = len(PARAMETER_NAMES)


@dataclass(frozen=True)
class Prior:
    """Uniform box on ``gamma`` and ``lg_rcut`` times a symmetric Dirichlet on the fractions."""

    gamma: tuple[float, float] = (-3.0, 3.0)
    lg_rcut: tuple[float, float] = (17.5, 19.5)
    concentration: float = 1.0

    def __post_init__(self) -> None:
        for name in ("gamma", "lg_rcut"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ConfigError(
                    f"prior range {name}={getattr(self, name)!r} must be finite with low < high"
                )
        if not (np.isfinite(self.concentration) and self.concentration > 0):
            raise ConfigError(f"prior concentration must be > 0, got {self.concentration}")

    @property
    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.gamma[0], self.lg_rcut[0]])
        hi = np.array([self.gamma[1], self.lg_rcut[1]])
        return lo, hi

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``n`` parameter vectors, shape (n, 7)."""
        gen = np.random.default_rng(rng)
        lo, hi = self._box
        box = lo + (hi - lo) * gen.random((n, 2))
        fractions = gen.dirichlet(np.full(_K, self.concentration), size=n)
        return np.concatenate([box, fractions], axis=1)

    def restrict(
        self, lower: np.ndarray, upper: np.ndarray, *, rng: np.random.Generator | int | None = 0
    ) -> tuple[BoxedPrior, float, np.ndarray, np.ndarray]:
        """The prior conditioned on the box ``lower <= theta <= upper`` (7 values each):
        ``(prior, the box's mass under this prior, lower, upper)``, the bounds it applied
        (infinite where it keeps this prior's own bound). ``gamma`` and ``lg_rcut`` are drawn
        uniformly in the narrower range (mass: the ratio of the widths), the fractions from the
        Dirichlet by rejection outside their bounds (mass: estimated from 100 000 draws with
        ``rng``; when the fraction bounds together keep fewer than 1 % of the draws, all of them are
        dropped: their rejection would be slow). The truncated proposals of sequential refinement draw from it
        (:class:`hepflow.posterior.sequential.TruncatedPrior`).

        Example:
            >>> lo, hi = np.r_[0.0, 18.0, [0.0] * 5], np.r_[9.0, 18.5, 0.5, [1.0] * 4]
            >>> sub, mass, lo, hi = Prior().restrict(lo, hi)
            >>> sub.prior.gamma, sub.prior.lg_rcut, round(mass, 2), lo[:3].tolist(), hi[:3].tolist()
            ((0.0, 3.0), (18.0, 18.5), 0.12, [0.0, 18.0, -inf], [inf, 18.5, 0.5])
            >>> bool((sub.sample(1000, rng=1)[:, 2] <= 0.5).all())
            True
        """
        lo_in = np.asarray(lower, dtype=float).ravel()
        hi_in = np.asarray(upper, dtype=float).ravel()
        if lo_in.shape != (_N_PARAMS,) or hi_in.shape != (_N_PARAMS,):
            raise ConfigError(
                f"restrict: lower and upper need {_N_PARAMS} values, got {lo_in.shape}, {hi_in.shape}"
            )
        box_lo, box_hi = self._box
        new_lo, new_hi = np.maximum(box_lo, lo_in[:2]), np.minimum(box_hi, hi_in[:2])
        f_lo, f_hi = np.maximum(lo_in[2:], 0.0), np.minimum(hi_in[2:], 1.0)
        if np.any(new_lo >= new_hi) or np.any(f_lo >= f_hi) or f_lo.sum() >= 1.0:
            raise ConfigError(
                f"restrict: the box {lo_in.tolist()} .. {hi_in.tolist()} misses the prior's support"
            )
        mass = float(np.prod((new_hi - new_lo) / (box_hi - box_lo)))
        probe = np.random.default_rng(rng).dirichlet(np.full(_K, self.concentration), size=100_000)
        kept = np.mean(np.all((probe >= f_lo) & (probe <= f_hi), axis=1))
        if kept < 0.01:  # the fractions unrestricted
            f_lo, f_hi, kept = np.zeros(_K), np.ones(_K), 1.0
        lo_out, hi_out = np.full(_N_PARAMS, -np.inf), np.full(_N_PARAMS, np.inf)
        lo_out[:2] = np.where(new_lo > box_lo, new_lo, -np.inf)
        hi_out[:2] = np.where(new_hi < box_hi, new_hi, np.inf)
        lo_out[2:] = np.where(f_lo > 0.0, f_lo, -np.inf)
        hi_out[2:] = np.where(f_hi < 1.0, f_hi, np.inf)
        sub = Prior(
            gamma=(float(new_lo[0]), float(new_hi[0])),
            lg_rcut=(float(new_lo[1]), float(new_hi[1])),
            concentration=self.concentration,
        )
        return BoxedPrior(sub, f_lo, f_hi, float(kept)), mass * float(kept), lo_out, hi_out

    def in_support(self, params: np.ndarray) -> np.ndarray:
        """Boolean mask (n,): inside the box and on the simplex (fractions >= 0, sum 1 within 1e-6)."""
        p = as_params(params, check=False)
        lo, hi = self._box
        return valid_params(p) & np.all((p[:, :2] >= lo) & (p[:, :2] <= hi), axis=1)

    def log_prob(self, params: np.ndarray) -> np.ndarray:
        """Log density (n,) w.r.t. Lebesgue measure on (gamma, lg_rcut, f_H .. f_Si); -inf outside."""
        p = as_params(params, check=False)
        lo, hi = self._box
        a = self.concentration
        log_norm = special.gammaln(_K * a) - _K * special.gammaln(a) - np.log(hi - lo).sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            dens = log_norm + special.xlogy(a - 1.0, p[:, 2:]).sum(axis=1)
        return np.where(self.in_support(p), dens, -np.inf)

    # ------------------------------------------------------------------ unconstrained space
    def to_unconstrained(self, params: np.ndarray) -> np.ndarray:
        """Map (n, 7) parameters to R^6: logit of the box, stick-breaking logits of the fractions.

        The centre of the simplex maps to zero; boundary points (a fraction of exactly 0) map to
        -inf.
        """
        p = as_params(params)
        lo, hi = self._box
        with np.errstate(divide="ignore"):
            box = special.logit((p[:, :2] - lo) / (hi - lo))
            f = p[:, 2:]
            remaining = 1.0 - np.concatenate(
                [np.zeros((p.shape[0], 1)), np.cumsum(f[:, :-1], axis=1)], axis=1
            )
            y = np.divide(
                f[:, :-1], remaining[:, :-1], out=np.zeros_like(f[:, :-1]), where=remaining[:, :-1] > 0
            )
            z = special.logit(np.clip(y, 0.0, 1.0)) + np.log(_K - 1 - np.arange(_K - 1))
        return np.concatenate([box, z], axis=1)

    def log_jacobian(self, z: np.ndarray) -> np.ndarray:
        """``log |d theta_free / d z|`` (n,) of :meth:`from_unconstrained` at ``z`` (n, 6), with
        ``theta_free`` the coordinates :meth:`log_prob`'s density is on; computed with softplus
        (finite for any finite ``z``). A density ``g(z)`` is ``g(z) / |d theta_free / d z|`` in
        the parameters."""
        u = np.atleast_2d(np.asarray(z, dtype=float))
        if u.shape[1] != _K + 1:
            raise ConfigError(f"unconstrained parameters must have shape (n, {_K + 1}), got {np.shape(z)}")
        lo, hi = self._box
        box = np.sum(np.log(hi - lo) - np.logaddexp(0.0, -u[:, :2]) - np.logaddexp(0.0, u[:, :2]), axis=1)
        a = u[:, 2:] - np.log(_K - 1 - np.arange(_K - 1))
        log_y = -np.logaddexp(0.0, -a)
        log_1my = -np.logaddexp(0.0, a)
        log_r = np.concatenate([np.zeros((u.shape[0], 1)), np.cumsum(log_1my, axis=1)[:, :-1]], axis=1)
        return box + np.sum(log_r + log_y + log_1my, axis=1)

    def from_unconstrained(self, z: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_unconstrained`: (n, 6) -> (n, 7)."""
        u = np.asarray(z, dtype=float)
        if u.ndim == 1:
            u = u[None, :]
        if u.ndim != 2 or u.shape[1] != _K + 1:
            raise ConfigError(f"unconstrained parameters must have shape (n, {_K + 1}), got {np.shape(z)}")
        lo, hi = self._box
        box = lo + (hi - lo) * special.expit(u[:, :2])
        y = special.expit(u[:, 2:] - np.log(_K - 1 - np.arange(_K - 1)))
        f = np.empty((u.shape[0], _K))
        remaining = np.ones(u.shape[0])
        for k in range(_K - 1):
            f[:, k] = remaining * y[:, k]
            remaining = remaining - f[:, k]
        f[:, -1] = remaining
        return np.concatenate([box, f], axis=1)


@dataclass(frozen=True)
class Proposal:
    """Defensive mixture ``lambda * prior + (1 - lambda) * sparse`` with the prior's support.

    ``sparse`` is the prior with a symmetric Dirichlet of ``concentration`` (< 1: mass near the
    faces and corners of the simplex) on the fractions. A cINN trained on pseudo-experiments from
    the proposal learns ``q(theta | x) ~ L(x | theta) proposal(theta)``; accepting its draws with
    probability ``lambda * prior / proposal`` (<= 1, :meth:`accept`) gives exact draws of the
    posterior under the prior (rejection sampling, acceptance ``lambda`` on average over the
    prior predictive). ``prior_weight = 1`` is the prior itself and draws the same numbers as
    :meth:`Prior.sample`.

    Example:
        >>> proposal = Proposal(Prior(), prior_weight=0.8, concentration=0.3)
        >>> theta = proposal.sample(20000, rng=0)
        >>> kept = theta[proposal.accept(theta, rng=1)]       # now distributed as the prior
        >>> bool(0.75 < len(kept) / len(theta) < 0.85)
        True
    """

    prior: Prior
    prior_weight: float = 1.0
    concentration: float = 0.3

    def __post_init__(self) -> None:
        if not (0.0 < self.prior_weight <= 1.0):
            raise ConfigError(f"proposal prior_weight must be in (0, 1], got {self.prior_weight}")
        if not (np.isfinite(self.concentration) and self.concentration > 0):
            raise ConfigError(f"proposal concentration must be > 0, got {self.concentration}")

    @property
    def is_prior(self) -> bool:
        """True when the proposal is the prior (``prior_weight == 1``)."""
        return self.prior_weight == 1.0

    @property
    def _sparse(self) -> Prior:
        return Prior(gamma=self.prior.gamma, lg_rcut=self.prior.lg_rcut, concentration=self.concentration)

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``n`` parameter vectors (n, 7): each from the prior with probability ``prior_weight``."""
        gen = np.random.default_rng(rng)
        if self.is_prior:
            return self.prior.sample(n, gen)
        from_prior = gen.random(n) < self.prior_weight
        theta = self._sparse.sample(n, gen)
        theta[from_prior] = self.prior.sample(int(from_prior.sum()), gen)
        return theta

    def _log_prior_and_proposal(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lp = self.prior.log_prob(params)
        if self.is_prior:
            return lp, lp
        with np.errstate(divide="ignore"):
            mix = np.logaddexp(
                np.log(self.prior_weight) + lp, np.log1p(-self.prior_weight) + self._sparse.log_prob(params)
            )
        return lp, mix

    def log_prob(self, params: np.ndarray) -> np.ndarray:
        """Log density (n,) in the measure of :meth:`Prior.log_prob`; -inf outside the support."""
        return self._log_prior_and_proposal(params)[1]

    def log_acceptance(self, params: np.ndarray) -> np.ndarray:
        """``log(lambda * prior / proposal)`` (n,), at most 0; -inf outside the support."""
        lp, mix = self._log_prior_and_proposal(params)
        out = np.full(lp.shape, -np.inf)
        inside = np.isfinite(lp)
        out[inside] = np.minimum(np.log(self.prior_weight) + lp[inside] - mix[inside], 0.0)
        return out

    def accept(self, params: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Boolean mask (n,): keep a draw of the proposal (or of a posterior under it) so that the
        kept ones follow the prior (or the posterior under the prior)."""
        la = self.log_acceptance(params)
        return np.log(np.random.default_rng(rng).random(la.shape)) < la


@dataclass(frozen=True, eq=False)
class BoxedPrior:
    """A :class:`Prior` whose fractions are conditioned on ``f_lo <= f <= f_hi``
    (:meth:`Prior.restrict`): draws by rejection of the Dirichlet, which keeps ``acceptance``
    of its draws."""

    prior: Prior
    f_lo: np.ndarray
    f_hi: np.ndarray
    acceptance: float

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``n`` parameter vectors (n, 7) inside the box."""
        gen = np.random.default_rng(rng)
        parts: list[np.ndarray] = []
        have = 0
        while have < n:
            draw = self.prior.sample(int(1.2 * (n - have) / self.acceptance) + 64, gen)
            draw = draw[np.all((draw[:, 2:] >= self.f_lo) & (draw[:, 2:] <= self.f_hi), axis=1)]
            parts.append(draw)
            have += len(draw)
        return np.concatenate(parts)[:n]
