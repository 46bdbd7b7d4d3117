"""An unfolded spectrum with its uncertainty components, and its comparison with a truth.

Both methods return an :class:`Unfolded`: the central particle-level counts per bin, the total
covariance, and the standard deviation of each uncertainty source (``data`` statistics,
``simulation`` statistics of the response, efficiency and fakes, and for the cINN the
``posterior`` spread and the ``ensemble`` spread). :func:`compare` gives the per-bin bias and
pull and the chi2 against a truth histogram with the full covariance (:func:`chi2_test`: the
inverse, or the pseudo-inverse when the covariance is singular, which the result says), and the
bin-to-bin correlation matrix (:func:`correlation`).

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
import scipy.stats

from hepflow.errors import InputError

__all__ = ["RCOND", "Unfolded", "chi2", "chi2_test", "compare", "correlation"]

#: eigenvalues of a covariance below this fraction of the largest are treated as zero (pseudo-inverse)
RCOND = 1e-12


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


def correlation(covariance: np.ndarray) -> np.ndarray:
    """The correlation matrix ``C[i, j] / sqrt(C[i, i] C[j, j])``; rows and columns of bins
    without variance are 0 (diagonal included).

    Example:
        >>> correlation(np.array([[4.0, -2.0], [-2.0, 4.0]])).tolist()
        [[1.0, -0.5], [-0.5, 1.0]]
    """
    c = np.asarray(covariance, dtype=np.float64)
    sigma = np.sqrt(np.clip(np.diag(c), 0.0, None))
    live = sigma > 0
    safe = np.where(live, sigma, 1.0)
    return np.where(np.outer(live, live), c / np.outer(safe, safe), 0.0)


def chi2_test(residual: np.ndarray, covariance: np.ndarray) -> dict[str, Any]:
    """``r^T C^-1 r`` with the full covariance, and how ``C`` was inverted.

    ``C`` is diagonalised; eigenvalues at most :data:`RCOND` times the largest (or negative ones,
    from toys) count as zero. Without such the inverse is used (``"inverse": "inverse"``), else
    the pseudo-inverse over the other directions (``"pseudo-inverse"``); ``ndf`` is the number
    of directions used (the rank).

    Example:
        >>> t = chi2_test(np.array([1.0, 1.0]), np.array([[1.0, 0.5], [0.5, 1.0]]))
        >>> round(t["chi2"], 6), t["ndf"], t["inverse"]  # 2 / (1 + 0.5)
        (1.333333, 2, 'inverse')
        >>> t = chi2_test(np.array([1.0, 1.0]), np.array([[1.0, 1.0], [1.0, 1.0]]))
        >>> round(t["chi2"], 6), t["ndf"], t["inverse"]  # only the direction (1, 1)/sqrt(2)
        (1.0, 1, 'pseudo-inverse')
    """
    r = np.asarray(residual, dtype=np.float64)
    c = np.asarray(covariance, dtype=np.float64)
    if c.shape != (len(r), len(r)):
        raise InputError(f"covariance has shape {c.shape}; the residual {r.shape}")
    values, vectors = np.linalg.eigh(0.5 * (c + c.T))
    top = float(values.max()) if len(values) else 0.0
    kept = values > RCOND * top if top > 0 else np.zeros(len(values), bool)
    projected = vectors[:, kept].T @ r
    value = float(np.sum(projected**2 / values[kept]))
    rank = int(kept.sum())
    return {"chi2": value, "ndf": rank, "inverse": "inverse" if rank == len(r) else "pseudo-inverse"}


def chi2(residual: np.ndarray, covariance: np.ndarray) -> float:
    """``r^T C^-1 r`` (the pseudo-inverse when ``C`` is singular; :func:`chi2_test`)."""
    return float(chi2_test(residual, covariance)["chi2"])


def compare(unfolded: Unfolded, truth: np.ndarray, *, truth_var: np.ndarray | None = None) -> dict[str, Any]:
    """Per-bin bias (unfolded - truth), relative bias, relative uncertainty and pull; chi2 and ndf.

    The chi2 uses the full unfolded covariance plus ``diag(truth_var)`` when given (an
    independent truth); with the truth of the very events that were unfolded leave it out: then
    the chi2 is expected below ndf, because data and truth share their statistical fluctuations.
    ``ndf`` is the rank of that covariance, ``inverse`` says whether it was inverted or
    pseudo-inverted (:func:`chi2_test`), ``p_value`` is the chi2 probability of a larger value,
    ``correlation`` the bin-to-bin correlation matrix of the unfolded result (without the truth).
    """
    t = np.asarray(truth, dtype=np.float64)
    if t.shape != unfolded.central.shape:
        raise InputError(f"truth has {t.shape} bins; the unfolded spectrum {unfolded.central.shape}")
    cov = unfolded.covariance + (np.diag(truth_var) if truth_var is not None else 0.0)
    sigma = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    bias = unfolded.central - t
    safe_t = np.where(t > 0, t, 1.0)
    safe_s = np.where(sigma > 0, sigma, 1.0)
    test = chi2_test(bias, cov)
    ndf = test["ndf"]
    return {
        "bias": bias.tolist(),
        "relative_bias": np.where(t > 0, bias / safe_t, np.nan).tolist(),
        "relative_uncertainty": np.where(t > 0, unfolded.uncertainty / safe_t, np.nan).tolist(),
        "pull": np.where(sigma > 0, bias / safe_s, np.nan).tolist(),
        "chi2": test["chi2"],
        "ndf": ndf,
        "chi2_ndf": test["chi2"] / ndf if ndf else float("nan"),
        "p_value": float(scipy.stats.chi2.sf(test["chi2"], ndf)) if ndf else float("nan"),
        "inverse": test["inverse"],
        "correlation": correlation(unfolded.covariance).tolist(),
    }
