"""Toy simulators with known posteriors, to check inference engines (:mod:`hepflow.posterior.sequential`).

* :class:`GaussianPrior`: ``N(0, I)`` with the ``sample`` / ``log_prob`` interface of a prior;
* :class:`GaussianLinear`: ``x = theta + noise * N(0, I)`` under that prior; the posterior is
  Gaussian with mean ``x / (1 + noise^2)`` and standard deviation ``noise / sqrt(1 + noise^2)``;
* :class:`Bimodal`: ``x = (theta_0^2, theta_1) + noise * N(0, I)``: the posterior has two
  mirror-image modes in ``theta_0`` with equal mass.

Example:
    >>> toy = GaussianLinear(dim=2, noise=0.5)
    >>> theta = toy.prior.sample(3, rng=0)
    >>> toy.simulate(theta, rng=1).shape, toy.posterior_mean_sd(np.array([1.25, 0.0]))[0].tolist()
    ((3, 2), [1.0, 0.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Bimodal", "GaussianLinear", "GaussianPrior"]


@dataclass(frozen=True)
class GaussianPrior:
    """The standard normal prior ``N(0, I_dim)``."""

    dim: int = 2

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` draws (n, dim)."""
        return np.random.default_rng(rng).standard_normal((n, self.dim))

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        """Log density (n,)."""
        t = np.asarray(theta, dtype=np.float64).reshape(-1, self.dim)
        return -0.5 * (t * t).sum(1) - 0.5 * self.dim * np.log(2 * np.pi)


@dataclass(frozen=True)
class GaussianLinear:
    """``x = theta + noise * N(0, I)``, ``theta ~ N(0, I)``: a Gaussian posterior."""

    dim: int = 2
    noise: float = 0.3

    @property
    def prior(self) -> GaussianPrior:
        """The prior."""
        return GaussianPrior(self.dim)

    def simulate(self, theta: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Observations (n, dim) float32 of parameters (n, dim)."""
        gen = np.random.default_rng(rng)
        t = np.asarray(theta, dtype=np.float64)
        return (t + self.noise * gen.standard_normal(t.shape)).astype(np.float32)

    def log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log L(x | theta)`` (n,) for one observation ``x`` (dim,)."""
        d = np.asarray(theta, dtype=np.float64).reshape(-1, self.dim) - np.asarray(x, dtype=np.float64)
        norm = self.dim * (np.log(self.noise) + 0.5 * np.log(2 * np.pi))
        return -0.5 * (d * d).sum(1) / self.noise**2 - norm

    def posterior_mean_sd(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The exact posterior mean (dim,) and standard deviation (dim,) of one observation."""
        s2 = self.noise**2
        mean = np.asarray(x, dtype=np.float64) / (1.0 + s2)
        return mean, np.full(self.dim, np.sqrt(s2 / (1.0 + s2)))


@dataclass(frozen=True)
class Bimodal:
    """``x = (theta_0^2, theta_1) + noise * N(0, I)``, ``theta ~ N(0, I_2)``: modes at ``+-theta_0``."""

    noise: float = 0.1

    @property
    def prior(self) -> GaussianPrior:
        """The prior."""
        return GaussianPrior(2)

    def simulate(self, theta: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Observations (n, 2) float32."""
        gen = np.random.default_rng(rng)
        t = np.asarray(theta, dtype=np.float64)
        x = np.stack([t[:, 0] ** 2, t[:, 1]], axis=1)
        return (x + self.noise * gen.standard_normal(x.shape)).astype(np.float32)

    def log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log L(x | theta)`` (n,) for one observation ``x`` (2,)."""
        t = np.asarray(theta, dtype=np.float64)
        d = np.stack([t[:, 0] ** 2, t[:, 1]], axis=1) - np.asarray(x, dtype=np.float64)
        return -0.5 * (d * d).sum(1) / self.noise**2 - 2 * np.log(self.noise) - np.log(2 * np.pi)
