"""Modes of the cosmic-ray posterior: where its local maxima lie and how much mass each holds.

The combined-fit likelihood of the Auger data has (at least) two minima, a soft-spectrum one
(gamma ~ 1) and a hard-spectrum one (gamma < 0, a He-dominated corner of the fraction simplex);
with the detector systematics as nuisances both are maxima of the posterior. An ensemble MCMC
does not jump between them, so the sampler must know both, and how much of the posterior each
holds.

* :func:`find_modes`: multi-start maximisation of the sampled density ``log q(z)``
  (:class:`hepflow.cosmic.mcmc.UnconstrainedPosterior`), the distinct maxima best first.
* :func:`weigh_modes`: the posterior **mass** of each maximum's region. The highest density is
  not the most mass: a maximum in a corner of the simplex is narrow in the fractions, so it can
  hold a fraction of a percent of the posterior while its density is the higher (measured on
  mocks simulated at the hard-spectrum mode of the Auger data: docs/cosmic_model.md).

The masses are estimated by importance sampling (Owen 2013, ch. 9) with a proposal fitted to
the posterior itself. A short ensemble run started at each maximum (kept within the 99.99 %
ellipsoid of the maximum's Laplace Gaussian, so that it does not cross to another) gives a mean
and covariance; these Gaussians **define the regions**: a point belongs to the one that, times
its region's mass, is the most probable there (the bump it came from). Maxima joined by a
straight path that dips less than 3 in log density below the lower one, and maxima whose runs
overlap (one run's mean within the other's 2-sigma ellipsoid), are one region. The proposal is
a mixture of multivariate Student t (4 degrees of freedom, covariances inflated by 1.5) on the
runs, adapted to the weighted draws in each region over a few iterations; the draws of all
iterations are pooled with deterministic-mixture weights (adaptive multiple importance
sampling, Cornuet et al. 2012). A region's mass is the weight share of its draws, with a
standard error (delta method; it matches the spread over seeds on the test densities) and its
own effective number of draws. Maxima whose Laplace (Gaussian) mass is below ``screen`` (1e-6)
of the heaviest maximum's are not run; they keep that estimate (``mass_method="laplace"``),
which can be far off for a non-Gaussian peak (and is never used to sample). Mass that no given
maximum's region reaches is counted in the nearest region: the masses weigh the maxima found,
they do not find others.

Example:
    >>> import numpy as np
    >>> def two_bumps(z):  # 80 % of the mass around (-3, -3), 20 % in a narrower bump at (3, 3)
    ...     left = -0.5 * np.sum((z + 3) ** 2, axis=1) - np.log(2 * np.pi) + np.log(0.8)
    ...     right = -0.5 * np.sum(((z - 3) / 0.5) ** 2, axis=1) - np.log(2 * np.pi * 0.25) + np.log(0.2)
    ...     return np.logaddexp(left, right)
    >>> w = weigh(two_bumps, np.array([[-3.0, -3.0], [3.0, 3.0]]), rng=1)
    >>> np.round(w.masses, 2).tolist(), bool(abs(w.log_evidence) < 0.05)
    ([0.8, 0.2], True)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from hepflow.cosmic.priors import Prior
from hepflow.cosmic.source import PARAMETER_NAMES
from hepflow.cosmic.systematics import NUISANCE_NAMES
from hepflow.errors import ConfigError


class SampledDensity(Protocol):
    """What the mode search needs of :class:`hepflow.cosmic.mcmc.UnconstrainedPosterior` (named
    here so that this module does not import the MCMC module, which imports it)."""

    prior: Prior
    systematics: Any
    likelihood: Any
    ndim: int

    def __call__(self, z: np.ndarray) -> np.ndarray: ...

    def theta(self, z: np.ndarray) -> np.ndarray: ...

    def to_unconstrained(self, theta: np.ndarray) -> np.ndarray: ...


log = logging.getLogger(__name__)

__all__ = ["Mode", "ModeWeights", "SampledDensity", "StudentMixture", "find_modes", "weigh", "weigh_modes"]

_NDIM = len(PARAMETER_NAMES) - 1
_Z_CLIP = 50.0  # prior draws on the simplex boundary map to -inf: start them at -50 instead
#: degrees of freedom of the proposal's Student t components
_DF = 4.0
#: covariance inflation of a component over its run's (or its weighted draws') covariance
_INFLATE = 1.5
#: a component is refitted from the weighted draws it holds when their ESS is at least this
_REFIT_ESS = 30.0
#: smallest share of the proposal's draws a component gets
_FLOOR = 0.05
#: a straight path between two maxima dipping less than this (log density) below the lower
#: one joins them into one region
_BARRIER = 3.0
#: rounds of the fixed point between the regions' masses and the draws' owners
_CLASSIFY_ROUNDS = 5


@dataclass(frozen=True)
class Mode:
    """A local maximum of the sampled density: parameters and combined-fit deviances there."""

    theta: np.ndarray
    log_prob: float
    log_likelihood: float
    deviance_spectrum: float
    deviance_xmax: float
    #: share of the posterior mass around this maximum (:func:`weigh_modes`); None: not weighed
    mass: float | None = None
    #: how ``mass`` was estimated: ``"importance"`` or ``"laplace"`` (a mode too light to sample)
    mass_method: str | None = None

    @property
    def deviance(self) -> float:
        return self.deviance_spectrum + self.deviance_xmax

    def to_dict(self) -> dict[str, Any]:
        names = PARAMETER_NAMES + NUISANCE_NAMES[: self.theta.size - len(PARAMETER_NAMES)]
        return {
            **dict(zip(names, self.theta.tolist(), strict=True)),
            "deviance": self.deviance,
            "deviance_spectrum": self.deviance_spectrum,
            "deviance_xmax": self.deviance_xmax,
            "log_likelihood": self.log_likelihood,
            "log_prob": self.log_prob,
            **({"mass": self.mass, "mass_method": self.mass_method} if self.mass is not None else {}),
        }


def find_modes(
    posterior: SampledDensity,
    rng: np.random.Generator | int | None = None,
    *,
    n_candidates: int = 4096,
    n_starts: int = 8,
    sparse_concentration: float = 0.1,
    step: float = 1e-4,
    max_iter: int = 400,
) -> tuple[Mode, ...]:
    """Multi-start maximisation of ``log q``: distinct local maxima, best first.

    Start points: ``n_candidates`` parameter vectors, half drawn from the prior and half with the
    prior's ``gamma`` and ``lg_rcut`` ranges but sparse fractions (Dirichlet with
    ``sparse_concentration``); the hard-spectrum minimum of the Auger fit sits where some fractions
    are ~1e-4, which prior draws almost never reach. The ``gamma`` range is cut into ``n_starts``
    equal strata and the best candidate of each starts L-BFGS-B in ``z`` with central-difference
    gradients (one vectorised call of 2 x 6 + 1 rows per iteration), so that both a soft
    (gamma > 0) and a hard (gamma < 0) solution are looked for. With nuisances the candidates'
    nuisances are drawn from their priors, and each start is first maximised over the source
    parameters at its candidate's nuisances and then over all 8 coordinates (a joint search
    stalls on the way; candidates all at ``nu = 0`` missed the hard-spectrum mode of mocks
    simulated there, which needs ``nu_E`` ~ 2). Maxima
    closer than 0.02 of the prior range in ``gamma`` and ``lg_rcut`` and 0.02 in every fraction
    (0.1 in the nuisances) are merged.

    The candidates only seed the local searches (they do not need to follow the prior).
    """
    from scipy import optimize

    gen = np.random.default_rng(rng)
    prior = posterior.prior
    half = max(n_candidates // 2, 1)
    sparse = Prior(gamma=prior.gamma, lg_rcut=prior.lg_rcut, concentration=sparse_concentration)
    cand = np.concatenate([prior.sample(half, gen), sparse.sample(max(n_candidates - half, 1), gen)])
    if posterior.systematics is not None:
        # nuisances from their prior: a maximum that needs a shifted scale (the hard-spectrum one
        # sits at nu_E ~ 2) is reached from candidates near it, which nu = 0 alone would not give
        cand = np.concatenate([cand, posterior.systematics.sample(len(cand), gen)], axis=1)
    z_cand = np.clip(posterior.to_unconstrained(cand), -_Z_CLIP, _Z_CLIP)
    lq_cand = posterior(z_cand)
    strata = np.linspace(prior.gamma[0], prior.gamma[1], n_starts + 1)
    stratum = np.clip(np.searchsorted(strata, cand[:, 0], side="right") - 1, 0, n_starts - 1)
    starts = []
    for k in range(n_starts):
        idx = np.flatnonzero((stratum == k) & np.isfinite(lq_cand))
        if idx.size:
            starts.append(z_cand[idx[np.argmax(lq_cand[idx])]])
    ndim = posterior.ndim
    scale = np.array([np.ptp(prior.gamma), np.ptp(prior.lg_rcut), 1, 1, 1, 1, 1], dtype=float)
    # nuisances merged within 0.1 of their prior sd
    scale = np.concatenate([scale, np.full(ndim - _NDIM, 5.0)])
    eye = np.eye(ndim) * step

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        pts = np.concatenate([z[None], z + eye, z - eye])
        lq = posterior(pts)
        if not np.all(np.isfinite(lq)):
            return 1e300, np.zeros(ndim)
        grad = (lq[1 : 1 + ndim] - lq[1 + ndim :]) / (2 * step)
        return -float(lq[0]), -grad

    def fun_source(z6: np.ndarray, nu: np.ndarray) -> tuple[float, np.ndarray]:
        f, grad = fun(np.concatenate([z6, nu]))
        return f, grad[:_NDIM]

    found: list[tuple[float, np.ndarray]] = []
    for start in starts:
        z0 = start
        if ndim > _NDIM:
            # with nuisances: first the source parameters at the candidate's nuisances, then all
            # together from there
            nu0 = z0[_NDIM:]
            res = optimize.minimize(
                fun_source,
                z0[:_NDIM],
                args=(nu0,),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": max_iter},
            )
            z0 = np.concatenate([res.x, nu0])
        res = optimize.minimize(fun, z0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        found.append((-float(res.fun), res.x))
    found.sort(key=lambda t: -t[0])
    modes: list[Mode] = []
    kept: list[np.ndarray] = []
    for lq, z in found:
        if not np.isfinite(lq):
            continue
        theta = posterior.theta(z)[0]
        if any(np.max(np.abs(theta - t) / scale) < 0.02 for t in kept):
            continue
        kept.append(theta)
        dev = posterior.likelihood.deviance(theta)
        modes.append(
            Mode(
                theta=theta,
                log_prob=lq,
                log_likelihood=float(-0.5 * dev.total[0]),
                deviance_spectrum=float(dev.spectrum[0]),
                deviance_xmax=float(dev.xmax[0]),
            )
        )
    if not modes:
        raise ConfigError("no finite maximum of the posterior found: is the observation empty?")
    return tuple(modes)


# ---------------------------------------------------------------------- masses
@dataclass(frozen=True, eq=False)
class StudentMixture:
    """A mixture of multivariate Student t densities: the importance proposal :func:`weigh`
    adapted to the posterior (one component per run region).

    Attributes:
        means: (m, d) the components' centres.
        covariances: (m, d, d) their scale matrices.
        weights: (m,) their shares (summing to 1).
        df: the degrees of freedom.

    Example:
        >>> mix = StudentMixture(np.array([[0.0], [20.0]]), np.ones((2, 1, 1)), np.array([0.7, 0.3]))
        >>> z = mix.sample(20_000, rng=0)
        >>> round(float(np.mean(z[:, 0] > 10)), 2), mix.log_prob(z).shape
        (0.3, (20000,))
    """

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    df: float = _DF

    @cached_property
    def _components(self) -> list[Any]:
        from scipy import stats

        return [
            stats.multivariate_t(m, c, df=self.df, allow_singular=True)
            for m, c in zip(self.means, self.covariances, strict=True)
        ]

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws (n, d), in random order."""
        gen = np.random.default_rng(rng)
        counts = gen.multinomial(n, self.weights / self.weights.sum())
        d = self.means.shape[1]
        z = np.concatenate(
            [c.rvs(k, random_state=gen).reshape(-1, d) for c, k in zip(self._components, counts, strict=True)]
        )
        return z[gen.permutation(n)]

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        """The mixture's log density (n,) at ``z`` (n, d)."""
        z = np.atleast_2d(np.asarray(z, dtype=float))
        log_w = np.log(self.weights / self.weights.sum())
        return np.logaddexp.reduce(
            [c.logpdf(z).reshape(-1) + lw for c, lw in zip(self._components, log_w, strict=True)], axis=0
        )

    def marginal(self, dims: int) -> StudentMixture:
        """The mixture of the first ``dims`` coordinates (a multivariate t's marginal is one)."""
        return StudentMixture(self.means[:, :dims], self.covariances[:, :dims, :dims], self.weights, self.df)


