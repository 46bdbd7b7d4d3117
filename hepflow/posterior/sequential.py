"""Sequential refinement of a posterior for one observation: truncated sequential NPE (TSNPE).

An amortized cINN ``q(theta | x)`` is trained over the whole prior; for one observation ``x_o``
it can be far from the exact posterior (the amortisation gap), or miss a mode altogether. Given
the simulator, :func:`refine` spends a simulation budget on ``x_o`` alone, in rounds
(Deistler, Goncalves and Macke 2022, "Truncated proposals for scalable and hassle-free
simulation-based inference", arXiv:2210.04815):

1. **region**: the highest-density region (HPR) of the current posterior estimate at ``x_o``
   at level ``1 - eps`` (``eps`` ~ 1e-4): ``{theta: log q(theta | x_o) >= tau}``, the threshold
   ``tau`` the ``eps`` quantile of ``log q`` over draws of ``q`` itself
   (:class:`HighDensityRegion`);
2. **proposal**: the prior truncated to the region (:class:`TruncatedPrior`), drawn by
   rejection from the prior, or, when the region holds too little prior mass for that, by
   rejection from the prior restricted to a box around the region (priors with ``restrict``),
   or by sampling-importance-resampling (SIR) from a defensive mixture of the prior and a
   density that covers the region (the tempered flow, or uniform draws in a seed ball);
3. **simulate** ``simulations_per_round`` pseudo-observations from the proposal;
4. **train** (fine-tune the previous network, or train a fresh one) with the plain NPE loss,
   ``-log q(theta | x)``, on the simulations of **all** rounds.

**Why no proposal correction.** A round's proposal is ``pi(theta) w_r(theta)`` with
``w_r = 1_R / pi(R)``; the data of all rounds follow ``pi(theta) W(theta)`` with
``W = sum_r (n_r / N) w_r``, so the network learns ``q ∝ L(x_o | theta) pi(theta) W(theta)``.
``W`` is constant on the intersection of the regions, and every region contains the
posterior's HPR, so there ``q`` is the posterior under the **prior**, up to the ``eps`` mass the
regions cut off (Deistler et al., section 3). The result is a
:class:`~hepflow.posterior.base.FlowPosterior` (``sample`` / ``log_prob``) of the last network.
:attr:`Refinement.off_intersection` checks the premise on the final draws: the fraction of them
where ``W`` is not constant (0 when they all lie in the intersection). An SIR proposal
is the truncated prior only approximately (its efficiency is recorded per round), and a region
that misses part of the posterior biases the result; where the likelihood can be evaluated,
importance weights (:mod:`hepflow.posterior.importance`) are the check.

**Seeds: reaching modes the estimator misses.** The caller may pass seed points
``theta_s`` where posterior mass may lie that the initial estimator does not see (modes of the
likelihood from a multi-start optimiser, likelihood-weighted prior draws). The neighbourhood of
a seed is a ball (:class:`SeedBall`) of radius ``seed_radius`` around it in the flow's
**unconstrained coordinates** (its support transforms: logits of a box, log ratios or
stick-breaking logits of a simplex, so a seed with a fraction of 1e-5 has neighbours at 1e-6 and
1e-4, not at -0.05), each coordinate in units of its spread in the estimator's training data, and
``seed_shells`` nested balls of radii ``seed_radius / 2^k`` (a sharp likelihood needs simulations
close to the seed, a broad posterior needs the outer ball). The
first proposal is the mixture of the prior truncated to the estimator's HPR (share
``1 - seed_share``) and the prior truncated to each seed ball (``seed_share`` split equally):
a seed ball gets its share of the simulations however little prior mass it holds (a prior
truncated to the union would give it almost none). That proposal is ``pi W_1`` with ``W_1``
piecewise constant and known exactly (shares over estimated prior masses). The network then
learns ``L pi W``, which overweights the seed balls; each later region is the HPR of that
estimate itself (conservative: a seeded mode stays in the next region even where the network
has learned it only partly), or, with ``regions="corrected"``, of the estimate corrected by
``1 / W`` (its threshold from importance-weighted draws; right when the network is, but it drops
a seeded mode the network underestimates), or, with ``regions="union"``, the union of both (the
seeded mode stays, and so does an unseeded mode that the seeds' large ``W`` pushes out of the
uncorrected HPR). Where the final posterior spans components of
different ``W`` (two modes, one seeded; nested seed balls), the plain loss weights them by
``W``; ``reweight=True`` trains with weights ``1 / W`` instead, which is exact on the union of
the regions, at the cost of effective sample size (and a seed ball of tiny prior mass then
weighs so little that the network never learns its mode); ``correct=True`` (with the plain
loss in the rounds) fine-tunes once more on all simulations weighted by ``1 / W``, so that
each seeded mode is learned from its own simulations and then given its mass under the prior.

**Temperature.** ``temperature > 1`` defines each HPR, and draws the SIR mixture's flow
component, with the flow's base distribution widened to ``N(0, temperature^2)``: a broader,
safer region for an estimator that is too narrow (more simulations land off the posterior).

Example (a Gaussian linear toy with a known posterior, :mod:`hepflow.posterior.toys`):
    >>> import numpy as np, hepflow
    >>> from hepflow.posterior.toys import GaussianLinear
    >>> toy = GaussianLinear(dim=2, noise=0.3)
    >>> theta = toy.prior.sample(2000, rng=0)
    >>> net = hepflow.ConditionalINN(2, 2, blocks="affine", depth=3, width=32, seed=0)
    >>> _ = hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=5, progress=False, seed=0)
    >>> x_o = np.array([[1.5, -1.0]])
    >>> result = refine(toy.simulate, toy.prior, x_o, estimator=net, rounds=2, simulations_per_round=2000,
    ...                 epochs=20, fit_options={"batch_size": 128, "lr": 3e-3}, seed=1)
    >>> draws, _ = result.posterior.sample(4000, x_o, seed=2)
    >>> mean, sd = toy.posterior_mean_sd(x_o[0])
    >>> bool(np.all(np.abs(draws[0].mean(0) - mean) < 0.3 * sd))
    True
    >>> [r.method for r in result.rounds], result.simulations
    (['rejection', 'rejection'], 4000)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from scipy.special import logsumexp

from hepflow.errors import ConfigError, ModelError
from hepflow.posterior.base import FlowPosterior, torch_generator

__all__ = [
    "HighDensityRegion",
    "PriorLike",
    "Proposal",
    "Refinement",
    "RoundRecord",
    "SeedBall",
    "TruncatedPrior",
    "Union",
    "refine",
]

#: what a later round's region can be the HPR of (:func:`refine`'s ``regions``)
_REGIONS = ("estimate", "corrected", "union")

#: rows per flow evaluation (bounds the memory of one pass)
_CHUNK = 2**15

#: ``theta -> log W(theta)`` (n,): the pooled proposal-to-prior ratio of earlier rounds
LogWeight = Callable[[np.ndarray], np.ndarray]


class PriorLike(Protocol):
    """What :func:`refine` needs of a prior: draws and a log density (``-inf`` outside)."""

    def sample(self, n: int, rng: Any = None) -> np.ndarray:  # pragma: no cover - protocol
        ...

    def log_prob(self, theta: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        ...


def _torch_rows(model: Any, theta: np.ndarray) -> Any:
    import torch

    t = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    out = t.to(model.theta_scaler.mean.dtype)
    if model.support.active:
        out = model.support.round_inside(out, t)
    return out


def flow_log_prob(model: Any, context: Any, theta: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """``log q_T(theta | x_o)`` (n,) of a flow at one observation's context (float64, in chunks)."""
    theta = np.asarray(theta, dtype=np.float64)
    out = np.empty(len(theta))
    for s in range(0, len(theta), _CHUNK):
        rows = _torch_rows(model, theta[s : s + _CHUNK])
        lp = model.log_prob_grouped(rows[None], context, temperature=temperature)
        out[s : s + _CHUNK] = lp[0].double().cpu().numpy()
    return out


