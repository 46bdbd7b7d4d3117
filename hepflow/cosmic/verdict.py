"""One verdict on the cINN and the MCMC posterior of the same observation: agree, or which to use.

:func:`verdict` measures, per parameter, the cINN's mean shift in units of the MCMC posterior
sigma and its width ratio (:func:`hepflow.cosmic.compare.marginal_metrics`), and takes the
importance efficiency ESS / n of the cINN samples (weights likelihood x prior / cINN density,
``hepflow infer cosmic --importance``). They **agree** when every ``|mean shift|`` is at most
``[verdict] max_abs_shift`` (0.3), every width ratio within ``1 +- max_width_deviation`` (20 %)
and ESS / n is at least ``min_efficiency`` (0.2); then the cINN can be used (it is much faster).
Otherwise they **disagree** and the MCMC is the result, with what failed named: the cINN
misses the MCMC's mode (a shift above 2 sigma), is shifted, too wide or too narrow, or its
samples carry almost none of the likelihood (ESS 1 of 4000). See docs/cosmic_checks.md.

Example:
    >>> g = np.random.default_rng(0)
    >>> mcmc = g.normal(0.0, 1.0, (4000, 2))
    >>> v = verdict(g.normal(0.0, 1.0, (4000, 2)), mcmc, names=["a", "b"], efficiency=0.7, n=4000)
    >>> v.agree, v.line()[:35]
    (True, 'cINN and MCMC agree: use the cINN (')
    >>> v = verdict(g.normal([5.0, 3.0], 1.0, (4000, 2)), mcmc, names=["a", "b"], efficiency=2.5e-4, n=4000)
    >>> v.line()
    'cINN and MCMC disagree: use the MCMC (cINN misses the mode: a 5.0, b 3.0 MCMC sigma off; ESS 1 of 4000)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepflow.cosmic.compare import marginal_metrics
from hepflow.cosmic.config import PARAMETERS, VerdictConfig
from hepflow.errors import InputError

__all__ = ["MISSED_MODE", "Verdict", "verdict"]

#: a mean shift above this many MCMC sigma is called a missed mode, not a shift
MISSED_MODE = 2.0


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`verdict`.

    Attributes:
        agree: whether every criterion holds.
        reasons: what failed, in words (empty when they agree).
        metrics: per parameter ``mean_shift`` (MCMC sigma), ``width_ratio`` and the means and sds.
        ess, n: the importance effective sample size of the cINN samples and their number
            (``ess`` None when not measured: then the ESS rule is not applied and says so).
        thresholds: the ``[verdict]`` settings used.
        reference: what the cINN was compared with (``"MCMC"``, or ``"importance-weighted cINN"``
            when no MCMC was given: the cINN samples resampled by their weights).
        subject: what was compared (``"cINN"``, or ``"importance-weighted cINN"``: its samples
            resampled by their weights, against the MCMC).
    """

    agree: bool
    reasons: tuple[str, ...]
    metrics: dict[str, dict[str, float]]
    ess: float | None
    n: int
    thresholds: VerdictConfig = field(default_factory=VerdictConfig)
    reference: str = "MCMC"
    subject: str = "cINN"

    @property
    def efficiency(self) -> float | None:
        return None if self.ess is None else self.ess / self.n

    @property
    def use(self) -> str:
        """Which result to use: ``"cINN"`` or ``"MCMC"``."""
        return "cINN" if self.agree else "MCMC"

    @property
    def max_abs_shift(self) -> tuple[str, float]:
        name = max(self.metrics, key=lambda k: _size(self.metrics[k]["mean_shift"]))
        return name, abs(self.metrics[name]["mean_shift"])

    @property
    def max_width_deviation(self) -> tuple[str, float]:
        name = max(self.metrics, key=lambda k: _size(self.metrics[k]["width_ratio"] - 1.0))
        return name, abs(self.metrics[name]["width_ratio"] - 1.0)

    def numbers(self) -> str:
        """The measured numbers in one phrase: largest shift, largest width deviation, ESS."""
        (s_name, s), (w_name, w) = self.max_abs_shift, self.max_width_deviation
        ess = (
            "ESS not measured (no importance weights)"
            if self.ess is None
            else f"ESS {self.ess:.0f} of {self.n} ({self.efficiency:.2g})"
        )
        return (
            f"max |shift| {s:.2f} MCMC sigma ({s_name}), "
            f"max width deviation {100 * w:.0f} % ({w_name}), {ess}"
        )

    def line(self) -> str:
        """``cINN and MCMC agree: use the cINN (...)`` or ``cINN and MCMC disagree: use the MCMC (...)``."""
        if self.agree:
            return f"{self.subject} and {self.reference} agree: use the {self.subject} ({self.numbers()})"
        return f"{self.subject} and {self.reference} disagree: use the MCMC ({'; '.join(self.reasons)})"

    def banner(self) -> str | None:
        """The corner-plot banner when they disagree, else None."""
        if self.agree:
            return None
        return f"{self.subject} and {self.reference} disagree: {'; '.join(self.reasons)}. Use the MCMC."

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "agree" if self.agree else "disagree",
            "subject": self.subject,
            "reference": self.reference,
            "use": self.use,
            "line": self.line(),
            "reasons": list(self.reasons),
            "max_abs_shift": dict(zip(("parameter", "value"), self.max_abs_shift, strict=True)),
            "max_width_deviation": dict(zip(("parameter", "value"), self.max_width_deviation, strict=True)),
            "ess": self.ess,
            "n": self.n,
            "efficiency": self.efficiency,
            "thresholds": {
                "max_abs_shift": self.thresholds.max_abs_shift,
                "max_width_deviation": self.thresholds.max_width_deviation,
                "min_efficiency": self.thresholds.min_efficiency,
            },
            "per_parameter": self.metrics,
        }