@dataclass(frozen=True)
class ModeWeights:
    """What :func:`weigh` found: one entry per region of posterior mass.

    Attributes:
        regions: for each region, the indices of the maxima (rows of ``starts``) it holds, the
            first the one its run started from.
        masses: each region's share of the posterior mass (summing to 1).
        errors: their standard errors (delta method of the self-normalised importance estimate;
            NaN for a ``"laplace"`` region, whose estimate is an approximation).
        methods: ``"importance"`` or ``"laplace"`` (screened: too light to run) per region.
        region_ess: effective number of importance draws in each region (NaN for ``"laplace"``).
        ess: effective sample size of all importance draws (Kish), ``draws``: their number.
        log_evidence: log of the density's integral (the importance estimate).
        centres, covariances: mean and covariance of each run region's ensemble draws, which
            define the regions (:meth:`region_of`).
        proposal: the importance proposal adapted over the iterations (one Student t per run
            region, refitted to its weighted draws, shares by mass with a floor), a density
            close to the posterior that covers every run region.
    """

    regions: tuple[tuple[int, ...], ...]
    masses: np.ndarray
    errors: np.ndarray
    methods: tuple[str, ...]
    region_ess: np.ndarray
    ess: float
    draws: int
    log_evidence: float
    centres: np.ndarray
    covariances: np.ndarray
    proposal: StudentMixture

    @property
    def run(self) -> list[int]:
        """The regions that were run (``methods == "importance"``), in the order of ``centres``
        and ``covariances``."""
        return [i for i, m in enumerate(self.methods) if m == "importance"]

    def region_of(self, z: np.ndarray, *, dims: int | None = None) -> np.ndarray:
        """Index of the run region each point ``z`` (n, d) belongs to: the one whose ensemble
        draws' Gaussian, times the region's mass, is the most probable there (the rule the masses
        were counted by). The index counts the run regions only (``methods == "importance"``).
        ``dims``: ``z`` holds only the first ``dims`` coordinates (draws of a marginal, e.g. the
        source parameters of a cINN that marginalises the nuisances), judged by the Gaussians'
        marginals."""
        run = self.run
        k = self.centres.shape[1] if dims is None else int(dims)
        z = np.atleast_2d(z)
        if z.shape[1] != k:
            raise ValueError(f"region_of: points of {z.shape[1]} coordinates, expected {k}")
        log_p = _gaussian_log_pdfs(z, self.centres[:, :k], self.covariances[:, :k, :k])
        return np.argmax(log_p + np.log(np.maximum(self.masses[run], 1e-300))[:, None], axis=0)

    def summary(self) -> dict[str, Any]:
        def finite(a: np.ndarray) -> list[float | None]:
            return [float(x) if np.isfinite(x) else None for x in a]

        return {
            "regions": [list(r) for r in self.regions],
            "masses": self.masses.tolist(),
            "errors": finite(self.errors),
            "methods": list(self.methods),
            "region_ess": finite(self.region_ess),
            "ess": self.ess,
            "draws": self.draws,
            "log_evidence": self.log_evidence,
        }