class HighDensityRegion:
    """``{theta: log q_T(theta | x_o) - log W(theta) >= threshold}``: the HPR of a flow's estimate.

    Arguments:
        model: the flow (:class:`~hepflow.flows.inn.ConditionalINN`, eval mode).
        context: the model context of the one observation (a batch of one).
        threshold: the log-density threshold (:meth:`threshold_of` computes it).
        temperature: the flow's base-distribution width (see :func:`refine`).
        log_weight: ``log W`` of the proposals the flow was trained on (None: constant), so that
            the region is the HPR of the estimate corrected back to the prior.
        log_weight_floor: ``log W`` taken where ``log_weight`` is ``-inf`` (outside every earlier
            region, where the network extrapolates): the smallest ``W`` inside them, so that a
            region can grow beyond the earlier ones.
        widen: the SIR instrumental is the flow at ``widen x temperature`` (:meth:`sample`,
            :meth:`log_density`): the prior truncated to an HPR is spread over the whole region,
            while the flow's draws crowd its centre.

    Example:
        >>> import numpy as np, hepflow
        >>> net = hepflow.ConditionalINN(1, 1, depth=1, width=8, seed=0).eval()
        >>> ctx = np.zeros((1, 1), np.float32)
        >>> tau = HighDensityRegion.threshold_of(net, ctx, eps=0.05, samples=4000, seed=0)
        >>> region = HighDensityRegion(net, ctx, tau, widen=1.0)  # draws of the flow itself
        >>> x = region.sample(4000, np.random.default_rng(1))
        >>> bool(0.9 < region.contains(x).mean() < 1.0)
        True
    """

    def __init__(
        self,
        model: Any,
        context: Any,
        threshold: float,
        *,
        temperature: float = 1.0,
        log_weight: LogWeight | None = None,
        log_weight_floor: float = -math.inf,
        widen: float = 2.0,
    ) -> None:
        if math.isnan(threshold):
            raise ConfigError("HighDensityRegion: the threshold is NaN")
        self.model = model
        self.context = context
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.log_weight = log_weight
        self.log_weight_floor = float(log_weight_floor)
        self.widen = float(widen)

    def corrected_log_q(self, theta: np.ndarray) -> np.ndarray:
        """``log q_T(theta | x_o) - log W(theta)`` (n,)."""
        lq = flow_log_prob(self.model, self.context, theta, temperature=self.temperature)
        if self.log_weight is None:
            return lq
        lw = self.log_weight(theta)
        lw = np.where(np.isfinite(lw), lw, self.log_weight_floor)
        with np.errstate(invalid="ignore"):
            out = lq - lw
        return np.where(np.isfinite(out), out, -np.inf)

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): ``theta`` lies in the region."""
        return self.corrected_log_q(theta) >= self.threshold

    def sample(self, n: int, gen: np.random.Generator) -> np.ndarray:
        """``n`` draws of the widened flow (the region's SIR instrumental)."""
        theta, _ = FlowPosterior(self.model).sample_context(
            n,
            self.context,
            generator=torch_generator(int(gen.integers(2**62))),
            temperature=self.temperature * self.widen,
        )
        return theta[0]

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """The widened flow's log density (n,) (the instrumental of :meth:`sample`)."""
        return flow_log_prob(self.model, self.context, theta, temperature=self.temperature * self.widen)

    @staticmethod
    def threshold_of(
        model: Any,
        context: Any,
        *,
        eps: float = 1e-4,
        samples: int = 20_000,
        temperature: float = 1.0,
        log_weight: LogWeight | None = None,
        log_weight_floor: float = -math.inf,
        seed: int | None = None,
    ) -> float:
        """The threshold of the ``1 - eps`` HPR: the ``eps`` quantile of ``log q_T - log W`` over
        ``samples`` draws of ``q_T``, each weighted by ``1 / W`` (self-normalised) when
        ``log_weight`` is given, so that the quantile is that of the corrected estimate."""
        post = FlowPosterior(model)
        theta, lq = post.sample_context(
            samples, context, generator=torch_generator(seed), log_prob=True, temperature=temperature
        )
        theta, lq = theta[0], lq[0]
        lw = np.zeros_like(lq) if log_weight is None else log_weight(theta)
        lw = np.where(np.isfinite(lw), lw, log_weight_floor)
        c = lq - lw
        ok = np.isfinite(c)
        if not ok.any():
            raise ModelError("the estimator's density is not finite at any of its own draws")
        c, lw = c[ok], lw[ok]
        order = np.argsort(c)
        w = np.exp(-(lw[order] - lw.min()))
        cdf = np.cumsum(w) / w.sum()
        return float(c[order][min(int(np.searchsorted(cdf, eps)), len(c) - 1)])


class SeedBall:
    """A ball of radius ``radius`` (in units of ``scale``) around ``center`` in the flow's
    unconstrained coordinates (its support transforms); its SIR instrumental is the uniform
    distribution in the ball.

    Example:
        >>> import numpy as np, hepflow
        >>> net = hepflow.ConditionalINN(1, 1, depth=1, width=8, seed=0).eval()
        >>> ball = SeedBall(net, np.array([5.0]), radius=0.1, scale=np.ones(1))
        >>> ball.contains(np.array([[5.05], [0.0]])).tolist()
        [True, False]
        >>> bool(ball.contains(ball.sample(100, np.random.default_rng(0))).all())
        True
    """

    def __init__(self, model: Any, center: np.ndarray, *, radius: float, scale: np.ndarray) -> None:
        if not (math.isfinite(radius) and radius > 0):
            raise ConfigError(f"seed_radius must be a positive number, got {radius!r}")
        self.model = model
        self.center = np.asarray(center, dtype=np.float64)
        self.radius = float(radius)
        d = int(model.latent_dim)
        self.scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,)).copy()
        u, _ = self.unconstrained(self.center[None])
        if not np.isfinite(u).all():
            raise ConfigError(f"seed {self.center.tolist()} lies outside the flow's support")
        self.center_u = u[0]
        #: log volume of the ball in the unconstrained coordinates
        self.log_volume = float(
            0.5 * d * math.log(math.pi)
            - math.lgamma(0.5 * d + 1)
            + d * math.log(self.radius)
            + np.log(self.scale).sum()
        )

    def unconstrained(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(u (n, latent), log |du/dtheta| (n,))``: the flow's support transform; inf outside."""
        import torch

        m = self.model
        t = _torch_rows(m, theta)
        with torch.no_grad():
            inside = m.support.contains(t) if m.support.active else None
            if inside is not None:
                t = torch.where(inside[:, None], t, m.support.interior(t.dtype, t.device))
            u, ld = m.support(t)
        u, ld = u.double().cpu().numpy(), ld.double().cpu().numpy()
        if inside is not None:
            bad = ~inside.cpu().numpy()
            u[bad], ld[bad] = np.inf, -np.inf
        return u, ld

    def _r2(self, u: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            r2 = (((u - self.center_u) / (self.radius * self.scale)) ** 2).sum(-1)
        return np.where(np.isfinite(r2), r2, np.inf)

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): inside the ball."""
        return self._r2(self.unconstrained(theta)[0]) <= 1.0

    def sample(self, n: int, gen: np.random.Generator) -> np.ndarray:
        """``n`` draws (n, theta_dim) uniform in the ball (in the unconstrained coordinates)."""
        import torch

        d = len(self.scale)
        direction = gen.standard_normal((n, d))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        r = gen.random(n) ** (1.0 / d)
        u = self.center_u + direction * r[:, None] * (self.radius * self.scale)
        with torch.no_grad():
            theta, _ = self.model.support.inverse(torch.as_tensor(u).to(self.model.theta_scaler.mean.dtype))
        return FlowPosterior(self.model).as_array(theta)

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """Log density (n,) in ``theta`` of :meth:`sample`'s draws (``-inf`` outside the ball)."""
        u, ld = self.unconstrained(theta)
        out = ld - self.log_volume
        return np.where((self._r2(u) <= 1.0) & np.isfinite(out), out, -np.inf)


#: the most prior draws :func:`_rejection` holds at once
_MAX_BATCH = 2**20


def _rejection(
    prior: Any, region: Any, n: int, gen: np.random.Generator, min_acceptance: float
) -> tuple[np.ndarray | None, float]:
    """``n`` draws of ``prior`` inside ``region`` by rejection, and the acceptance; ``(None,
    rate)`` as soon as the acceptance falls below ``min_acceptance``."""
    kept: list[np.ndarray] = []
    have = drawn = 0
    batch = max(n, 4096)
    rate = 0.0
    while have < n:
        batch = min(batch, _MAX_BATCH)  # memory: at most ~2^20 parameter rows at once
        theta = np.asarray(prior.sample(batch, gen), dtype=np.float64)
        inside = region.contains(theta)
        drawn += batch
        kept.append(theta[inside])
        have += int(inside.sum())
        rate = have / drawn
        if have < n and rate < min_acceptance:
            return None, rate
        batch = math.ceil(1.2 * (n - have) / max(rate, min_acceptance)) + 64
    return np.concatenate(kept)[:n], rate


class Box:
    """The axis-aligned box ``lower <= theta <= upper`` (infinite bounds leave a coordinate free).

    Example:
        >>> import numpy as np
        >>> box = Box(np.array([0.0, -np.inf]), np.array([1.0, np.inf]))
        >>> box.contains(np.array([[0.5, 9.0], [2.0, 0.0]]))
        array([ True, False])
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): inside the box."""
        t = np.asarray(theta, dtype=np.float64)
        return np.all((t >= self.lower) & (t <= self.upper), axis=1)


class TruncatedPrior:
    """The prior truncated to a region: ``pi(theta) 1_R(theta) / pi(R)``.

    :meth:`sample` draws by rejection from the prior while the acceptance stays above
    ``min_acceptance``. Below it, a prior that can be restricted to a box (a method
    ``restrict(lower, upper) -> (restricted prior, its prior mass, lower, upper)``, the bounds
    it applied, infinite where it reaches the prior's own bound) is drawn by rejection from the
    prior restricted to a box around the region (:meth:`_boxed`): exact draws, all distinct.
    Otherwise, or when that acceptance is too low too, by sampling-importance-resampling from a pool of
    ``sir_pool x n`` draws of the defensive mixture ``defensive x prior + (1 - defensive) x``
    the region's own instrumental (its ``sample`` / ``log_density``), weighted by
    ``pi 1_R / mixture``. Either way the prior mass ``pi(R)`` is estimated (the acceptance rate,
    or the mean importance weight of the pool); :meth:`log_prob` is ``log pi - log pi(R)``
    inside the region and ``-inf`` outside.

    Example:
        >>> import numpy as np, hepflow
        >>> from hepflow.posterior.toys import GaussianPrior
        >>> net = hepflow.ConditionalINN(1, 1, depth=1, width=8, seed=0).eval()
        >>> positive = SeedBall(net, np.array([10.0]), radius=10.0, scale=np.ones(1))  # (0, 20)
        >>> half = TruncatedPrior(GaussianPrior(1), positive)
        >>> x = half.sample(1000, rng=0)
        >>> bool((x > 0).all()), half.method, round(half.prior_mass, 1)
        (True, 'rejection', 0.5)
        >>> half.log_prob(np.array([[-1.0], [1.0]])).round(1).tolist()  # log N(1; 0, 1) + log 2
        [-inf, -0.7]
    """

    def __init__(
        self,
        prior: PriorLike,
        region: Any,
        *,
        min_acceptance: float = 0.02,
        sir_pool: int = 20,
        defensive: float = 0.1,
        box_probe: int = 20_000,
        box_margin: float = 0.5,
    ) -> None:
        if not 0 < min_acceptance < 1:
            raise ConfigError(f"min_acceptance must lie in (0, 1), got {min_acceptance}")
        if sir_pool < 2:
            raise ConfigError(f"sir_pool must be >= 2, got {sir_pool}")
        if not 0 < defensive < 1:
            raise ConfigError(f"defensive must lie in (0, 1), got {defensive}")
        self.prior = prior
        self.region = region
        self.min_acceptance = float(min_acceptance)
        self.sir_pool = int(sir_pool)
        self.defensive = float(defensive)
        if box_probe < 10 or not box_margin > 0:
            raise ConfigError(f"box_probe must be >= 10 and box_margin > 0, got {box_probe}, {box_margin}")
        self.box_probe = int(box_probe)
        self.box_margin = float(box_margin)
        #: how :meth:`sample` drew: "rejection", "box-rejection" or "sir" (None before)
        self.method: str | None = None
        #: the estimated prior mass of the region
        self.prior_mass = math.nan
        #: the acceptance of the prior draws (rejection) or the SIR pool's ESS / size
        self.efficiency = math.nan

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws ``(n, theta_dim)`` of the truncated prior."""
        if n < 1:
            raise ConfigError(f"TruncatedPrior.sample: n must be >= 1, got {n}")
        gen = np.random.default_rng(rng)
        theta, rate = _rejection(self.prior, self.region, n, gen, self.min_acceptance)
        if theta is None and hasattr(self.prior, "restrict"):
            theta = self._boxed(n, gen)
            if theta is not None:
                return theta
        if theta is None:
            return self._sir(n, gen)
        self.method = "rejection"
        self.prior_mass = self.efficiency = rate
        return theta

    def _boxed(self, n: int, gen: np.random.Generator) -> np.ndarray | None:
        """Rejection from the prior restricted to a box around the region (``prior.restrict``),
        or None when the region cannot be boxed with enough acceptance.

        The box: the range of ``box_probe`` draws of the region's instrumental that lie in it,
        padded by ``box_margin`` times that range on each side. Draws of the restricted prior
        that lie in the region are draws of the prior truncated to region ∩ box, which is the
        region itself unless the region reaches beyond the box; accepted draws within 2 % of a
        face of the box (one that cuts the prior) show that it might, and the box grows (twice
        at most). The region becomes ``Intersection(region, box)``, so that :meth:`log_prob`
        and the proposal's ratio stay exact.
        """
        probe = np.asarray(self.region.sample(self.box_probe, gen), dtype=np.float64)
        probe = probe[self.region.contains(probe)]
        if len(probe) < 10:
            return None
        lo, hi = probe.min(axis=0), probe.max(axis=0)
        span = np.maximum(hi - lo, 1e-12)
        for _ in range(3):
            asked_lo, asked_hi = lo - self.box_margin * span, hi + self.box_margin * span
            try:
                restricted, mass, lower, upper = self.prior.restrict(asked_lo, asked_hi)
            except ConfigError:  # the box misses the prior's support: no boxing
                return None
            box = Box(lower, upper)
            region = Intersection(self.region, box)
            theta, rate = _rejection(restricted, region, n, gen, self.min_acceptance)
            if theta is None:
                return None
            # only the faces that cut the prior count (a face at the prior's own bound is infinite);
            # 2 % of the box's asked width from one of them is "near"
            width = asked_hi - asked_lo
            near = (np.isfinite(lower) & (theta - lower < 0.02 * width)) | (
                np.isfinite(upper) & (upper - theta < 0.02 * width)
            )
            if not near.any():
                self.region = region
                self.method = "box-rejection"
                self.efficiency = rate
                self.prior_mass = mass * rate
                return theta
            span = 3.0 * span  # the region reaches the box: a wider one
        return None

    def _sir(self, n: int, gen: np.random.Generator) -> np.ndarray:
        pool = self.sir_pool * n
        k = int(gen.binomial(pool, self.defensive))
        theta = np.concatenate(
            [np.asarray(self.prior.sample(k, gen), dtype=np.float64), self.region.sample(pool - k, gen)]
        )
        log_prior = np.asarray(self.prior.log_prob(theta), dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_g = np.logaddexp(
                math.log(self.defensive) + log_prior,
                math.log1p(-self.defensive) + self.region.log_density(theta),
            )
        inside = self.region.contains(theta) & np.isfinite(log_prior) & np.isfinite(log_g)
        log_w = np.full(pool, -np.inf)
        log_w[inside] = log_prior[inside] - log_g[inside]
        if not inside.any():
            raise ModelError(
                f"none of {pool} draws of the prior and of the region's instrumental lies in the "
                "proposal region: check the prior, the seeds and the observation"
            )
        self.prior_mass = float(np.exp(logsumexp(log_w) - math.log(pool)))
        w = np.exp(log_w - logsumexp(log_w))
        self.method = "sir"
        self.efficiency = float(1.0 / np.sum(w * w)) / pool
        return theta[gen.choice(pool, size=n, p=w)]

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """``log pi(theta) - log pi(R)`` inside the region, ``-inf`` outside (after :meth:`sample`)."""
        if not math.isfinite(self.prior_mass):
            raise ModelError("TruncatedPrior.log_prob: sample() estimates the prior mass of the region first")
        lp = np.asarray(self.prior.log_prob(np.asarray(theta, dtype=np.float64)), dtype=np.float64)
        return np.where(self.region.contains(theta), lp - math.log(self.prior_mass), -np.inf)


class Intersection:
    """``a ∩ b`` of two regions; draws and density of ``a``'s instrumental (for SIR)."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): inside both."""
        inside = self.a.contains(theta)
        if inside.any():
            inside[inside] = self.b.contains(np.asarray(theta)[inside])
        return inside

    def sample(self, n: int, gen: np.random.Generator) -> np.ndarray:
        """Draws of ``a``'s instrumental."""
        return self.a.sample(n, gen)

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """Log density of ``a``'s instrumental."""
        return self.a.log_density(theta)


class Union:
    """``a ∪ b`` of two regions; its instrumental (for SIR) is the equal mixture of theirs.

    Example:
        >>> import numpy as np, hepflow
        >>> net = hepflow.ConditionalINN(1, 1, depth=1, width=8, seed=0).eval()
        >>> a = SeedBall(net, np.array([-5.0]), radius=1.0, scale=np.ones(1))
        >>> b = SeedBall(net, np.array([5.0]), radius=1.0, scale=np.ones(1))
        >>> Union(a, b).contains(np.array([[-5.5], [0.0], [4.5]])).tolist()
        [True, False, True]
    """

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): inside either."""
        return self.a.contains(theta) | self.b.contains(theta)

    def sample(self, n: int, gen: np.random.Generator) -> np.ndarray:
        """Draws of the equal mixture of ``a``'s and ``b``'s instrumentals, shuffled."""
        k = int(gen.binomial(n, 0.5))
        parts = [r.sample(m, gen) for r, m in ((self.a, k), (self.b, n - k)) if m > 0]
        if not parts:
            return np.empty((0, self.a.sample(1, gen).shape[1]))
        return np.concatenate(parts)[gen.permutation(n)]

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """Log density of :meth:`sample`'s mixture."""
        with np.errstate(divide="ignore"):
            return np.logaddexp(self.a.log_density(theta), self.b.log_density(theta)) - math.log(2.0)