def _size(x: float) -> float:
    """``|x|``, infinite for NaN (an unmeasurable shift or width counts as the largest)."""
    return abs(x) if np.isfinite(x) else float("inf")


def _listing(items: list[tuple[str, float]], unit: str, *, most: int = 3) -> str:
    """``"gamma 11.3, lg_rcut 2.9 MCMC sigma"``: the ``most`` largest (by size), then how many more."""
    ranked = sorted(items, key=lambda kv: -_size(kv[1] - 1.0 if unit == "" else kv[1]))
    text = ", ".join(f"{name} {value:.{1 if abs(value) >= 1 else 2}f}" for name, value in ranked[:most])
    more = f" and {len(ranked) - most} more" if len(ranked) > most else ""
    return f"{text}{unit}{more}"


def verdict(
    cinn: np.ndarray,
    mcmc: np.ndarray,
    *,
    names: Sequence[str] = PARAMETERS,
    ess: float | None = None,
    efficiency: float | None = None,
    n: int | None = None,
    thresholds: VerdictConfig | None = None,
    reference: str = "MCMC",
    subject: str = "cINN",
) -> Verdict:
    """Do the cINN samples (n, d) and the MCMC samples (m, d) of one observation agree?

    Args:
        cinn: the cINN's posterior samples (unweighted, as drawn).
        mcmc: the MCMC's samples of the same observation and likelihood.
        names: the parameter names of the columns.
        ess: importance effective sample size of the cINN samples (``ImportanceWeights.ess``), or
            ``efficiency`` (ESS / n) instead; with neither, the ESS rule is not applied.
        n: the number of samples the ESS refers to (default: the rows of ``cinn``).
        thresholds: the ``[verdict]`` settings (default 0.3 sigma, 20 %, 0.2).
        reference: what ``mcmc`` is, for the messages (``"MCMC"`` by default).
        subject: what ``cinn`` is, for the messages (``"cINN"`` by default).

    Returns a :class:`Verdict` (module docstring for the rules).
    """
    t = thresholds if thresholds is not None else VerdictConfig()
    size = int(np.asarray(cinn).shape[0]) if n is None else int(n)
    if size < 1:
        raise InputError(f"verdict: n must be >= 1, got {size}")
    if ess is not None and efficiency is not None:
        raise InputError("verdict: pass ess or efficiency, not both")
    value = ess if ess is not None else (None if efficiency is None else efficiency * size)
    if value is not None and not (np.isfinite(value) and value > 0):
        raise InputError(f"verdict: the ESS must be a positive number, got {value}")
    metrics = marginal_metrics(cinn, mcmc, names)
    reasons: list[str] = []
    flat = [k for k, m in metrics.items() if not m["mcmc_std"] > 0]
    if flat:  # no sigma to measure shifts and widths in (e.g. resampled draws with an ESS of 1)
        reasons.append(f"{reference} samples have no spread in {', '.join(flat)}")
    metrics_ok = {k: m for k, m in metrics.items() if k not in flat}
    shifts = [(k, m["mean_shift"]) for k, m in metrics_ok.items()]
    missed = [(k, abs(s)) for k, s in shifts if not abs(s) <= MISSED_MODE]
    shifted = [(k, s) for k, s in shifts if t.max_abs_shift < abs(s) <= MISSED_MODE]
    if missed:
        reasons.append(f"{subject} misses the mode: {_listing(missed, ' MCMC sigma off')}")
    if shifted:
        reasons.append(f"{subject} means shifted: {_listing(shifted, ' MCMC sigma')}")
    widths = [(k, m["width_ratio"]) for k, m in metrics_ok.items()]
    narrow = [(k, r) for k, r in widths if r < 1.0 - t.max_width_deviation]
    wide = [(k, r) for k, r in widths if not r <= 1.0 + t.max_width_deviation and not r < 1.0]
    if narrow:
        reasons.append(f"{subject} too narrow: width ratio {_listing(narrow, '')}")
    if wide:
        reasons.append(f"{subject} too wide: width ratio {_listing(wide, '')}")
    if value is not None and value / size < t.min_efficiency:
        reasons.append(f"ESS {value:.0f} of {size}")
    return Verdict(
        agree=not reasons,
        reasons=tuple(reasons),
        metrics=metrics,
        ess=None if value is None else float(value),
        n=size,
        thresholds=t,
        reference=reference,
        subject=subject,
    )