def weigh(
    density: Any,
    starts: np.ndarray,
    rng: np.random.Generator | int | None = None,
    *,
    draws: int = 20_000,
    steps: int = 400,
    iterations: int = 3,
    screen: float = 1e-6,
) -> ModeWeights:
    """The posterior mass around each of the maxima ``starts`` (k, d) of ``density`` (a
    vectorised ``log q``: (n, d) -> (n,), ``-inf`` outside the support), module docstring.

    The regions are fixed by the ensemble runs (a point belongs to the run whose draws' Gaussian
    is the most probable there); the proposal adapts within them, and the draws of all
    iterations are pooled with deterministic-mixture weights (Cornuet et al. 2012). Mass in a
    region that no maximum in ``starts`` reaches is counted in the region nearest it: the
    estimate weighs the maxima it is given, it does not find others.

    Args:
        density: the unnormalised log density.
        starts: the local maxima, best (highest density) first.
        rng: random generator or seed.
        draws: importance draws per iteration.
        steps: steps of each maximum's ensemble run (the first half discarded).
        iterations: iterations of the importance proposal.
        screen: maxima whose Laplace mass is below this fraction of the heaviest maximum's are
            not run (kept with that estimate). A maximum whose Laplace mass cannot be computed
            (a stencil point outside the support at steps 1e-2, 1e-3 and 1e-4) is run with a
            Laplace covariance of 100 I, i.e. practically unleashed: its run may drift to a
            heavier neighbour and be merged with it (its mass then counted there).
    """
    import emcee
    from scipy import stats

    gen = np.random.default_rng(rng)
    starts = np.atleast_2d(np.asarray(starts, dtype=float))
    k, ndim = starts.shape
    if draws < 100 or steps < 20 or iterations < 1 or not 0 <= screen < 1:
        raise ConfigError(
            f"weigh needs draws >= 100, steps >= 20, iterations >= 1 and 0 <= screen < 1, got "
            f"{draws}, {steps}, {iterations}, {screen}"
        )
    approx = [_laplace(density, z) for z in starts]
    laplace = np.array([a[0] for a in approx])
    heavy = np.nanmax(laplace) if np.isfinite(laplace).any() else 0.0
    # a maximum without a Laplace estimate (NaN: at the support's edge) is run, not screened
    run = [i for i in range(k) if i == 0 or not laplace[i] - heavy < np.log(max(screen, 1e-300))]
    # one ensemble run per maximum: its mean and covariance (the run stays in its region)
    n_walkers = max(2 * ndim + 2, 32)
    centres: list[np.ndarray] = []
    covs: list[np.ndarray] = []
    regions: list[list[int]] = []
    for i in run:
        # a maximum joined to an earlier one by a path without a barrier is in its region
        joined = next(
            (r for r in range(len(regions)) if _connected(density, starts[regions[r][0]], starts[i])), None
        )
        if joined is not None:
            regions[joined].append(i)
            continue
        # kept within the 99.99 % ellipsoid of the maximum's Laplace Gaussian (which is wide
        # where the density is flat): an ensemble's long stretch moves otherwise cross gaps
        leash = _leashed(density, starts[i], approx[i][1], float(stats.chi2.ppf(0.9999, ndim)))
        # the walkers start inside the support and the leash (a narrow Laplace Gaussian leaves
        # some of the 1e-2 scatter outside: emcee then compares -inf with -inf)
        z0 = _walkers(leash, starts[i], n_walkers, gen)
        sampler = emcee.EnsembleSampler(n_walkers, ndim, leash, vectorize=True)
        sampler.random_state = np.random.RandomState(int(gen.integers(2**31))).get_state()
        sampler.run_mcmc(z0, steps, progress=False)
        chain = sampler.get_chain(discard=steps // 2, flat=True)
        mean, cov = chain.mean(axis=0), np.cov(chain.T) + 1e-9 * np.eye(ndim)
        same = next((r for r in range(len(centres)) if _overlap(mean, cov, centres[r], covs[r])), None)
        if same is not None:
            regions[same].append(i)
            continue
        centres.append(mean)
        covs.append(cov)
        regions.append([i])
    centre, covariance = np.array(centres), np.array(covs)
    light: list[int] = []
    for i in (i for i in range(k) if i not in run):
        # a screened maximum inside a run region is part of it, not a region of its own
        inside = [r for r in range(len(centres)) if _mahalanobis2(starts[i], centres[r], covs[r]) < 4.0]
        if inside:
            regions[inside[0]].append(i)
        else:
            light.append(i)
    comps = [(m, _INFLATE * c) for m, c in zip(centres, covs, strict=True)]
    weights = np.full(len(comps), 1.0 / len(comps))
    mass = weights.copy()
    pooled_z, pooled_q, proposals = [], [], []
    for _ in range(iterations):
        mix = _mixture(comps, weights)
        which = gen.choice(len(comps), size=draws, p=weights)
        pooled_z.append(
            np.concatenate(
                [
                    d.rvs(int(np.sum(which == j)), random_state=gen).reshape(-1, ndim)
                    for j, d in enumerate(mix._components)
                ]
            )
        )
        pooled_q.append(np.asarray(density(pooled_z[-1]), dtype=float))
        proposals.append(mix)
        z, log_q = np.concatenate(pooled_z), np.concatenate(pooled_q)
        # every draw against the mixture of all proposals so far (equal draws per iteration)
        log_g = np.logaddexp.reduce([p.log_prob(z) for p in proposals], axis=0) - np.log(len(proposals))
        log_w = np.where(np.isfinite(log_q), log_q - log_g, -np.inf)
        if not np.isfinite(log_w).any():
            raise ConfigError(
                "no importance draw has a finite density: the maxima do not describe the posterior"
            )
        top = log_w.max()
        w = np.exp(log_w - top)
        log_p = _gaussian_log_pdfs(z, centre, covariance)
        for _ in range(_CLASSIFY_ROUNDS):
            # a draw belongs to the region whose Gaussian, weighted by the region's mass, is the
            # most probable there (which bump it came from); masses and owners to a fixed point
            owner = np.argmax(log_p + np.log(np.maximum(mass, 1e-300))[:, None], axis=0)
            mass = np.array([w[owner == j].sum() for j in range(len(comps))]) / w.sum()
        for j in range(len(comps)):
            wj, zj = w[owner == j], z[owner == j]
            if wj.sum() > 0 and wj.sum() ** 2 / np.sum(wj**2) >= _REFIT_ESS:
                cov_j = _INFLATE * np.cov(zj.T, aweights=wj) + 1e-9 * np.eye(ndim)
                comps[j] = (np.average(zj, axis=0, weights=wj), cov_j)
        weights = np.maximum(mass, _FLOOR)
        weights /= weights.sum()
    inside = owner[None, :] == np.arange(len(comps))[:, None]
    error = np.sqrt(np.sum(w**2 * (inside - mass[:, None]) ** 2, axis=1)) / w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        region_ess = np.sum(w * inside, axis=1) ** 2 / np.sum(w**2 * inside, axis=1)
    log_z = float(top + np.log(w.mean()))
    # the screened maxima's Laplace masses, against the whole integral (the runs' plus theirs)
    log_total = np.logaddexp.reduce([log_z, *laplace[light]])
    light_share = np.exp(laplace[light] - log_total)
    run_share = np.exp(log_z - log_total)
    return ModeWeights(
        regions=tuple(tuple(r) for r in regions) + tuple((i,) for i in light),
        masses=np.concatenate([mass * run_share, light_share]),
        errors=np.concatenate([error * run_share, np.full(len(light), np.nan)]),
        methods=("importance",) * len(regions) + ("laplace",) * len(light),
        region_ess=np.concatenate([region_ess, np.full(len(light), np.nan)]),
        ess=float(w.sum() ** 2 / np.sum(w**2)),
        draws=int(z.shape[0]),
        log_evidence=float(log_total),
        centres=centre,
        covariances=covariance,
        proposal=_mixture(comps, weights),
    )


def _mixture(comps: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray) -> StudentMixture:
    """The Student t mixture of ``comps`` (mean, scale matrix) with shares ``weights``."""
    return StudentMixture(
        np.array([m for m, _ in comps]), np.array([c for _, c in comps]), weights.copy(), _DF
    )


def weigh_modes(
    posterior: SampledDensity,
    modes: tuple[Mode, ...],
    rng: np.random.Generator | int | None = None,
    **options: Any,
) -> tuple[tuple[Mode, ...], ModeWeights]:
    """:func:`weigh` for the maxima of :func:`find_modes`: the distinct modes with their
    ``mass``, heaviest first (a maximum in the region of a higher one is dropped), and the
    estimate's record. ``options`` go to :func:`weigh`."""
    starts = posterior.to_unconstrained(np.stack([m.theta for m in modes]))
    found = weigh(posterior, np.clip(starts, -_Z_CLIP, _Z_CLIP), rng, **options)
    weighed = [
        replace(modes[region[0]], mass=float(mass), mass_method=method)
        for region, mass, method in zip(found.regions, found.masses, found.methods, strict=True)
    ]
    weighed.sort(key=lambda m: -(m.mass or 0.0))
    return tuple(weighed), found


def _walkers(density: Any, z: np.ndarray, n: int, gen: np.random.Generator) -> np.ndarray:
    """``n`` ensemble walkers scattered around the maximum ``z`` inside the support: by 1e-2, and
    closer for those that fall outside it (a maximum at the support's edge)."""
    walkers = np.tile(z, (n, 1))
    bad = np.ones(n, dtype=bool)
    for scale in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        walkers[bad] = z + scale * gen.standard_normal((int(bad.sum()), z.size))
        bad[bad] = ~np.isfinite(np.asarray(density(walkers[bad]), dtype=float))
        if not bad.any():
            return walkers
    walkers[bad] = z
    return walkers


def _laplace(
    density: Any, z: np.ndarray, steps: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
) -> tuple[float, np.ndarray]:
    """``(log q(z) + log sqrt(det(2 pi Sigma)), Sigma)`` with ``Sigma`` the inverse of the
    negative Hessian (central differences; curvatures clipped at 1e-3, so a flat direction counts
    as wide), with the first of ``steps`` whose stencil lies inside the support (a maximum next to
    its edge). ``(nan, 100 I)`` where none does."""
    for step in steps:
        found = _laplace_at(density, z, step)
        if found is not None:
            return found
    return math.nan, 100.0 * np.eye(z.size)


def _laplace_at(density: Any, z: np.ndarray, step: float) -> tuple[float, np.ndarray] | None:
    ndim = z.size
    eye = np.eye(ndim) * step
    pts = [z[None]]
    for i in range(ndim):
        for j in range(ndim):
            pts.append(
                np.stack([z + eye[i] + eye[j], z + eye[i] - eye[j], z - eye[i] + eye[j], z - eye[i] - eye[j]])
            )
    lq = np.asarray(density(np.concatenate(pts)), dtype=float)
    if not np.all(np.isfinite(lq)):
        return None
    quad = lq[1:].reshape(ndim, ndim, 4)
    hess = (quad[..., 0] - quad[..., 1] - quad[..., 2] + quad[..., 3]) / (4 * step**2)
    curv, vec = np.linalg.eigh(-0.5 * (hess + hess.T))
    curv = np.clip(curv, 1e-3, None)
    log_mass = float(lq[0] + 0.5 * ndim * np.log(2 * np.pi) - 0.5 * np.sum(np.log(curv)))
    return log_mass, (vec / curv) @ vec.T


def _leashed(density: Any, centre: np.ndarray, cov: np.ndarray, radius2: float) -> Any:
    """``density`` inside the ellipsoid ``(z - centre)^T cov^-1 (z - centre) < radius2``, ``-inf``
    outside: keeps a maximum's ensemble run from crossing to a heavier maximum."""
    inv = np.linalg.inv(cov)

    def leashed(z: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(z) - centre
        inside = np.einsum("ni,ij,nj->n", d, inv, d) < radius2
        out = np.full(len(d), -np.inf)
        if inside.any():
            out[inside] = density(np.atleast_2d(z)[inside])
        return out

    return leashed


def _connected(density: Any, a: np.ndarray, b: np.ndarray, points: int = 24) -> bool:
    """Whether the straight path from ``a`` to ``b`` stays within ``_BARRIER`` (in log density)
    of the lower end: two maxima of one ridge, not two modes with a valley between them."""
    t = np.linspace(0.0, 1.0, points + 2)[:, None]
    lq = np.asarray(density(a[None] + t * (b - a)[None]), dtype=float)
    if not np.all(np.isfinite(lq)):
        return False
    return bool(np.min(lq[1:-1]) >= min(lq[0], lq[-1]) - _BARRIER)


def _mahalanobis2(z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    d = z - mean
    return float(d @ np.linalg.solve(cov, d))


def _overlap(m1: np.ndarray, c1: np.ndarray, m2: np.ndarray, c2: np.ndarray) -> bool:
    """Either run's mean within the other's 2-sigma ellipsoid (squared Mahalanobis distance < 4)."""
    return _mahalanobis2(m1, m2, c2) < 4.0 or _mahalanobis2(m2, m1, c1) < 4.0


def _gaussian_log_pdfs(z: np.ndarray, centres: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """(k, n): the log density of each Gaussian (mean, covariance) at each row of ``z``."""
    from scipy import stats

    return np.stack(
        [
            np.atleast_1d(stats.multivariate_normal(m, c, allow_singular=True).logpdf(z))
            for m, c in zip(centres, covariances, strict=True)
        ]
    ).reshape(len(centres), -1)