class Proposal:
    """A round's proposal: ``sum_k a_k x`` the prior truncated to region ``k`` (shares ``a_k``).

    One component is the plain TSNPE proposal; the first round with seeds has the estimator's
    HPR and one :class:`SeedBall` per seed. :meth:`log_ratio` is ``log(proposal / prior)
    = log sum_k a_k 1_{R_k} / pi(R_k)`` (``-inf`` outside every region).
    """

    def __init__(self, components: Sequence[TruncatedPrior], shares: Sequence[float]) -> None:
        if len(components) != len(shares) or not components:
            raise ConfigError("a proposal needs one share per component, and at least one component")
        a = np.asarray(shares, dtype=np.float64)
        if np.any(a <= 0) or not math.isclose(float(a.sum()), 1.0, rel_tol=1e-9):
            raise ConfigError(f"proposal shares must be positive and sum to one, got {a.tolist()}")
        self.components = list(components)
        self.shares = a

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws: a multinomial number from each component, shuffled."""
        gen = np.random.default_rng(rng)
        counts = gen.multinomial(n, self.shares)
        parts = [c.sample(int(k), gen) for c, k in zip(self.components, counts, strict=True) if k > 0]
        theta = np.concatenate(parts)
        return theta[gen.permutation(len(theta))]

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): inside some component's region."""
        out = np.zeros(len(theta), dtype=bool)
        for c in self.components:
            out |= c.region.contains(theta)
        return out

    def log_ratio(self, theta: np.ndarray) -> np.ndarray:
        """``log(proposal(theta) / prior(theta))`` (n,) (after :meth:`sample`)."""
        terms = [
            np.where(c.region.contains(theta), math.log(a) - math.log(c.prior_mass), -np.inf)
            for c, a in zip(self.components, self.shares, strict=True)
        ]
        return logsumexp(np.stack(terms), axis=0)

    @property
    def prior_mass(self) -> float:
        """The estimated prior mass of the components' regions, summed (overlaps counted twice)."""
        return float(sum(c.prior_mass for c in self.components))

    @property
    def method(self) -> str:
        """How the components were drawn (``rejection``, ``box-rejection``, ``sir``, joined by ``+``)."""
        return "+".join(sorted({str(c.method) for c in self.components}))

    @property
    def efficiency(self) -> float:
        """The smallest efficiency of its components."""
        return float(min(c.efficiency for c in self.components))


