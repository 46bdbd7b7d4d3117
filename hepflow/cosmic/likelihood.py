"""Combined-fit likelihood: Poisson spectrum deviance plus multinomial Xmax deviance.

Following the Auger combined fit (JCAP 04 (2017) 038)::

    D_J    = 2 sum_i [mu_i - n_i + n_i ln(n_i / mu_i)]              (spectrum bins above lg_e_min)
    D_Xmax = 2 sum_m sum_x k_mx ln(k_mx / (n_m G_mx))               (Xmax energy bins, Xmax bins)
    ln L   = -(D_J + D_Xmax) / 2

with ``0 ln 0 = 0``. The flux normalisation J0 is profiled analytically: for a Poisson likelihood
the maximum-likelihood scale of a predicted shape ``s_i`` (sum 1) is ``mu_i = s_i sum_j n_j``,
so ``D_J`` is the profile deviance. ``G_mx`` is floored at 1e-300 so that a bin with events where
the model predicts none gives a large but finite deviance.

Example:
    >>> obs = Observation.from_auger()
    >>> like = Likelihood(obs)
    >>> theta = np.array([[0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0],
    ...                   [2.5, 19.5, 1.0, 0.0, 0.0, 0.0, 0.0]])
    >>> d = like.deviance(theta)
    >>> bool(d.total[0] < d.total[1])
    True
    >>> like(theta).shape  # vectorised log-likelihood, -inf outside the support
    (2,)

With a forward model that has systematics (:class:`hepflow.cosmic.Systematics`) the rows may
carry the nuisances ``nu_E, nu_X`` as columns 8 and 9; the likelihood is then the conditional
``L(x | theta, nu)`` (their prior belongs to the sampler, :mod:`hepflow.cosmic.mcmc`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from hepflow.cosmic.model import ForwardModel
from hepflow.cosmic.observation import Observation
from hepflow.cosmic.source import as_params, valid_params
from hepflow.cosmic.systematics import split_params
from hepflow.errors import ConfigError

__all__ = ["Deviance", "Likelihood", "multinomial_deviance", "poisson_deviance"]

_FLOOR = 1e-300


def poisson_deviance(n: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``2 sum [mu - n + n ln(n / mu)]`` over the last axis (broadcast).

    Example:
        >>> float(poisson_deviance(np.array([3.0, 0.0]), np.array([3.0, 1.0])))
        2.0
    """
    n = np.asarray(n, dtype=float)
    mu = np.asarray(mu, dtype=float)
    return 2.0 * np.sum(mu - n + special.xlogy(n, n) - special.xlogy(n, np.maximum(mu, _FLOOR)), axis=-1)


def multinomial_deviance(k: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``2 sum_m sum_x k ln(k / (n_m p))`` over the last two axes, ``n_m = sum_x k`` (broadcast)."""
    k = np.asarray(k, dtype=float)
    n = k.sum(axis=-1, keepdims=True)
    p = np.maximum(np.asarray(p, dtype=float), _FLOOR)
    return 2.0 * np.sum(special.xlogy(k, k) - special.xlogy(k, n * p), axis=(-2, -1))


@dataclass(frozen=True)
class Deviance:
    """Deviances per parameter row: spectrum ``D_J``, Xmax ``D_Xmax`` and their sum."""

    spectrum: np.ndarray
    xmax: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.spectrum + self.xmax


class Likelihood:
    """Vectorised log-likelihood of source parameters given an :class:`Observation`.

    Args:
        observation: the binned data (Auger binning).
        model: a :class:`ForwardModel` with the same binning; built with ``model_options`` and
            ``observation`` as reference when omitted.
        use_spectrum, use_xmax: which terms enter (both by default).
        **model_options: keyword options of :class:`ForwardModel` (``hadronic_model``, ``irb``, ...).

    Calling the object returns ``-D / 2`` (n,), ``-inf`` for rows outside the parameter space
    (non-finite values or fractions off the simplex), so it can be used directly by samplers
    (e.g. ``emcee.EnsembleSampler(..., vectorize=True)`` together with a prior).
    """

    def __init__(
        self,
        observation: Observation,
        *,
        model: ForwardModel | None = None,
        use_spectrum: bool = True,
        use_xmax: bool = True,
        **model_options: object,
    ) -> None:
        if model is None:
            model = ForwardModel(observation, **model_options)  # type: ignore[arg-type]
        elif model_options:
            raise ConfigError(f"pass either model or model options, not both: {sorted(model_options)}")
        if model.binning != observation.binning:
            raise ConfigError("the observation and the forward model have different binnings")
        if not (use_spectrum or use_xmax):
            raise ConfigError("the likelihood needs use_spectrum or use_xmax")
        self.observation = observation
        self.model = model
        self.use_spectrum = use_spectrum
        self.use_xmax = use_xmax

    def deviance(self, params: np.ndarray) -> Deviance:
        """Deviances (n,) for valid parameter rows (raises ConfigError on invalid rows); (n, 9)
        rows with the nuisances when the model has systematics."""
        return self.deviance_of(params, self.observation.spectrum, self.observation.xmax)

    def deviance_of(self, params: np.ndarray, spectrum: np.ndarray, xmax: np.ndarray) -> Deviance:
        """Deviances (n,) of other counts in the observation's binning, row by row.

        ``spectrum`` (n_E,) or (n, n_E) and ``xmax`` (n_M, n_X) or (n, n_M, n_X) broadcast
        against the n parameter rows: row i of the counts is scored at row i of ``params``, with
        the normalisation profiled on the counts' own total (as :meth:`deviance` does for the
        observation). Used by the posterior predictive check (pseudo-observations, each at its
        own parameter draw: :mod:`hepflow.cosmic.ppc`). ``params`` as in :meth:`deviance`.

        Example:
            >>> like = Likelihood(Observation.from_auger())
            >>> theta = np.array([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0])
            >>> obs = like.observation
            >>> bool(np.allclose(like.deviance_of(theta, obs.spectrum, obs.xmax).total,
            ...                  like.deviance(theta).total))
            True
        """
        shape, pdf = self.model.predict(params)
        zero = np.zeros(shape.shape[0])
        spec = xmax_dev = zero
        if self.use_spectrum:
            n = np.asarray(spectrum, dtype=float)
            mu = n.sum(axis=-1, keepdims=True) * shape
            spec = np.broadcast_to(poisson_deviance(n, mu), zero.shape).copy()
        if self.use_xmax:
            k = np.asarray(xmax, dtype=float)
            xmax_dev = np.broadcast_to(multinomial_deviance(k, pdf), zero.shape).copy()
        return Deviance(spectrum=spec, xmax=xmax_dev)

    def __call__(self, params: np.ndarray) -> np.ndarray:
        syst = self.model.systematics
        theta, nu = split_params(params, nuisances=syst is not None)
        p = as_params(theta, check=False)
        out = np.full(p.shape[0], -np.inf)
        ok = valid_params(p)
        if nu is not None and syst is not None:
            ok &= syst.in_support(nu)
            p = np.concatenate([p, nu], axis=1)
        if ok.any():
            out[ok] = -0.5 * self.deviance(p[ok]).total
        return out
