"""A conjugate Gaussian problem whose posterior is known exactly.

theta ~ N(0, 1) per parameter, y = theta + N(0, s^2): the posterior is
N(y / (1 + s^2), s^2 / (1 + s^2)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

N_OBS = 2000
N_SAMPLES = 200
NOISE = np.array([0.5, 1.0])


@dataclass
class Problem:
    theta: np.ndarray  # (n, d)
    mean: np.ndarray  # (n, d) posterior means
    sd: np.ndarray  # (d,) posterior standard deviations
    rng: np.random.Generator

    def samples(self, *, width: float = 1.0, shift: float = 0.0) -> np.ndarray:
        """(n, k, d) draws of N(mean + shift sd, (width sd)^2)."""
        n, d = self.theta.shape
        z = self.rng.standard_normal((n, N_SAMPLES, d))
        return self.mean[:, None, :] + self.sd * (shift + width * z)

    def log_prob(self, x: np.ndarray, *, width: float = 1.0, shift: float = 0.0) -> np.ndarray:
        """Joint log-density of x ((n, d) or (n, k, d)) under the (mis-specified) posterior."""
        mean = self.mean if x.ndim == 2 else self.mean[:, None, :]
        z = (x - mean - shift * self.sd) / (width * self.sd)
        return np.sum(-0.5 * z**2 - np.log(width * self.sd * np.sqrt(2 * np.pi)), axis=-1)


@pytest.fixture
def problem() -> Problem:
    rng = np.random.default_rng(20240611)
    theta = rng.standard_normal((N_OBS, len(NOISE)))
    y = theta + NOISE * rng.standard_normal(theta.shape)
    mean = y / (1 + NOISE**2)
    sd = np.sqrt(NOISE**2 / (1 + NOISE**2))
    return Problem(theta=theta, mean=mean, sd=sd, rng=rng)