@dataclass(frozen=True)
class RoundRecord:
    """What one round of :func:`refine` did."""

    round: int
    simulations: int
    method: str
    efficiency: float
    prior_mass: float
    threshold: float
    seeds: int
    epochs: int
    best_val_loss: float | None
    proposal_seconds: float
    simulate_seconds: float
    train_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


@dataclass
class Refinement:
    """The result of :func:`refine`.

    Attributes:
        posterior: the refined posterior (``sample`` / ``log_prob`` with respect to the prior).
        model: its network.
        rounds: one :class:`RoundRecord` per round.
        proposals: each round's :class:`Proposal`.
        off_intersection: the fraction of 4000 final draws where the pooled proposal ratio
            ``W`` differs from its median over them (0: they all lie where ``W`` is constant,
            the premise of the uncorrected posterior), or outside every region.
        seconds: the wall time of the whole refinement.
        settings: the options it ran with (for the model's metadata).
    """

    posterior: FlowPosterior
    model: Any
    rounds: list[RoundRecord]
    proposals: list[Proposal]
    off_intersection: float
    seconds: float
    settings: dict[str, Any]

    @property
    def simulations(self) -> int:
        """Simulations of all rounds."""
        return sum(r.simulations for r in self.rounds)

    def metadata(self) -> dict[str, Any]:
        """What a saved refined model records: budget, rounds, seeds, timing, settings."""
        return {
            "simulations": self.simulations,
            "rounds": [r.to_dict() for r in self.rounds],
            "seconds": self.seconds,
            "train_seconds": sum(r.train_seconds for r in self.rounds),
            "simulate_seconds": sum(r.simulate_seconds for r in self.rounds),
            "off_intersection": self.off_intersection,
            **self.settings,
        }


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], Mapping):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return np.concatenate([np.asarray(p) for p in parts])


