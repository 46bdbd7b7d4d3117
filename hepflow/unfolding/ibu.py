"""Iterative Bayesian unfolding (D'Agostini) with efficiency and fakes, uncertainties from toys.

With the response ``R[j, i] = P(detector bin j and passing | particle bin i)`` (columns sum to
the efficiency ``eps[i]``), the fake fraction ``f[j]`` and a prior ``u0`` (by default the
simulation's particle-level spectrum), one iteration maps the estimate ``u`` to

    d'[j]  = d[j] (1 - f[j])                                 (fakes removed)
    P(i|j) = R[j, i] u[i] / sum_k R[j, k] u[k]              (Bayes' theorem with prior u)
    u'[i]  = sum_j P(i|j) d'[j] / eps[i]                     (efficiency corrected)

(G. D'Agostini, NIM A 362 (1995) 487). The number of iterations regularises: one iteration
stays close to the prior, many approach the (noisy) maximum-likelihood solution, which for an
invertible response is ``R^-1 d'``. Particle bins with zero efficiency stay at zero; detector
bins that no particle bin populates are ignored.

Uncertainties come from toys: replicas of the data within their statistics (scaled Poisson, so
weighted pseudo-data work too) unfolded with the nominal response give the data covariance;
replicas of the response within the simulation statistics, unfolding the nominal data, give the
simulation covariance. The total covariance is their sum.

Why not PyUnfold: PyUnfold 0.5.0 (2018, the last release) installs and runs with numpy 2 here,
but it needs pandas and six, takes no fake fractions (data must be corrected beforehand) and is
no longer maintained; the algorithm is a few lines, tested here against analytic answers.

Example:
    >>> R = np.array([[0.8, 0.2], [0.2, 0.8]])
    >>> iterative_bayes(np.array([60.0, 40.0]), R, prior=np.array([1.0, 1.0]), iterations=1).tolist()
    [56.0, 44.0]
"""

from __future__ import annotations

import numpy as np

from hepflow.errors import ConfigError, InputError
from hepflow.unfolding.binning import poisson_fluctuate
from hepflow.unfolding.response import Response
from hepflow.unfolding.result import Unfolded

__all__ = ["iterative_bayes", "unfold_ibu"]


def iterative_bayes(
    data: np.ndarray,
    matrix: np.ndarray,
    *,
    prior: np.ndarray,
    iterations: int,
    efficiency: np.ndarray | None = None,
    fake_fraction: np.ndarray | None = None,
    all_iterations: bool = False,
) -> np.ndarray:
    """D'Agostini's iterations (see the module docstring).

    Args:
        data: detector-level counts ``d`` (n_reco,).
        matrix: ``R[j, i]`` (n_reco, n_truth).
        prior: starting particle-level spectrum (n_truth,), non-negative; only its shape matters.
        iterations: number of iterations (>= 1).
        efficiency: ``eps[i]``; default the column sums of ``matrix``.
        fake_fraction: ``f[j]``; default no fakes.
        all_iterations: return every iterate, shape (iterations, n_truth), instead of the last.
    """
    d = np.asarray(data, dtype=np.float64)
    R = np.asarray(matrix, dtype=np.float64)
    u = np.asarray(prior, dtype=np.float64)
    if iterations < 1:
        raise ConfigError(f"ibu iterations must be >= 1, got {iterations}")
    if R.ndim != 2 or d.shape != (R.shape[0],) or u.shape != (R.shape[1],):
        raise InputError(
            f"shapes do not match: data {d.shape}, response {R.shape}, prior {u.shape} "
            "(expected (n_reco,), (n_reco, n_truth), (n_truth,))"
        )
    if np.any(R < 0) or np.any(u < 0) or not np.all(np.isfinite(R)) or not np.all(np.isfinite(u)):
        raise InputError("the response matrix and the prior must be finite and non-negative")
    eps = R.sum(axis=0) if efficiency is None else np.asarray(efficiency, dtype=np.float64)
    f = np.zeros_like(d) if fake_fraction is None else np.asarray(fake_fraction, dtype=np.float64)
    if eps.shape != u.shape or f.shape != d.shape:
        raise InputError(f"efficiency {eps.shape} or fake fraction {f.shape} does not match the response")
    d_signal = d * (1.0 - f)
    live = eps > 0
    steps = np.empty((iterations, len(u)))
    for it in range(iterations):
        folded = R @ u
        ratio = np.where(folded > 0, d_signal / np.where(folded > 0, folded, 1.0), 0.0)
        matched = u * (R.T @ ratio)  # sum_j P(i|j) d'[j]
        u = np.where(live, matched / np.where(live, eps, 1.0), 0.0)
        steps[it] = u
    return steps if all_iterations else steps[-1]


def unfold_ibu(
    data: np.ndarray,
    data_var: np.ndarray,
    response: Response,
    *,
    iterations: int,
    prior: np.ndarray | None = None,
    toys: int = 200,
    seed: int = 0,
) -> tuple[Unfolded, np.ndarray]:
    """Unfold ``data`` (detector-level counts, with their variances) with ``response``.

    Returns the :class:`~hepflow.unfolding.result.Unfolded` spectrum after ``iterations``
    iterations (components ``data`` and ``simulation``, ``toys`` replicas each) and the central
    value after every iteration, shape (iterations, n_truth).
    """
    d = np.asarray(data, dtype=np.float64)
    dv = np.asarray(data_var, dtype=np.float64)
    if d.shape != dv.shape:
        raise InputError(f"data {d.shape} and data variances {dv.shape} differ in shape")
    if toys < 2:
        raise ConfigError(f"ibu toys must be >= 2, got {toys}")
    u0 = response.truth if prior is None else np.asarray(prior, dtype=np.float64)

    def run(dd: np.ndarray, r: Response, *, every: bool = False) -> np.ndarray:
        return iterative_bayes(
            dd,
            r.matrix,
            prior=u0,
            iterations=iterations,
            efficiency=r.efficiency,
            fake_fraction=r.fake_fraction,
            all_iterations=every,
        )

    steps = run(d, response, every=True)
    rng = np.random.default_rng(seed)
    data_toys = np.stack([run(poisson_fluctuate(d, dv, rng), response) for _ in range(toys)])
    sim_toys = np.stack([run(d, response.fluctuate(rng)) for _ in range(toys)])
    cov_data = np.cov(data_toys, rowvar=False)
    cov_sim = np.cov(sim_toys, rowvar=False)
    unfolded = Unfolded(
        central=steps[-1],
        covariance=np.atleast_2d(cov_data + cov_sim),
        components={
            "data": np.sqrt(np.diag(np.atleast_2d(cov_data))),
            "simulation": np.sqrt(np.diag(np.atleast_2d(cov_sim))),
        },
    )
    return unfolded, steps
