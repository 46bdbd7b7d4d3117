"""An unfolded spectrum with its uncertainty components, and its comparison with a truth.

Both methods return an :class:`Unfolded`: the central particle-level counts per bin, the total
covariance, and the standard deviation of each uncertainty source (``data`` statistics,
``simulation`` statistics of the response, efficiency and fakes, and for the cINN the
``posterior`` spread and the ``ensemble`` spread). :func:`compare` gives the per-bin bias and
pull and the chi2 against a truth histogram.

Example:
    >>> u = Unfolded(np.array([10.0, 20.0]), np.diag([4.0, 4.0]), {"data": np.array([2.0, 2.0])})
    >>> c = compare(u, np.array([12.0, 20.0]))
    >>> c["pull"], c["chi2"], c["ndf"]
    ([-1.0, 0.0], 1.0, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepflow.errors import InputError

__all__ = ["Unfolded", "chi2", "compare"]


@dataclass(frozen=True)
class Unfolded:
    """Central values (n_bins,), total covariance (n_bins, n_bins) and per-source std devs."""

    central: np.ndarray
    covariance: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.central)
        if self.covariance.shape != (n, n):
            raise InputError(f"covariance has shape {self.covariance.shape}; expected ({n}, {n})")

    @property
    def uncertainty(self) -> np.ndarray:
        """Total standard deviation per bin."""
        return np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists)."""
        return {
            "central": self.central.tolist(),
            "uncertainty": self.uncertainty.tolist(),
            "covariance": self.covariance.tolist(),
            "components": {k: np.asarray(v).tolist() for k, v in self.components.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unfolded:
        """Inverse of :meth:`to_dict`."""
        return cls(
            central=np.asarray(data["central"], dtype=np.float64),
            covariance=np.asarray(data["covariance"], dtype=np.float64),
            components={k: np.asarray(v, dtype=np.float64) for k, v in data["components"].items()},
        )


def chi2(residual: np.ndarray, covariance: np.ndarray) -> float:
    """``r^T C^-1 r`` with the pseudo-inverse (bins without content and variance drop out)."""
    r = np.asarray(residual, dtype=np.float64)
    return float(r @ np.linalg.pinv(np.asarray(covariance, dtype=np.float64), hermitian=True) @ r)


def compare(unfolded: Unfolded, truth: np.ndarray, *, truth_var: np.ndarray | None = None) -> dict[str, Any]:
    """Per-bin bias (unfolded - truth), relative bias, relative uncertainty and pull; chi2 and ndf.

    The chi2 uses the unfolded covariance plus ``diag(truth_var)`` when given (an independent
    truth); with the truth of the very events that were unfolded leave it out: then the chi2 is
    expected below ndf, because data and truth share their statistical fluctuations.
    """
    t = np.asarray(truth, dtype=np.float64)
    if t.shape != unfolded.central.shape:
        raise InputError(f"truth has {t.shape} bins; the unfolded spectrum {unfolded.central.shape}")
    cov = unfolded.covariance + (np.diag(truth_var) if truth_var is not None else 0.0)
    sigma = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    bias = unfolded.central - t
    safe_t = np.where(t > 0, t, 1.0)
    safe_s = np.where(sigma > 0, sigma, 1.0)
    value = chi2(bias, cov)
    ndf = int(np.count_nonzero(np.diag(cov) > 0))
    return {
        "bias": bias.tolist(),
        "relative_bias": np.where(t > 0, bias / safe_t, np.nan).tolist(),
        "relative_uncertainty": np.where(t > 0, unfolded.uncertainty / safe_t, np.nan).tolist(),
        "pull": np.where(sigma > 0, bias / safe_s, np.nan).tolist(),
        "chi2": value,
        "ndf": ndf,
        "chi2_ndf": value / ndf if ndf else float("nan"),
    }