def _rows(x: Any) -> int:
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def _inverse_w(log_weight: LogWeight, theta: np.ndarray) -> np.ndarray:
    """Training weights ``1 / W(theta)`` (n,), scaled so that the largest is 1."""
    lw = log_weight(theta)
    return np.exp(-(lw - lw.min()))


def pooled_log_weight_floor(proposals: Sequence[Proposal], counts: Sequence[int]) -> float:
    """The smallest ``log W`` inside the regions: ``min_{r, k} log((n_r / N) a_rk / pi(R_rk))``."""
    total = float(sum(counts))
    return min(
        math.log(n / total) + math.log(a) - math.log(c.prior_mass)
        for p, n in zip(proposals, counts, strict=True)
        for c, a in zip(p.components, p.shares, strict=True)
    )


def pooled_log_weight(proposals: Sequence[Proposal], counts: Sequence[int]) -> LogWeight:
    """``theta -> log W(theta)``, ``W = sum_r (n_r / N) proposal_r / prior``: the density of the
    pooled simulations of all rounds relative to the prior."""
    proposals = list(proposals)  # the rounds so far: later rounds must not change this W
    total = float(sum(counts))
    logs = [math.log(n / total) for n in counts]

    def log_w(theta: np.ndarray) -> np.ndarray:
        terms = [lw + p.log_ratio(theta) for p, lw in zip(proposals, logs, strict=True)]
        return logsumexp(np.stack(terms), axis=0)

    return log_w


