"""Sequential refinement of a posterior for one observation: truncated sequential NPE (TSNPE).

An amortized cINN ``q(theta | x)`` is trained over the whole prior; for one observation ``x_o``
it can be far from the exact posterior (the amortisation gap), or miss a mode altogether. Given
the simulator, :func:`refine` spends a simulation budget on ``x_o`` alone, in rounds
(Deistler, Goncalves and Macke 2022, "Truncated proposals for scalable and hassle-free
simulation-based inference", arXiv:2210.04815):

1. **region**: the highest-density region (HPR) of the current posterior estimate at
   ``x_o`` at level ``1 - eps`` (``eps`` ~ 1e-4): ``{theta: log q(theta | x_o) >= tau}``, the
   threshold ``tau`` the ``eps`` quantile of ``log q`` over draws of ``q`` itself. In the first
   round the region is the union of the initial estimator's HPR and **neighbourhoods of seed
   points** supplied by the caller (below), so that it can reach modes the estimator misses;
2. **proposal**: the prior truncated to the region (:class:`TruncatedPrior`), drawn by rejection
   from the prior, or, when the region holds too little prior mass for that, by
   sampling-importance-resampling (SIR) from a defensive mixture of the prior, the
   (tempered) estimator and Gaussians around the seeds;
3. **simulate** ``simulations_per_round`` pseudo-observations from the proposal;
4. **train** (fine-tune the previous network, or train a fresh one) with the plain NPE loss,
   ``-log q(theta | x)``, on the simulations of **all** rounds.

The result is a posterior with the usual ``sample`` / ``log_prob`` interface
(:class:`~hepflow.posterior.base.FlowPosterior`), with respect to the **prior**, with no
proposal correction: each round's proposal is ``pi(theta) 1_R(theta) / pi(R)``, so the data of
all rounds follow ``pi(theta) w(theta)`` with ``w = sum_r 1_{R_r} / pi(R_r)``, which is constant
on the intersection of the regions. Every region contains the posterior's HPR, so the network
learns ``L(x_o | theta) pi(theta) w(theta) ∝ p(theta | x_o)`` there, up to the ``eps`` mass the
regions may cut off (Deistler et al., section 3). An SIR proposal is the truncated prior only
approximately (its efficiency is recorded per round); a region that misses part of the
posterior biases the result, which is why the first region takes the seeds in and why
importance weights with the likelihood (:mod:`hepflow.posterior.importance`), where it can be
evaluated, are the check.

**Seeds.** Points ``theta_s`` where the caller expects posterior mass the estimator may not
see: modes of the likelihood found by a multi-start optimiser, or likelihood-weighted prior
draws. The neighbourhood of a seed is the ``1 - eps`` region of a Gaussian of width
``seed_width`` (in units of the prior's spread) around it in the flow's **unconstrained
coordinates** (the support transforms: logits of a box, log ratios or stick-breaking logits of
a simplex, so a seed with a fraction of 1e-5 has neighbours at 1e-6 and 1e-4, not at -0.05);
the spread is the training standardisation of those coordinates. Seeds enter the first round;
the later regions are the HPRs of the refined estimates, which cover a seeded mode once the
network has learned it.

**Temperature.** ``temperature > 1`` defines each HPR, and draws the SIR mixture's flow
component, with the flow's base distribution widened to ``N(0, temperature^2)``: a broader,
safer region (more simulations land off the posterior) for an estimator that is too narrow.

Example (a Gaussian linear toy with a known posterior, :mod:`hepflow.posterior.toys`):
    >>> import numpy as np, hepflow
    >>> from hepflow.posterior.toys import GaussianLinear
    >>> toy = GaussianLinear(dim=2, noise=0.3)
    >>> theta = toy.prior.sample(2000, rng=0)
    >>> net = hepflow.ConditionalINN(2, 2, depth=2, width=32, seed=0)
    >>> _ = hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=5, progress=False, seed=0)
    >>> x_o = np.array([[1.5, -1.0]])
    >>> result = refine(toy.simulate, toy.prior, x_o, estimator=net, rounds=2,
    ...                 simulations_per_round=2000, epochs=15, seed=1)
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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from hepflow.errors import ConfigError, ModelError
from hepflow.posterior.base import FlowPosterior

__all__ = ["PriorLike", "Refinement", "Region", "RoundRecord", "TruncatedPrior", "refine"]

#: rows per flow evaluation (bounds the memory of one pass)
_CHUNK = 2**15


class PriorLike(Protocol):
    """What :func:`refine` needs of a prior: draws and a log density (``-inf`` outside)."""

    def sample(self, n: int, rng: Any = None) -> np.ndarray:  # pragma: no cover - protocol
        ...

    def log_prob(self, theta: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        ...


def _torch_rows(model: Any, theta: np.ndarray) -> Any:
    import torch

    dtype = model.theta_scaler.mean.dtype
    t = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    out = t.to(dtype)
    if model.support.active:
        out = model.support.round_inside(out, t)
    return out


class Region:
    """``{theta: log q_T(theta | x_o) >= threshold}`` united with Gaussian neighbourhoods of seeds.

    Arguments:
        model: the flow (:class:`~hepflow.flows.inn.ConditionalINN`, eval mode) whose HPR it is.
        context: the model context of the one observation (batch of one).
        threshold: the log-density threshold of the HPR (:meth:`hpr` computes it); ``-inf``
            (everything the flow supports) or ``+inf`` (no HPR, only the seeds) are allowed.
        temperature: the flow's base-distribution width (see :func:`refine`).
        seeds: ``(m, theta_dim)`` seed points, or None.
        seed_width: the Gaussian width around each seed, in units of the flow's training spread
            of the unconstrained coordinates.
        eps: the neighbourhood of a seed is the ``1 - eps`` ball of its Gaussian.
        scale: the spread of the unconstrained coordinates (default: the flow's standardisation).

    Example:
        >>> import numpy as np, hepflow
        >>> net = hepflow.ConditionalINN(1, 1, depth=1, width=8, seed=0).eval()
        >>> r = Region(net, np.zeros((1, 1), np.float32), np.inf, seeds=np.array([[5.0]]), seed_width=0.1)
        >>> r.contains(np.array([[5.05], [0.0]])).tolist()
        [True, False]
    """

    def __init__(
        self,
        model: Any,
        context: Any,
        threshold: float,
        *,
        temperature: float = 1.0,
        seeds: np.ndarray | None = None,
        seed_width: float = 0.1,
        eps: float = 1e-4,
        scale: np.ndarray | None = None,
    ) -> None:
        if math.isnan(threshold):
            raise ConfigError("Region: the threshold is NaN")
        if not (math.isfinite(seed_width) and seed_width > 0):
            raise ConfigError(f"seed_width must be a positive number, got {seed_width!r}")
        self.model = model
        self.context = context
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.eps = float(eps)
        self.seed_width = float(seed_width)
        self.seeds = None if seeds is None or len(seeds) == 0 else np.asarray(seeds, dtype=np.float64)
        d = int(model.latent_dim)
        if scale is None:
            scale = model.theta_scaler.std.detach().double().cpu().numpy()
        self.scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,)).copy()
        #: squared radius of a seed neighbourhood (standardised units)
        self.radius2 = float(stats.chi2.ppf(1.0 - self.eps, d))
        self.seed_u: np.ndarray | None = None
        if self.seeds is not None:
            if self.seeds.ndim != 2 or self.seeds.shape[1] != model.theta_dim:
                raise ConfigError(f"seeds must have shape (m, {model.theta_dim}), got {self.seeds.shape}")
            u, _ = self.unconstrained(self.seeds)
            if not np.isfinite(u).all():
                bad = int(np.flatnonzero(~np.isfinite(u).all(1))[0])
                raise ConfigError(f"seed {bad} lies outside the flow's support: {self.seeds[bad].tolist()}")
            self.seed_u = u

    @property
    def n_seeds(self) -> int:
        """Number of seed points."""
        return 0 if self.seeds is None else len(self.seeds)

    def unconstrained(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(u (n, latent), log |du/dtheta| (n,))``: the flow's support transform; inf outside."""
        import torch

        t = _torch_rows(self.model, theta)
        with torch.no_grad():
            inside = self.model.support.contains(t) if self.model.support.active else None
            safe = t if inside is None else torch.where(inside[:, None], t, self.model.support.interior(t.dtype, t.device))
            u, ld = self.model.support(safe)
        u = u.double().cpu().numpy()
        ld = ld.double().cpu().numpy()
        if inside is not None:
            bad = ~inside.cpu().numpy()
            u[bad] = np.inf
            ld[bad] = -np.inf
        return u, ld

    def constrained(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(theta (n, theta_dim) float64, log |dtheta/du| (n,))``: the inverse support transform."""
        import torch

        dtype = self.model.theta_scaler.mean.dtype
        with torch.no_grad():
            theta, ld = self.model.support.inverse(torch.as_tensor(u).to(dtype))
        return FlowPosterior(self.model).as_array(theta), ld.double().cpu().numpy()

    def log_q(self, theta: np.ndarray) -> np.ndarray:
        """``log q_T(theta | x_o)`` (n,) of the flow at the region's temperature."""
        theta = np.asarray(theta, dtype=np.float64)
        out = np.empty(len(theta))
        for s in range(0, len(theta), _CHUNK):
            rows = _torch_rows(self.model, theta[s : s + _CHUNK])
            lp = self.model.log_prob_grouped(rows[None], self.context, temperature=self.temperature)
            out[s : s + _CHUNK] = lp[0].double().cpu().numpy()
        return out

    def seed_log_density(self, theta: np.ndarray) -> np.ndarray:
        """``(n, m)``: log density of each seed's Gaussian (in ``u``, mapped to ``theta``)."""
        assert self.seed_u is not None
        u, ld = self.unconstrained(theta)
        sd = self.seed_width * self.scale
        with np.errstate(invalid="ignore"):
            r2 = (((u[:, None, :] - self.seed_u[None]) / sd) ** 2).sum(-1)
        norm = -0.5 * len(sd) * math.log(2 * math.pi) - np.log(sd).sum()
        out = norm - 0.5 * r2 + ld[:, None]
        return np.where(np.isfinite(out), out, -np.inf)

    def near_seed(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): inside the neighbourhood of some seed."""
        if self.seed_u is None:
            return np.zeros(len(theta), dtype=bool)
        u, _ = self.unconstrained(theta)
        sd = self.seed_width * self.scale
        with np.errstate(invalid="ignore"):
            r2 = (((u[:, None, :] - self.seed_u[None]) / sd) ** 2).sum(-1)
        return np.any(r2 <= self.radius2, axis=1)

    def contains(self, theta: np.ndarray) -> np.ndarray:
        """Boolean (n,): ``theta`` lies in the region."""
        theta = np.asarray(theta, dtype=np.float64)
        inside = self.near_seed(theta)
        if self.threshold < math.inf:
            rest = ~inside
            if rest.any():
                inside[rest] = self.log_q(theta[rest]) >= self.threshold
        return inside

    @staticmethod
    def hpr(
        model: Any,
        context: Any,
        *,
        eps: float = 1e-4,
        samples: int = 20_000,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> float:
        """The log-density threshold of the flow's ``1 - eps`` HPR at the observation: the ``eps``
        quantile of ``log q_T`` over ``samples`` draws of ``q_T`` itself."""
        from hepflow.posterior.base import torch_generator

        post = FlowPosterior(model)
        _, lq = post.sample_context(
            samples, context, generator=torch_generator(seed), log_prob=True, temperature=temperature
        )
        lq = lq[0][np.isfinite(lq[0])]
        if lq.size == 0:
            raise ModelError("the estimator's density is not finite at any of its own draws")
        return float(np.quantile(lq, eps))


@dataclass
class TruncatedPrior:
    """The prior truncated to a :class:`Region`: ``pi(theta) 1_R(theta) / pi(R)``.

    :meth:`sample` draws by rejection from the prior while the acceptance stays above
    ``min_acceptance``; below it, by sampling-importance-resampling from a pool of
    ``sir_pool x n`` draws of a defensive mixture (``defensive`` of the prior, the rest split
    between the region's flow at its temperature and the Gaussians around its seeds), weighted
    by ``pi 1_R / mixture``. Either way the prior mass ``pi(R)`` is estimated (the acceptance
    rate, or the mean importance weight of the pool), and :meth:`log_prob` is
    ``log pi(theta) - log pi(R)`` inside the region, ``-inf`` outside.

    Example:
        >>> import numpy as np, hepflow
        >>> from hepflow.posterior.toys import GaussianPrior
        >>> net = hepflow.ConditionalINN(1, 1, depth=1, width=8, seed=0).eval()
        >>> region = Region(net, np.zeros((1, 1), np.float32), np.inf, seeds=np.array([[0.5]]), seed_width=0.2)
        >>> tp = TruncatedPrior(GaussianPrior(1), region)
        >>> x = tp.sample(1000, rng=0)
        >>> bool(region.contains(x).all()), tp.method, round(tp.prior_mass, 1)
        (True, 'rejection', 0.5)
    """

    prior: Any
    region: Region
    min_acceptance: float = 0.02
    sir_pool: int = 20
    defensive: float = 0.1
    #: how the last :meth:`sample` drew: "rejection" or "sir"
    method: str | None = None
    #: the estimated prior mass of the region
    prior_mass: float = math.nan
    #: the acceptance rate of the prior draws (rejection) or the pool's ESS / size (SIR)
    efficiency: float = math.nan
    prior_draws: int = 0
    _log_mass: float = field(default=math.nan, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_acceptance < 1:
            raise ConfigError(f"min_acceptance must lie in (0, 1), got {self.min_acceptance}")
        if self.sir_pool < 2:
            raise ConfigError(f"sir_pool must be >= 2, got {self.sir_pool}")
        if not 0 < self.defensive < 1:
            raise ConfigError(f"defensive must lie in (0, 1), got {self.defensive}")

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws ``(n, theta_dim)`` of the truncated prior."""
        if n < 1:
            raise ConfigError(f"TruncatedPrior.sample: n must be >= 1, got {n}")
        gen = np.random.default_rng(rng)
        kept: list[np.ndarray] = []
        have = drawn = accepted = 0
        batch = max(n, 4096)
        while have < n:
            theta = np.asarray(self.prior.sample(batch, gen), dtype=np.float64)
            inside = self.region.contains(theta)
            drawn += batch
            accepted += int(inside.sum())
            kept.append(theta[inside])
            have += int(inside.sum())
            rate = accepted / drawn
            if have < n and rate < self.min_acceptance:
                return self._sir(n, gen, drawn)
            batch = int(math.ceil(1.2 * (n - have) / max(rate, self.min_acceptance))) + 64
        self.method, self.prior_draws = "rejection", drawn
        self.prior_mass = self.efficiency = accepted / drawn
        self._log_mass = math.log(self.prior_mass)
        return np.concatenate(kept)[:n]

    def _sir(self, n: int, gen: np.random.Generator, prior_draws: int) -> np.ndarray:
        from hepflow.posterior.base import torch_generator

        region = self.region
        pool = self.sir_pool * n
        parts = ["prior", *(["flow"] if region.threshold < math.inf else []), *(["seeds"] if region.n_seeds else [])]
        rest = (1.0 - self.defensive) / (len(parts) - 1) if len(parts) > 1 else 0.0
        weights = {p: (self.defensive if p == "prior" else rest) for p in parts}
        if len(parts) == 1:
            weights["prior"] = 1.0
        counts = gen.multinomial(pool, [weights[p] for p in parts])
        draws = []
        for part, k in zip(parts, counts, strict=True):
            if k == 0:
                continue
            if part == "prior":
                draws.append(np.asarray(self.prior.sample(int(k), gen), dtype=np.float64))
            elif part == "flow":
                th, _ = FlowPosterior(region.model).sample_context(
                    int(k),
                    region.context,
                    generator=torch_generator(int(gen.integers(2**62))),
                    temperature=region.temperature,
                )
                draws.append(th[0])
            else:
                which = gen.integers(region.n_seeds, size=int(k))
                z = gen.standard_normal((int(k), len(region.scale)))
                u = region.seed_u[which] + z * region.seed_width * region.scale
                draws.append(region.constrained(u)[0])
        theta = np.concatenate(draws)
        log_prior = np.asarray(self.prior.log_prob(theta), dtype=np.float64)
        comps = [np.log(weights["prior"]) + log_prior]
        if "flow" in parts:
            comps.append(np.log(weights["flow"]) + region.log_q(theta))
        if "seeds" in parts:
            comps.append(
                np.log(weights["seeds"]) - math.log(region.n_seeds) + logsumexp(region.seed_log_density(theta), axis=1)
            )
        with np.errstate(invalid="ignore"):
            log_g = logsumexp(np.stack(comps), axis=0)
        inside = region.contains(theta) & np.isfinite(log_prior) & np.isfinite(log_g)
        log_w = np.full(len(theta), -np.inf)
        log_w[inside] = log_prior[inside] - log_g[inside]
        if not np.isfinite(log_w).any():
            raise ModelError(
                f"the proposal region holds no prior mass that {pool} draws of the prior, the "
                "estimator and the seeds could find: check the prior, the seeds and the observation"
            )
        log_mass = float(logsumexp(log_w) - math.log(len(theta)))
        w = np.exp(log_w - logsumexp(log_w))
        self.method, self.prior_draws = "sir", prior_draws
        self._log_mass = log_mass
        self.prior_mass = math.exp(log_mass)
        self.efficiency = float(1.0 / np.sum(w * w)) / len(theta)
        return theta[gen.choice(len(theta), size=n, p=w)]

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """``log pi(theta) - log pi(R)`` inside the region, ``-inf`` outside (after :meth:`sample`)."""
        if not math.isfinite(self._log_mass):
            raise ModelError("TruncatedPrior.log_prob: the prior mass of the region is estimated by sample() first")
        theta = np.asarray(theta, dtype=np.float64)
        lp = np.asarray(self.prior.log_prob(theta), dtype=np.float64) - self._log_mass
        return np.where(self.region.contains(theta), lp, -np.inf)


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
        """JSON-ready (infinite thresholds as None)."""
        d = asdict(self)
        d["threshold"] = self.threshold if math.isfinite(self.threshold) else None
        return d


@dataclass
class Refinement:
    """The result of :func:`refine`.

    Attributes:
        posterior: the refined posterior (``sample`` / ``log_prob`` with respect to the prior).
        model: its network.
        rounds: one :class:`RoundRecord` per round.
        proposals: each round's :class:`TruncatedPrior`.
        seconds: the wall time of the whole refinement.
        settings: the options it ran with (for the model's metadata).
    """

    posterior: FlowPosterior
    model: Any
    rounds: list[RoundRecord]
    proposals: list[TruncatedPrior]
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
            **self.settings,
        }


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], Mapping):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return np.concatenate([np.asarray(p) for p in parts])


