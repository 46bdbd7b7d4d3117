"""MCMC baseline for the cosmic-ray source parameters: emcee on the combined-fit likelihood.

The posterior ``p(theta | x) ∝ L(x | theta) pi(theta)`` (:class:`hepflow.cosmic.Likelihood`,
:class:`hepflow.cosmic.Prior`) is sampled with emcee's affine-invariant ensemble sampler
(``EnsembleSampler(..., vectorize=True)``: one vectorised likelihood call per step for all
walkers) in the prior's **unconstrained coordinates** ``z`` in R^6 (:meth:`Prior.to_unconstrained`:
logit of the ``gamma`` and ``lg_rcut`` ranges, stick-breaking logits of the five fractions), so
every proposal is inside the support and the fractions stay on the simplex. The sampled density
includes the Jacobian of ``theta(z)``::

    log q(z) = log L(theta(z)) + log pi(theta(z)) + log |d theta_free / d z|

with ``theta_free = (gamma, lg_rcut, f_H, f_He, f_N, f_Si)`` (``f_Fe = 1 - sum``, the coordinates
in which :meth:`Prior.log_prob` is a density)::

    box:       log (hi - lo) + log s(u) + log (1 - s(u))
    fractions: sum_k [ log r_k + log y_k + log(1 - y_k) ],  y_k = s(z_k - log(4 - k)),
               f_k = r_k y_k,  r_k = prod_{j<k} (1 - y_j)       (k = 0 .. 3)

(``s`` the logistic function; the stick-breaking Jacobian is triangular). Near a fraction of zero
the sampler moves in ``log f``, which matters for this likelihood: at the hard-spectrum minimum
the deviance changes by ~1600 between ``f_Si = 10^-3`` and 0 (docs/cosmic_model.md).

**Initialisation.** ``initial="optimum"`` (default): the multi-start search of
:func:`hepflow.cosmic.modes.find_modes` (``n_candidates`` draws screened, ``n_starts`` L-BFGS
maximisations of ``log q``) finds the distinct maxima: the combined-fit likelihood has (at least)
two, a soft-spectrum one (gamma ~ 1) and a hard-spectrum one (gamma < 0). An affine-invariant
ensemble does not jump between well-separated modes, so when more than one is found
:func:`~hepflow.cosmic.modes.weigh_modes` estimates the posterior mass of each (``mode_draws``
importance draws; the highest density is not the most mass), and **every mode holding at least
``min_mode_mass`` of the mass gets its own ensemble** (``n_walkers`` walkers in a Gaussian ball
of ``ball``, in ``z`` units, around its maximum). The runs continue to a common length and share
the convergence criterion; the returned samples are drawn from each run in proportion to its
mode's mass (column ``mode``), the chain holds all runs side by side (walkers ``k n_walkers ..``
of run ``k``). :attr:`McmcResult.modes` lists the modes, heaviest first, with their masses.
``mode_draws=0`` skips the weighing and samples the highest maximum only. ``initial="prior"``
starts the walkers from prior draws (long burn-in with a narrow posterior); an array gives one
vector (ball around it) or one per walker.

**Convergence.** Every ``check_every`` steps the integrated autocorrelation time ``tau`` of each
of the 7 parameters (in ``theta``, over the whole chain, emcee's estimator with ``tol=0``) is
computed; the run stops when ``n > tau_factor * tau`` (default 50) and ``tau`` changed by less
than ``tau_rtol`` (1 %) since the last check for every parameter, or after ``n_steps`` steps
(``converged=False``). Burn-in ``2 max(tau)`` and thinning ``max(1, min(tau) / 2)`` steps are
discarded/applied to the returned samples (burn-in at most half the chain).

**Systematics.** When the forward model has nuisances (``ForwardModel(systematics=...)``,
``[systematics] enabled = true``), ``nu_E`` and ``nu_X`` are sampled with the source parameters
(z has 8 dimensions; the nuisances are their own unconstrained coordinates, Jacobian 1) and their
standard-normal priors enter ``log q``; the samples, chain, tau, summary and modes carry the 9
columns ``gamma .. f_Fe, nu_E, nu_X`` (:attr:`McmcResult.names`), :meth:`McmcResult.theta` the 7
source parameters and :meth:`McmcResult.nuisances` the 2 nuisances. The multi-start search
draws its candidates' nuisances from their priors.

Example:
    >>> from hepflow.cosmic import Observation
    >>> result = run_mcmc(Observation.from_auger(), seed=1, n_steps=5000)  # doctest: +SKIP
    >>> result.converged, result.tau.round(0), result.samples.fields[:3]  # doctest: +SKIP
    (True, array([...]), ['gamma', 'lg_rcut', 'f_H'])
    >>> result.write("mcmc-auger")  # samples.parquet, samples.root, summary.json  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.cosmic import PARAMETER_NAMES, ForwardModel, Likelihood, Observation, Prior
from hepflow.cosmic.config import Initial, check_mcmc_settings, load_config
from hepflow.cosmic.modes import Mode, ModeWeights, find_modes, weigh_modes
from hepflow.cosmic.systematics import NUISANCE_NAMES
from hepflow.errors import ConfigError, InputError, OutputError

log = logging.getLogger(__name__)

__all__ = [
    "McmcResult",
    "Mode",
    "UnconstrainedPosterior",
    "find_modes",
    "mcmc_cosmic",
    "mcmc_with_nuisances",
    "read_mcmc",
    "run_mcmc",
]

_NDIM = len(PARAMETER_NAMES) - 1
_QUANTILES = (0.05, 0.16, 0.5, 0.84, 0.95)
#: fewer effective importance draws than this behind the modes' masses is warned about
_MIN_MODE_ESS = 100.0
#: a mode's run with fewer of its samples in its own region than this is warned about
_MIN_PURITY = 0.9
_Z_CLIP = 50.0  # prior draws on the simplex boundary map to -inf: start them at -50 instead


# ---------------------------------------------------------------------- the sampled density
class UnconstrainedPosterior:
    """Log posterior density in the prior's unconstrained coordinates (module docstring).

    Calling it with ``z`` (n, 6) returns ``log q(z)`` (n,); :meth:`theta` maps to the 7 parameters.

    Example:
        >>> from hepflow.cosmic import Observation
        >>> post = UnconstrainedPosterior(Likelihood(Observation.from_auger()), Prior())
        >>> z = np.zeros((2, 6))
        >>> post.theta(z)[0].round(2).tolist()
        [0.0, 18.5, 0.2, 0.2, 0.2, 0.2, 0.2]
        >>> post(z).shape
        (2,)
    """

    def __init__(self, likelihood: Likelihood, prior: Prior) -> None:
        self.likelihood = likelihood
        self.prior = prior
        # any callable likelihood works; one of a forward model with systematics takes the nuisances
        self.systematics = getattr(getattr(likelihood, "model", None), "systematics", None)
        #: the sampled columns: the 7 source parameters, then the nuisances (with systematics)
        self.names: tuple[str, ...] = PARAMETER_NAMES + (
            NUISANCE_NAMES if self.systematics is not None else ()
        )
        #: dimension of ``z``: 6, or 8 with the nuisances
        self.ndim = _NDIM + (len(NUISANCE_NAMES) if self.systematics is not None else 0)

    def theta(self, z: np.ndarray) -> np.ndarray:
        """(n, 6) unconstrained -> (n, 7) parameters ((n, 8) -> (n, 9) with the nuisances)."""
        u = np.atleast_2d(np.asarray(z, dtype=float))
        if self.systematics is None:
            return self.prior.from_unconstrained(u)
        return np.concatenate([self.prior.from_unconstrained(u[:, :_NDIM]), u[:, _NDIM:]], axis=1)

    def to_unconstrained(self, theta: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`theta`; (n, 7) rows get ``nu = 0`` when the nuisances are sampled."""
        t = np.atleast_2d(np.asarray(theta, dtype=float))
        z = self.prior.to_unconstrained(t[:, : len(PARAMETER_NAMES)])
        if self.systematics is None:
            return z
        nu = t[:, len(PARAMETER_NAMES) :] if t.shape[1] > len(PARAMETER_NAMES) else np.zeros((len(t), 2))
        return np.concatenate([z, nu], axis=1)

    def log_jacobian(self, z: np.ndarray) -> np.ndarray:
        """``log |d theta_free / d z|`` (n,) (:meth:`hepflow.cosmic.priors.Prior.log_jacobian`; the
        nuisances have Jacobian 1)."""
        return self.prior.log_jacobian(np.atleast_2d(np.asarray(z, dtype=float))[:, :_NDIM])

    def evaluate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log q(z), log L(theta(z)))``, both (n,); ``-inf`` where not finite."""
        theta = self.theta(z)
        loglike = self.likelihood(theta)
        with np.errstate(invalid="ignore", divide="ignore"):
            lq = loglike + self.prior.log_prob(theta[:, : len(PARAMETER_NAMES)]) + self.log_jacobian(z)
            if self.systematics is not None:
                lq = lq + self.systematics.log_prob(theta[:, len(PARAMETER_NAMES) :])
        lq = np.where(np.isfinite(lq), lq, -np.inf)  # +inf (Dirichlet < 1 at a boundary) is refused too
        return lq, loglike

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.evaluate(z)[0]

    def _emcee(self, z: np.ndarray) -> np.ndarray:
        # (n, 2): emcee takes column 0 as the log probability and column 1 as a blob
        lq, loglike = self.evaluate(z)
        return np.column_stack([lq, loglike])


# ---------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class McmcResult:
    """Posterior samples and diagnostics of :func:`run_mcmc`.

    Attributes:
        samples: record array, one row per retained sample (after burn-in and thinning): the 7
            parameters, ``log_likelihood``, ``step`` and ``walker``.
        chain: (n_steps, n_walkers, 7) every step's parameters (burn-in included).
        log_prob: (n_steps, n_walkers) the sampled density ``log q(z)``.
        log_likelihood: (n_steps, n_walkers) ``log L``.
        tau: (7,) integrated autocorrelation times in steps (NaN for a constant column).
        burn_in, thin: steps discarded at the start, thinning of the retained steps.
        acceptance_fraction: (n_walkers,).
        converged: whether the autocorrelation criterion was met before ``n_steps``.
        wall_time: seconds (initialisation included).
        modes: the maxima found by the initialisation (empty unless ``initial="optimum"``).
        settings: the options of the run (JSON-ready).
        names: the columns of ``chain`` and ``tau`` (the 7 parameters, then ``nu_E, nu_X`` when
            the nuisances were sampled).
        checks: what :func:`mcmc_cosmic` adds to the summary: the posterior predictive model
            check of the samples (``model_check``, ``model_check_warnings``, ...).
    """

    samples: ak.Array
    chain: np.ndarray
    log_prob: np.ndarray
    log_likelihood: np.ndarray
    tau: np.ndarray
    burn_in: int
    thin: int
    acceptance_fraction: np.ndarray
    converged: bool
    wall_time: float
    modes: tuple[Mode, ...] = ()
    mode_weights: ModeWeights | None = None
    sampled_modes: tuple[int, ...] = (0,)
    mode_purity: tuple[float, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    names: tuple[str, ...] = PARAMETER_NAMES
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        return int(self.chain.shape[0])

    def theta(self) -> np.ndarray:
        """Retained samples of the 7 source parameters as an (n, 7) array."""
        return np.stack([ak.to_numpy(self.samples[name]) for name in PARAMETER_NAMES], axis=1)

    def draws(self) -> np.ndarray:
        """Retained samples of every sampled column (:attr:`names`): (n, 7) or (n, 9)."""
        return np.stack([ak.to_numpy(self.samples[name]) for name in self.names], axis=1)

    def nuisances(self) -> np.ndarray | None:
        """Retained samples of ``nu_E, nu_X`` (n, 2), None when they were not sampled."""
        if len(self.names) == len(PARAMETER_NAMES):
            return None
        return np.stack([ak.to_numpy(self.samples[name]) for name in NUISANCE_NAMES], axis=1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: diagnostics, posterior mean, standard deviation and quantiles, modes."""
        theta = np.stack([ak.to_numpy(self.samples[name]) for name in self.names], axis=1)
        n_col = len(self.names)
        q = (
            np.quantile(theta, _QUANTILES, axis=0)
            if theta.size
            else np.full((len(_QUANTILES), n_col), np.nan)
        )
        posterior = {
            name: {
                "mean": float(theta[:, i].mean()) if theta.size else float("nan"),
                "std": float(theta[:, i].std()) if theta.size else float("nan"),
                **{f"q{round(100 * p):02d}": float(q[j, i]) for j, p in enumerate(_QUANTILES)},
            }
            for i, name in enumerate(self.names)
        }
        acc = self.acceptance_fraction
        return {
            "converged": self.converged,
            "wall_time_s": self.wall_time,
            "n_steps": self.n_steps,
            "n_walkers": int(self.chain.shape[1]),
            "n_samples": len(self.samples),
            "burn_in": self.burn_in,
            "thin": self.thin,
            "tau": dict(zip(self.names, [_finite_or_none(t) for t in self.tau], strict=True)),
            "acceptance_fraction": {
                "mean": float(acc.mean()),
                "min": float(acc.min()),
                "max": float(acc.max()),
            },
            "posterior": posterior,
            "modes": [m.to_dict() for m in self.modes],
            "sampled_modes": list(self.sampled_modes),
            "mode_weights": None if self.mode_weights is None else self.mode_weights.summary(),
            "mode_purity": list(self.mode_purity),
            "mode_warnings": self.mode_warnings(),
            "settings": self.settings,
            **self.checks,
        }

    def mode_warnings(self) -> list[str]:
        """What may be wrong with the modes' masses or their sampling (empty when nothing)."""
        if self.mode_weights is None:
            return []
        out = []
        w = self.mode_weights
        thin = [
            f"{_percent(m)} ({ess:.0f})"
            for m, ess, how in zip(w.masses, w.region_ess, w.methods, strict=True)
            if how == "importance" and ess < _MIN_MODE_ESS
        ]
        if thin:
            out.append(
                f"the mass of the mode(s) holding {', '.join(thin)} rests on fewer than "
                f"{_MIN_MODE_ESS:.0f} effective importance draws: raise [mcmc] mode_draws"
            )
        for k, p in enumerate(self.mode_purity):
            if p < _MIN_PURITY:
                out.append(
                    f"the run of mode {self.sampled_modes[k]} spent {_percent(1 - p)} of its samples in "
                    "another mode's region: the modes found or their masses are off"
                )
        left = sum(m.mass or 0.0 for i, m in enumerate(self.modes) if i not in self.sampled_modes)
        if left >= 1e-3:
            out.append(
                f"modes holding {_percent(left)} of the posterior mass together are not sampled "
                "(each below [mcmc] min_mode_mass)"
            )
        return out

    def __str__(self) -> str:
        s = self.summary()
        state = "converged" if self.converged else "NOT converged"
        runs = len(self.sampled_modes)
        walkers = (
            f"{s['n_walkers']} walkers"
            if runs == 1
            else f"{runs} ensembles of {s['n_walkers'] // runs} walkers (one per mode)"
        )
        lines = [
            f"MCMC: {s['n_steps']} steps x {walkers} in {self.wall_time:.1f} s, "
            f"{state} (max tau {np.nanmax(self.tau):.0f} steps), "
            f"acceptance {s['acceptance_fraction']['mean']:.2f}, {s['n_samples']} samples "
            f"(burn-in {self.burn_in}, thin {self.thin})",
        ]
        for name, p in s["posterior"].items():
            lines.append(
                f"  {name:<8} {p['mean']:9.4f} +- {p['std']:.4f}  [{p['q05']:.4f}, {p['q95']:.4f}] (90 %)"
            )
        n_par = len(PARAMETER_NAMES)
        for i, m in enumerate(self.modes):
            nu = m.theta[n_par:]
            lines.append(
                f"  mode {i}: D = {m.deviance:.1f} (spectrum {m.deviance_spectrum:.1f}, "
                f"Xmax {m.deviance_xmax:.1f}) at gamma {m.theta[0]:.3f}, lg_rcut {m.theta[1]:.3f}, "
                f"fractions {np.round(m.theta[2:n_par], 3).tolist()}"
                + (f", nu_E {nu[0]:.2f}, nu_X {nu[1]:.2f}" if nu.size else "")
                + ("" if m.mass is None else f"; {_percent(m.mass)} of the posterior mass")
                + (", sampled" if m.mass is not None and i in self.sampled_modes else "")
            )
        lines.extend(f"  WARNING: {w}" for w in self.mode_warnings())
        return "\n".join(lines)

    def write(
        self,
        output_dir: str | os.PathLike[str],
        *,
        formats: tuple[str, ...] = ("parquet", "root"),
        chain: bool = False,
        overwrite: bool = False,
    ) -> dict[str, Path]:
        """Write ``samples.parquet`` / ``samples.root`` (TTree ``Posterior``), ``summary.json`` and,
        with ``chain=True``, ``chain.parquet`` (every step and walker) into ``output_dir``, atomically.

        Raises :class:`~hepflow.errors.OutputError` when a file exists and ``overwrite`` is False
        (checked for all files before any is written).
        """
        from hepflow.outputs import write_json, write_parquet, write_root

        out = Path(output_dir)
        for fmt in formats:
            if fmt not in ("parquet", "root"):
                raise ConfigError(f"unknown output format {fmt!r}; choose parquet or root")
        targets = {f"samples.{fmt}": out / f"samples.{fmt}" for fmt in formats}
        targets["summary.json"] = out / "summary.json"
        if chain:
            targets["chain.parquet"] = out / "chain.parquet"
        if not overwrite:
            existing = [str(p) for p in targets.values() if p.exists()]
            if existing:
                raise OutputError(f"{existing[0]} exists; pass --overwrite to replace it")
        if "samples.parquet" in targets:
            write_parquet(self.samples, targets["samples.parquet"])
        if "samples.root" in targets:
            write_root(self.samples, targets["samples.root"], treename="Posterior")
        if chain:
            write_parquet(self._chain_table(), targets["chain.parquet"])
        write_json(targets["summary.json"], self.summary())
        return targets

    def _chain_table(self) -> ak.Array:
        n_steps, n_walkers, _ = self.chain.shape
        flat = self.chain.reshape(-1, len(self.names))
        cols: dict[str, np.ndarray] = {name: flat[:, i].copy() for i, name in enumerate(self.names)}
        cols["log_prob"] = self.log_prob.ravel()
        cols["log_likelihood"] = self.log_likelihood.ravel()
        cols["step"] = np.repeat(np.arange(n_steps), n_walkers)
        cols["walker"] = np.tile(np.arange(n_walkers), n_steps)
        return ak.zip(cols, depth_limit=1)