def refine(
    simulator: Callable[[np.ndarray, np.random.Generator], Any],
    prior: PriorLike,
    observation: Any,
    *,
    estimator: Any,
    features: Callable[[Any], Any] | None = None,
    rounds: int = 3,
    simulations_per_round: int = 10_000,
    epochs: int = 30,
    seeds: np.ndarray | None = None,
    seed_radius: float = 1.0,
    seed_shells: int = 3,
    seed_share: float = 0.5,
    seed_weights: Sequence[float] | None = None,
    keep_seeds: bool = True,
    eps: float = 1e-4,
    temperature: float = 1.0,
    hpr_samples: int = 20_000,
    fine_tune: bool = True,
    reweight: bool = False,
    regions: str = "estimate",
    correct: bool = False,
    fit_options: Mapping[str, Any] | None = None,
    min_acceptance: float = 0.02,
    seed: int = 0,
    callback: Callable[[RoundRecord], None] | None = None,
) -> Refinement:
    """Refine ``estimator``'s posterior for one observation by truncated sequential NPE (module docstring).

    Args:
        simulator: ``(theta (n, theta_dim), rng) -> x`` (n rows: an array or a dict of arrays).
        prior: ``sample(n, rng) -> (n, theta_dim)`` and ``log_prob(theta) -> (n,)``, in the
            same measure as the flow's density (``-inf`` outside the support).
        observation: ``x_o``, one row in the simulator's output format (a batch of one).
        estimator: the initial (amortized) :class:`~hepflow.flows.inn.ConditionalINN`; it is
            copied, never modified.

    Keyword Args:
        features: maps simulator output to the network context (default: the identity).
        rounds: number of rounds (each simulates and trains once).
        simulations_per_round: simulations drawn from each round's proposal.
        epochs: training epochs per round (on the simulations of all rounds so far).
        seeds: ``(m, theta_dim)`` points whose balls join the first proposal (module docstring);
            None for the estimator's HPR alone.
        seed_radius: the radius of the seeds' balls in the unconstrained coordinates, in units
            of their spread in the estimator's training data.
        seed_shells: balls per seed, of radii ``seed_radius / 2^k`` (k = 0 .. shells - 1), sharing
            the seed's simulations equally: where the likelihood is sharp, the inner balls put
            simulations close to the seed, the outer one covers the posterior around it.
        seed_share: the share of each round's simulations drawn in the seed balls.
        seed_weights: relative shares of the seeds (default: equal), e.g. more for the deepest
            mode of a likelihood.
        keep_seeds: in the later rounds, keep drawing ``seed_share`` of the simulations in the
            seed balls that still meet the region (the ball ∩ the HPR, a component of its own);
            the prior truncated to the region alone gives a seeded mode of tiny prior mass almost
            no simulations. False: the later proposals are the prior truncated to the HPR.
        eps: the regions are ``1 - eps`` HPRs.
        temperature: base-distribution width of the flow for the regions and the SIR draws.
        hpr_samples: draws of the flow that set each HPR threshold.
        fine_tune: continue training the previous round's network (True), or train a fresh
            network of the estimator's architecture each round (False; its standardisation is
            then fitted to the truncated data).
        reweight: train with per-simulation weights ``1 / W(theta)`` (module docstring): the
            posterior under the prior restricted to the union of the regions, whatever ``W``
            does there (e.g. modes in different first-round components), at the cost of a
            smaller effective sample size; False: the plain NPE loss of TSNPE, exact where ``W``
            is constant (:attr:`Refinement.off_intersection` checks it).
        correct: after the rounds (plain NPE loss), fine-tune the network once more, ``epochs``
            epochs on the simulations of all rounds weighted by ``1 / W`` (the W-correction): the
            rounds learn each seeded mode from its own simulations, the correction gives it its
            mass under the prior (with ``reweight=True`` from the start, a seed ball of tiny prior
            mass carries so little weight that the network never learns its mode).
        regions: what each later region is the HPR of: ``"estimate"`` (the default), the
            estimate itself (the network overweights the seed balls by ``W``, which keeps a
            seeded mode in the next region even when the network has not learned it fully);
            ``"corrected"``, the estimate corrected by ``1 / W`` (right when the network is, but
            it drops a seeded mode the network underestimates); ``"union"``, the union of both
            (a seeded mode stays, and so does a mode the ``W`` of the seeds suppresses in the
            estimate: without the corrected HPR, a narrow seeded mode can push the other out).
        fit_options: further options of :func:`hepflow.fit` (``lr``, ``batch_size``,
            ``patience``, ``validation_split``, ``device``...).
        min_acceptance: below this rejection acceptance a proposal is drawn by rejection in a box
            (a prior with ``restrict``) or by SIR (:class:`TruncatedPrior`).
        seed: the seed of proposals, simulations and training (round ``r`` uses ``seed + r``).
        callback: called with each round's record when the round is done.

    Returns a :class:`Refinement`: the refined posterior, its network, per-round records.
    Raises :class:`~hepflow.errors.ConfigError` for invalid options.
    """
    import torch

    from hepflow.training.fit import fit

    if rounds < 1 or simulations_per_round < 2 or epochs < 1:
        raise ConfigError(
            f"refine needs rounds >= 1, simulations_per_round >= 2 and epochs >= 1, got rounds={rounds}, "
            f"simulations_per_round={simulations_per_round}, epochs={epochs}"
        )
    if not 0 < eps < 0.5:
        raise ConfigError(f"eps must lie in (0, 0.5), got {eps}")
    if not (isinstance(seed_shells, int) and seed_shells >= 1):
        raise ConfigError(f"seed_shells must be a positive integer, got {seed_shells!r}")
    if not 0 < seed_share < 1:
        raise ConfigError(f"seed_share must lie in (0, 1), got {seed_share}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    if regions not in _REGIONS:
        raise ConfigError(f"regions must be one of {', '.join(_REGIONS)}, got {regions!r}")
    if hpr_samples < 100:
        raise ConfigError(f"hpr_samples must be >= 100, got {hpr_samples}")
    if not hasattr(estimator, "support") or not hasattr(estimator, "log_prob_grouped"):
        raise ConfigError(f"estimator must be a ConditionalINN, got {type(estimator).__name__}")
    options = dict(fit_options or {})
    if clash := sorted({"epochs", "seed", "progress", "weights"} & options.keys()):
        raise ConfigError(f"fit_options must not set {', '.join(clash)}: refine sets them")
    to_context = features if features is not None else (lambda x: x)
    if _rows(observation) != 1:
        raise ConfigError(f"observation must be one row (a batch of one), got {_rows(observation)}")
    seed_arr = None
    if seeds is not None and len(seeds):
        seed_arr = np.asarray(seeds, dtype=np.float64)
        if seed_arr.ndim != 2 or seed_arr.shape[1] != estimator.theta_dim:
            raise ConfigError(f"seeds must have shape (m, {estimator.theta_dim}), got {seed_arr.shape}")
        lp = np.asarray(prior.log_prob(seed_arr))
        if not np.isfinite(lp).all():
            bad = int(np.flatnonzero(~np.isfinite(lp))[0])
            raise ConfigError(f"seed {bad} lies outside the prior's support: {seed_arr[bad].tolist()}")

    t_start = time.perf_counter()
    ctx_o = to_context(observation)
    model = copy.deepcopy(estimator).eval()
    scale = estimator.theta_scaler.std.detach().double().cpu().numpy()
    radii = [seed_radius / 2**k for k in range(seed_shells)]
    ball_shares = np.zeros(0)
    if seed_arr is not None:
        sw = np.ones(len(seed_arr)) if seed_weights is None else np.asarray(seed_weights, dtype=np.float64)
        if sw.shape != (len(seed_arr),) or not np.all(np.isfinite(sw) & (sw > 0)):
            raise ConfigError(f"seed_weights must be {len(seed_arr)} positive numbers, got {seed_weights!r}")
        ball_shares = np.repeat(sw / sw.sum() / len(radii), len(radii))
    balls = (
        []
        if seed_arr is None
        else [SeedBall(model, s, radius=rad, scale=scale) for s in seed_arr for rad in radii]
    )
    thetas: list[np.ndarray] = []
    xs: list[Any] = []
    records: list[RoundRecord] = []
    proposals: list[Proposal] = []
    log_weight: LogWeight | None = None
    floor = -math.inf
    for r in range(rounds):
        gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(r,)))
        t0 = time.perf_counter()
        # the HPR of the current estimate, corrected back to the prior (1 / W of earlier rounds)
        flow_now = copy.deepcopy(model).eval()
        weightings = {"estimate": [None], "corrected": [log_weight], "union": [None, log_weight]}[regions]
        hprs = []
        for region_weight in weightings if r else [None]:  # round 1: the estimator's own HPR
            tau = HighDensityRegion.threshold_of(
                flow_now,
                ctx_o,
                eps=eps,
                samples=hpr_samples,
                temperature=temperature,
                log_weight=region_weight,
                log_weight_floor=floor,
                seed=seed + r,
            )
            hprs.append(
                HighDensityRegion(
                    flow_now,
                    ctx_o,
                    tau,
                    temperature=temperature,
                    log_weight=region_weight,
                    log_weight_floor=floor,
                )
            )
        hpr = hprs[0] if len(hprs) == 1 else Union(*hprs)

        def truncated(region: Any) -> TruncatedPrior:
            return TruncatedPrior(prior, region, min_acceptance=min_acceptance)

        if r == 0 and balls:
            components = [truncated(hpr)] + [truncated(b) for b in balls]
            shares = [1.0 - seed_share, *(seed_share * ball_shares)]
        elif balls and keep_seeds:
            # the seed balls inside the current region keep their share of the simulations
            components = [truncated(hpr)] + [truncated(Intersection(b, hpr)) for b in balls]
            shares = [1.0 - seed_share, *(seed_share * ball_shares)]
        else:
            components, shares = [truncated(hpr)], [1.0]
        theta = None
        while theta is None:
            proposal = Proposal(components, list(np.asarray(shares) / np.sum(shares)))
            try:
                theta = proposal.sample(simulations_per_round, gen)
            except ModelError:
                empty = [i for i, c in enumerate(components) if not math.isfinite(c.prior_mass)]
                if not empty or empty[0] == 0:
                    raise
                # a seed ball that left the region: its simulations go to the others
                del components[empty[0]], shares[empty[0]]
        t1 = time.perf_counter()
        x = simulator(theta, gen)
        if _rows(x) != len(theta):
            raise ModelError(f"the simulator returned {_rows(x)} rows for {len(theta)} parameter vectors")
        t2 = time.perf_counter()
        thetas.append(theta)
        xs.append(x)
        proposals.append(proposal)
        log_weight = pooled_log_weight(proposals, [len(t) for t in thetas])
        floor = pooled_log_weight_floor(proposals, [len(t) for t in thetas])
        if fine_tune:
            net = model
        else:
            from hepflow.flows.inn import ConditionalINN

            cfg = dict(estimator.config())
            cfg["seed"] = seed + r
            net = ConditionalINN.from_config(cfg)
        net.metadata = dict(getattr(estimator, "metadata", {}) or {})
        # the simulations of all rounds so far (after the last round: the correction's too)
        all_theta, all_context = np.concatenate(thetas), to_context(_concat(xs))
        weights = _inverse_w(log_weight, all_theta) if reweight else None
        history = fit(
            net,
            all_theta,
            all_context,
            weights=weights,
            epochs=epochs,
            seed=seed + r,
            progress=False,
            **options,
        )
        model = net.to(torch.device("cpu")).eval()
        t3 = time.perf_counter()
        record = RoundRecord(
            round=r + 1,
            simulations=len(theta),
            method=proposal.method,
            efficiency=proposal.efficiency,
            prior_mass=proposal.prior_mass,
            threshold=hprs[0].threshold,
            seeds=0 if seed_arr is None or (r and not keep_seeds) else len(seed_arr),
            epochs=len(history.train_loss),
            best_val_loss=history.best_val_loss,
            proposal_seconds=t1 - t0,
            simulate_seconds=t2 - t1,
            train_seconds=t3 - t2,
        )
        records.append(record)
        if callback is not None:
            callback(record)
    assert log_weight is not None
    correction = None
    if correct:
        # the W-correction: the plain rounds' network fine-tuned on all simulations weighted by 1 / W
        t0 = time.perf_counter()
        weights = _inverse_w(log_weight, all_theta)
        # all epochs, the last kept: the weighted validation loss is noisy (a few heavy weights) and
        # its best epoch was the first on the cosmic mocks, which left the correction undone
        history = fit(
            model, all_theta, all_context, weights=weights, epochs=epochs, seed=seed + rounds,
            progress=False, **{**options, "patience": None, "restore_best": False},
        )  # fmt: skip
        model = model.to(torch.device("cpu")).eval()
        ess = float(weights.sum() ** 2 / np.sum(weights**2))
        correction = {
            "epochs": len(history.train_loss),
            "best_epoch": history.best_epoch,
            "ess": ess,
            "seconds": time.perf_counter() - t0,
        }
    posterior = FlowPosterior(model, features=features)
    draws, _ = posterior.sample_context(4000, ctx_o, generator=torch_generator(seed))
    lw = log_weight(draws[0])
    finite = np.isfinite(lw)
    typical = float(np.median(lw[finite])) if finite.any() else 0.0
    off = float(np.mean(~finite | (np.abs(lw - typical) > 1e-6)))
    settings = {
        "method": "TSNPE (Deistler et al. 2022, arXiv:2210.04815)",
        "rounds_requested": rounds,
        "simulations_per_round": simulations_per_round,
        "epochs": epochs,
        "eps": eps,
        "temperature": temperature,
        "seed_radius": seed_radius,
        "seed_shells": seed_shells,
        "seed_share": seed_share,
        "seed_weights": None if seed_weights is None else [float(w) for w in seed_weights],
        "keep_seeds": keep_seeds,
        "seed_points": [] if seed_arr is None else seed_arr.tolist(),
        "fine_tune": fine_tune,
        "reweight": reweight,
        "regions": regions,
        "correct": correct,
        "correction": correction,
        "min_acceptance": min_acceptance,
        "seed": seed,
    }
    return Refinement(
        posterior=posterior,
        model=model,
        rounds=records,
        proposals=proposals,
        off_intersection=off,
        seconds=time.perf_counter() - t_start,
        settings=settings,
    )