def _rows(x: Any) -> int:
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


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
    seed_width: float = 0.1,
    eps: float = 1e-4,
    temperature: float = 1.0,
    hpr_samples: int = 20_000,
    fine_tune: bool = True,
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
        seeds: ``(m, theta_dim)`` points whose neighbourhoods join the first region (see the
            module docstring); None for the estimator's HPR alone.
        seed_width: the seeds' Gaussian width in units of the prior spread (unconstrained).
        eps: the regions are ``1 - eps`` HPRs (and ``1 - eps`` balls around the seeds).
        temperature: base-distribution width of the flow for the regions and the SIR draws.
        hpr_samples: draws of the flow that set each HPR threshold.
        fine_tune: continue training the previous round's network (True), or train a fresh
            network of the estimator's architecture each round (False; its standardisation is
            then fitted to the truncated data).
        fit_options: further options of :func:`hepflow.fit` (``lr``, ``batch_size``,
            ``patience``, ``validation_split``, ``device``...).
        min_acceptance: below this rejection acceptance the proposal is drawn by SIR.
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
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    if hpr_samples < 100:
        raise ConfigError(f"hpr_samples must be >= 100, got {hpr_samples}")
    if not hasattr(estimator, "support") or not hasattr(estimator, "log_prob_grouped"):
        raise ConfigError(f"estimator must be a ConditionalINN, got {type(estimator).__name__}")
    options = dict(fit_options or {})
    if clash := sorted({"epochs", "seed", "progress"} & options.keys()):
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
    thetas: list[np.ndarray] = []
    xs: list[Any] = []
    records: list[RoundRecord] = []
    proposals: list[TruncatedPrior] = []
    for r in range(rounds):
        gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(r,)))
        t0 = time.perf_counter()
        tau = Region.hpr(model, ctx_o, eps=eps, samples=hpr_samples, temperature=temperature, seed=seed + r)
        region = Region(
            model,
            ctx_o,
            tau,
            temperature=temperature,
            seeds=seed_arr if r == 0 else None,
            seed_width=seed_width,
            eps=eps,
            scale=scale,
        )
        proposal = TruncatedPrior(prior, region, min_acceptance=min_acceptance)
        theta = proposal.sample(simulations_per_round, gen)
        t1 = time.perf_counter()
        x = simulator(theta, gen)
        if _rows(x) != len(theta):
            raise ModelError(f"the simulator returned {_rows(x)} rows for {len(theta)} parameter vectors")
        t2 = time.perf_counter()
        thetas.append(theta)
        xs.append(x)
        if fine_tune:
            net = model
        else:
            from hepflow.flows.inn import ConditionalINN

            cfg = dict(estimator.config())
            cfg["seed"] = seed + r
            net = ConditionalINN.from_config(cfg)
        net.metadata = dict(getattr(estimator, "metadata", {}) or {})
        history = fit(
            net,
            np.concatenate(thetas),
            to_context(_concat(xs)),
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
            method=str(proposal.method),
            efficiency=float(proposal.efficiency),
            prior_mass=float(proposal.prior_mass),
            threshold=tau,
            seeds=region.n_seeds,
            epochs=len(history.train_loss),
            best_val_loss=history.best_val_loss,
            proposal_seconds=t1 - t0,
            simulate_seconds=t2 - t1,
            train_seconds=t3 - t2,
        )
        records.append(record)
        proposals.append(proposal)
        if callback is not None:
            callback(record)
    settings = {
        "method": "TSNPE (Deistler et al. 2022, arXiv:2210.04815)",
        "rounds_requested": rounds,
        "simulations_per_round": simulations_per_round,
        "epochs": epochs,
        "eps": eps,
        "temperature": temperature,
        "seed_width": seed_width,
        "seed_points": [] if seed_arr is None else seed_arr.tolist(),
        "fine_tune": fine_tune,
        "seed": seed,
    }
    posterior = FlowPosterior(model, features=features)
    return Refinement(
        posterior=posterior,
        model=model,
        rounds=records,
        proposals=proposals,
        seconds=time.perf_counter() - t_start,
        settings=settings,
    )