def _percent(mass: float) -> str:
    if mass < 1e-4:
        return "< 0.01 %"
    return f"{100 * mass:.2g} %" if mass < 0.1 else f"{100 * mass:.0f} %"


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# ---------------------------------------------------------------------- sampler
def run_mcmc(
    observation: Observation,
    *,
    seed: int,
    model: ForwardModel | None = None,
    prior: Prior | None = None,
    n_walkers: int = 32,
    n_steps: int = 20_000,
    initial: Initial | np.ndarray = "optimum",
    stop_when_converged: bool = True,
    check_every: int = 250,
    tau_factor: float = 50.0,
    tau_rtol: float = 0.01,
    n_starts: int = 8,
    n_candidates: int = 4096,
    ball: float = 0.01,
    mode_draws: int = 20_000,
    min_mode_mass: float = 0.01,
    progress: bool = True,
) -> McmcResult:
    """Sample the posterior of the 7 source parameters for ``observation`` with emcee.

    Args:
        observation: the binned data.
        seed: random seed (initialisation and sampler): the result is reproducible.
        model: the forward model (default: :class:`ForwardModel` with ``observation`` as
            reference, EPOS-LHC, Gilmore12, homogeneous sources); with ``systematics`` the
            nuisances are sampled too (module docstring).
        prior: the prior (default :class:`Prior`).
        n_walkers: ensemble size (at least 12; 16 with the nuisances).
        n_steps: maximum number of steps.
        initial: ``"optimum"``, ``"prior"``, one parameter vector (7,) or one per walker
            (n_walkers, 7); see the module docstring. With nuisances also (9,) or (n_walkers, 9);
            7 columns start them at 0.
        stop_when_converged: stop at the first check that meets the criterion (else run ``n_steps``).
        check_every: steps between convergence checks.
        tau_factor, tau_rtol: the criterion ``n > tau_factor tau`` and ``|d tau| / tau < tau_rtol``.
        n_starts, n_candidates: multi-start settings of ``initial="optimum"`` (:func:`find_modes`).
        ball: spread of the walkers around a start point, in unconstrained units.
        mode_draws: with ``initial="optimum"`` and more than one maximum found, the importance
            draws that weigh them (:func:`hepflow.cosmic.modes.weigh_modes`); 0: do not weigh
            (the walkers start at the highest maximum only).
        min_mode_mass: every weighed mode holding at least this share of the posterior mass gets
            its own ensemble run; the samples are drawn from the runs in proportion to the masses.
        progress: tqdm progress bar.
    """

    start = time.perf_counter()
    prior = prior if prior is not None else Prior()
    like = Likelihood(observation, model=model) if model is not None else Likelihood(observation)
    posterior = UnconstrainedPosterior(like, prior)
    ndim, names = posterior.ndim, posterior.names
    check_mcmc_settings(
        n_free=ndim,
        n_walkers=n_walkers,
        n_steps=n_steps,
        check_every=check_every,
        tau_factor=tau_factor,
        tau_rtol=tau_rtol,
        n_starts=n_starts,
        n_candidates=n_candidates,
        ball=ball,
        mode_draws=mode_draws,
        min_mode_mass=min_mode_mass,
    )
    seq = np.random.SeedSequence(seed)
    init_rng, walk_rng, sampler_rng = (np.random.default_rng(s) for s in seq.spawn(3))

    modes: tuple[Mode, ...] = ()
    weights: ModeWeights | None = None
    sampled: tuple[int, ...] = (0,)
    if isinstance(initial, str):
        if initial == "optimum":
            modes = find_modes(posterior, init_rng, n_candidates=n_candidates, n_starts=n_starts)
            if len(modes) > 1 and mode_draws:
                modes, weights = weigh_modes(posterior, modes, init_rng, draws=mode_draws)
                sampled = tuple(i for i, m in enumerate(modes) if i == 0 or (m.mass or 0.0) >= min_mode_mass)
            starts = [
                _ball(posterior.to_unconstrained(modes[i].theta)[0], n_walkers, ball, walk_rng)
                for i in sampled
            ]
        elif initial == "prior":
            draws = prior.sample(n_walkers, walk_rng)
            if posterior.systematics is not None:
                draws = np.concatenate([draws, posterior.systematics.sample(n_walkers, walk_rng)], axis=1)
            starts = [np.clip(posterior.to_unconstrained(draws), -_Z_CLIP, _Z_CLIP)]
        else:
            raise ConfigError(f"initial must be 'optimum', 'prior' or parameter values, got {initial!r}")
        init_name = initial
    else:
        starts = [
            _initial_from_values(np.asarray(initial, dtype=float), posterior, n_walkers, ball, walk_rng)
        ]
        init_name = "values"
    for z0 in starts:
        bad = ~np.isfinite(posterior(z0))
        if bad.any():
            raise ConfigError(
                f"{int(bad.sum())} initial walker position(s) have zero posterior density "
                f"(first: {np.array2string(posterior.theta(z0[bad][:1])[0], precision=4)})"
            )

    criterion = {
        "n_steps": n_steps,
        "check_every": check_every,
        "tau_factor": tau_factor,
        "tau_rtol": tau_rtol,
        "stop_when_converged": stop_when_converged,
    }
    runs = [
        _run_ensemble(
            posterior,
            z0,
            sampler_rng,
            **criterion,
            progress=progress,
            desc="emcee" if len(starts) == 1 else f"emcee, mode {i}",
        )
        for i, z0 in zip(sampled, starts, strict=True)
    ]
    # runs that stopped earlier continue to the longest one's length: one chain array
    n_done = max(r.sampler.iteration for r in runs)
    for r in runs:
        if r.sampler.iteration < n_done:
            r.sampler.run_mcmc(None, n_done - r.sampler.iteration, progress=False)
            z_run = r.sampler.get_chain()
            r.tau = _autocorr_time(posterior.theta(z_run.reshape(-1, ndim)), z_run.shape)
    z_chain = np.concatenate([r.sampler.get_chain() for r in runs], axis=1)
    chain = posterior.theta(z_chain.reshape(-1, ndim)).reshape(n_done, z_chain.shape[1], -1)
    log_prob = np.concatenate([r.sampler.get_log_prob() for r in runs], axis=1)
    loglike = np.concatenate(
        [np.asarray(r.sampler.get_blobs(), dtype=float).reshape(n_done, n_walkers) for r in runs], axis=1
    )
    tau = np.fmax.reduce([r.tau for r in runs])
    converged = all(r.converged for r in runs)
    finite_tau = tau[np.isfinite(tau)]
    max_tau = float(finite_tau.max()) if finite_tau.size else 1.0
    min_tau = float(finite_tau.min()) if finite_tau.size else 1.0
    burn_in = min(int(np.ceil(2.0 * max_tau)), n_done // 2)
    thin = max(1, int(0.5 * min_tau))
    kept = chain[burn_in::thin]
    steps_kept = np.arange(burn_in, n_done, thin)
    step = np.repeat(steps_kept, kept.shape[1])
    walker = np.tile(np.arange(kept.shape[1]), steps_kept.size)
    run = walker // n_walkers
    rows = np.arange(run.size)
    if len(runs) > 1:
        # each mode's run gives as many rows; keep them in proportion to the modes' masses
        share = np.array([modes[i].mass or 0.0 for i in sampled])
        share = share / share.max()
        rows = np.sort(
            np.concatenate(
                [
                    walk_rng.choice(
                        np.flatnonzero(run == k), round(share[k] * np.sum(run == k)), replace=False
                    )
                    for k in range(len(runs))
                ]
            )
        )
    flat = kept.reshape(-1, kept.shape[2])[rows]
    samples = {name: np.ascontiguousarray(flat[:, i]) for i, name in enumerate(names)}
    samples["log_likelihood"] = loglike[burn_in::thin].ravel()[rows]
    samples["step"] = step[rows]
    samples["walker"] = walker[rows]
    samples["mode"] = np.asarray(sampled)[run[rows]]
    purity: tuple[float, ...] = ()
    if weights is not None:
        # each run's retained draws in its own mode's region (1: it stayed there)
        z_kept = z_chain[burn_in::thin].reshape(-1, ndim)
        region = weights.region_of(z_kept)
        home = weights.region_of(posterior.to_unconstrained(np.stack([modes[i].theta for i in sampled])))
        purity = tuple(float(np.mean(region[run == k] == home[k])) for k in range(len(runs)))
    settings = {
        "seed": seed,
        "initial": init_name,
        "n_walkers": n_walkers,
        "max_steps": n_steps,
        "stop_when_converged": stop_when_converged,
        "check_every": check_every,
        "tau_factor": tau_factor,
        "tau_rtol": tau_rtol,
        "n_starts": n_starts,
        "n_candidates": n_candidates,
        "ball": ball,
        "mode_draws": mode_draws,
        "min_mode_mass": min_mode_mass,
        "prior": {
            "gamma": list(prior.gamma),
            "lg_rcut": list(prior.lg_rcut),
            "concentration": prior.concentration,
        },
        "model": like.model.description,
        "systematics": None if posterior.systematics is None else posterior.systematics.metadata(),
        "sampled_coordinates": "prior unconstrained (logit box, stick-breaking logits), with Jacobian",
    }
    return McmcResult(
        samples=ak.zip(samples, depth_limit=1),
        chain=chain,
        log_prob=log_prob,
        log_likelihood=loglike,
        tau=tau,
        burn_in=burn_in,
        thin=thin,
        acceptance_fraction=np.concatenate(
            [np.asarray(r.sampler.acceptance_fraction, dtype=float) for r in runs]
        ),
        converged=converged,
        wall_time=time.perf_counter() - start,
        modes=modes,
        mode_weights=weights,
        sampled_modes=sampled,
        mode_purity=purity,
        settings=settings,
        names=names,
    )


@dataclass
class _Run:
    sampler: Any
    tau: np.ndarray
    converged: bool


def _run_ensemble(
    posterior: UnconstrainedPosterior,
    z0: np.ndarray,
    rng: np.random.Generator,
    *,
    n_steps: int,
    check_every: int,
    tau_factor: float,
    tau_rtol: float,
    stop_when_converged: bool,
    progress: bool,
    desc: str,
) -> _Run:
    """One emcee ensemble from ``z0`` (n_walkers, ndim) until the convergence criterion (module
    docstring) or ``n_steps``."""
    import emcee
    from tqdm.auto import tqdm

    n_walkers, ndim = z0.shape
    sampler = emcee.EnsembleSampler(n_walkers, ndim, posterior._emcee, vectorize=True)
    sampler.random_state = np.random.RandomState(int(rng.integers(2**32))).get_state()
    state: Any = z0
    tau = np.full(len(posterior.names), np.inf)
    converged = False
    with tqdm(total=n_steps, unit="step", disable=not progress, desc=desc) as bar:
        while sampler.iteration < n_steps:
            steps = min(check_every, n_steps - sampler.iteration)
            try:
                state = sampler.run_mcmc(state, steps, progress=False)
            except ValueError as err:  # emcee refuses linearly dependent initial walkers
                if sampler.iteration:
                    raise
                raise ConfigError(f"emcee refused the initial walker positions: {err}") from err
            bar.update(steps)
            z_chain = sampler.get_chain()
            new_tau = _autocorr_time(posterior.theta(z_chain.reshape(-1, ndim)), z_chain.shape)
            finite = np.isfinite(new_tau)
            converged = bool(
                finite.any()
                and np.all(new_tau[finite] * tau_factor < sampler.iteration)
                and np.all(np.abs(tau[finite] - new_tau[finite]) < tau_rtol * new_tau[finite])
            )
            tau = new_tau
            bar.set_postfix(
                tau=f"{np.nanmax(tau):.0f}", acc=f"{np.mean(sampler.acceptance_fraction):.2f}", refresh=False
            )
            log.info(
                "%s, step %d: tau %s, converged %s", desc, sampler.iteration, np.round(tau, 1), converged
            )
            if converged and stop_when_converged:
                break
    return _Run(sampler=sampler, tau=tau, converged=converged)


def _autocorr_time(theta_flat: np.ndarray, chain_shape: tuple[int, ...]) -> np.ndarray:
    """emcee's integrated autocorrelation time (tol=0) of each parameter; NaN for a constant column."""
    from emcee.autocorr import integrated_time

    n_steps, n_walkers = chain_shape[:2]
    theta = theta_flat.reshape(n_steps, n_walkers, -1)
    out = np.full(theta.shape[2], np.nan)
    for i in range(theta.shape[2]):
        x = theta[:, :, i]
        if np.ptp(x) > 0:
            out[i] = integrated_time(x[:, :, None], tol=0)[0]
    return out


def _ball(center: np.ndarray, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    c = np.clip(center, -_Z_CLIP, _Z_CLIP)
    return c + scale * rng.standard_normal((n, c.size))


def _initial_from_values(
    values: np.ndarray,
    posterior: UnconstrainedPosterior,
    n_walkers: int,
    ball: float,
    rng: np.random.Generator,
) -> np.ndarray:
    prior = posterior.prior
    widths = sorted({len(PARAMETER_NAMES), len(posterior.names)})
    if values.ndim == 1 and values.shape[0] in widths:
        _check_in_support(values[None, : len(PARAMETER_NAMES)], prior)
        return _ball(posterior.to_unconstrained(values)[0], n_walkers, ball, rng)
    if values.ndim == 2 and values.shape[0] == n_walkers and values.shape[1] in widths:
        _check_in_support(values[:, : len(PARAMETER_NAMES)], prior)
        return np.clip(posterior.to_unconstrained(values), -_Z_CLIP, _Z_CLIP)
    shapes = " or ".join(f"({w},) or ({n_walkers}, {w})" for w in widths)
    raise ConfigError(f"initial values must have shape {shapes}, got {values.shape}")


def _check_in_support(values: np.ndarray, prior: Prior) -> None:
    bad = np.flatnonzero(~prior.in_support(values))
    if bad.size:
        raise ConfigError(
            f"initial parameters row {bad[0]} = {np.array2string(values[bad[0]], precision=4)} is "
            f"outside the prior support (gamma in {prior.gamma}, lg_rcut in {prior.lg_rcut}, "
            "fractions on the simplex)"
        )


# ---------------------------------------------------------------------- command-line entry point
def mcmc_cosmic(
    observation: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: Any = None,
    seed: int | None = None,
    entry: int = 0,
    n_steps: int | None = None,
    chain: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    systematics: bool | None = None,
) -> McmcResult:
    """``hepflow mcmc cosmic``: sample the posterior for ``"auger"`` or an observation file, write it.

    Args:
        observation: ``"auger"`` or a ROOT file (:func:`hepflow.cosmic.generate.load_observation`:
            a ``Showers`` tree, the histogram of ``hepflow process cosmic``, or a
            ``PseudoExperiments`` tree with ``entry``).
        output_dir: where ``samples.parquet``, ``samples.root``, ``summary.json`` go; the summary
            also holds the posterior predictive model check of the samples (``[check]``,
            :func:`hepflow.cosmic.ppc.predictive_check`).
        config: a :class:`hepflow.cosmic.config.CosmicConfig` or TOML file (prior, model, mcmc);
            defaults without.
        seed: overrides ``[mcmc] seed``.
        n_steps: overrides ``[mcmc] n_steps``.
        chain: also write ``chain.parquet``.
        systematics: sample the nuisances ``nu_E, nu_X`` (True) or not (False) with the
            ``[systematics]`` sizes; None: as ``[systematics] enabled`` says.
    """
    from hepflow.cosmic.generate import load_observation

    cfg = load_config(config)
    if systematics is not None:
        cfg = replace(cfg, systematics=replace(cfg.systematics, enabled=systematics))
    out = Path(output_dir)
    if not overwrite and (out / "summary.json").exists():
        raise OutputError(f"{out / 'summary.json'} exists; pass --overwrite to replace it")
    obs = load_observation(observation, binning=cfg.model.binning(), entry=entry)
    options = cfg.mcmc.options()
    if n_steps is not None:
        options["n_steps"] = n_steps
    model = cfg.model.build(reference=obs, systematics=cfg.systematics.build())
    result = run_mcmc(
        obs,
        seed=cfg.mcmc.seed if seed is None else seed,
        model=model,
        prior=cfg.prior.build(),
        progress=progress,
        **options,
    )
    # what the MCMC was run on: `hepflow report cosmic --mcmc` refuses the MCMC of another observation
    result.settings["observation"] = (
        str(observation) if str(observation) == "auger" else str(Path(observation))
    )
    result.settings["lg_e_min"] = cfg.model.lg_e_min
    if str(observation) != "auger":
        result.settings["entry"] = entry
    if len(result.samples):  # does the model describe the data? (docs/cosmic_checks.md)
        from hepflow.cosmic.ppc import predictive_check

        cc = cfg.check
        # with nuisances each replica is simulated at its draw's nu_E, nu_X too
        check = predictive_check(obs, result.draws(), model=model, n_replicas=cc.n_replicas, seed=cc.seed)
        result.checks.update(
            model_check={"mcmc": check.summary()},
            model_check_threshold=cc.threshold,
            model_check_warnings={"mcmc": check.warnings(threshold=cc.threshold)},
        )
    result.write(out, chain=chain, overwrite=overwrite)
    return result


def read_mcmc(
    directory: str | os.PathLike[str],
    *,
    observation: str | os.PathLike[str] = "auger",
    lg_e_min: float,
    entry: int = 0,
    purpose: str = "this analysis",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Samples (n, 7) and ``summary.json`` of a ``hepflow mcmc cosmic`` output directory.

    The MCMC must have been run on ``observation`` (``"auger"`` or the same file, and ``entry``
    for a pseudo-experiment file) above ``lg_e_min``, as its summary records; the MCMC of any
    other observation is refused with one line naming both (``purpose`` says what needs it).

    Example (an MCMC of the Auger data)::

        theta, summary = read_mcmc("runs/mcmc_auger", observation="auger", lg_e_min=18.7)
    """
    from hepflow.cosmic.data import parameter_columns

    where = Path(directory)
    samples, summary = where / "samples.parquet", where / "summary.json"
    obs = str(observation)
    if not samples.is_file() or not summary.is_file():
        raise InputError(
            f"{where}: no samples.parquet/summary.json (run `hepflow mcmc cosmic --observation {obs}`)"
        )
    try:
        info = json.loads(summary.read_text())
    except ValueError as err:
        raise InputError(f"{summary} is not valid JSON: {err}") from err
    settings = info.get("settings") if isinstance(info, dict) else None
    settings = settings if isinstance(settings, dict) else {}
    ran_on, ran_above = settings.get("observation"), settings.get("lg_e_min")
    if obs == "auger":
        wanted = f"the Auger data above lg(E/eV) = {lg_e_min:g}"
        same = ran_on == "auger"
    else:
        wanted = f"observation {str(Path(obs))!r}" + (f" (entry {entry})" if entry else "")
        wanted += f" above lg(E/eV) = {lg_e_min:g}"
        same = (
            isinstance(ran_on, str)
            and ran_on != "auger"
            and Path(ran_on).resolve() == Path(obs).resolve()
            and settings.get("entry", 0) == entry
        )
    if not same or not isinstance(ran_above, int | float) or abs(ran_above - lg_e_min) > 1e-9:
        what = (
            "an observation it does not record"
            if ran_on is None
            else f"observation {ran_on!r}"
            + (f" (entry {settings['entry']})" if settings.get("entry") is not None else "")
            + (f" above lg(E/eV) = {ran_above:g}" if isinstance(ran_above, int | float) else "")
        )
        raise InputError(
            f"{where} holds the MCMC of {what}, not of {wanted} that {purpose} is about "
            f"(run `hepflow mcmc cosmic --observation {obs}` with the same config)"
        )
    theta = parameter_columns(ak.from_parquet(samples), samples)
    return theta, info


def check_mcmc_systematics(
    where: str | os.PathLike[str],
    ran_with: dict[str, Any] | None,
    systematics: dict[str, Any] | None,
    *,
    against: str,
    remedy: str,
) -> None:
    """Refuse, in one line, an MCMC (in ``where``) that ran with other nuisances (``ran_with``,
    metadata, None when off) than the ``systematics`` of what it is compared with, which
    ``against`` names (e.g. ``"the model m was trained with"``): they infer different posteriors.
    ``remedy`` says what to do instead."""
    from hepflow.config import json_plain

    if json_plain(ran_with) != json_plain(systematics):
        raise InputError(
            f"{where} holds an MCMC with systematics {ran_with or 'off'}, {against} systematics "
            f"{systematics or 'off'}: they infer different posteriors ({remedy})"
        )


def mcmc_with_nuisances(
    directory: str | os.PathLike[str],
    theta: np.ndarray,
    info: dict[str, Any],
    systematics: dict[str, Any] | None,
    *,
    against: str,
) -> np.ndarray:
    """The samples ``theta`` (n, 7) of :func:`read_mcmc` with their nuisances from ``directory``
    (n, 9) when the MCMC sampled them, unchanged otherwise. The MCMC must have been run with the
    ``systematics`` (metadata, None when off) of what it is compared with, which ``against``
    names (e.g. ``"the model m was trained with"``); other nuisances are refused in one line
    (the posteriors differ)."""
    ran_with = (info.get("settings") or {}).get("systematics")
    check_mcmc_systematics(
        directory,
        ran_with,
        systematics,
        against=against,
        remedy=f"run `hepflow mcmc cosmic --{'' if systematics else 'no-'}systematics`",
    )
    if ran_with is None:
        return theta
    table = ak.from_parquet(Path(directory) / "samples.parquet")
    return np.column_stack([theta, *(ak.to_numpy(table[name]) for name in NUISANCE_NAMES)])
