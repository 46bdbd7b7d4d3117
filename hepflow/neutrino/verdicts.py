"""Human-readable verdicts from a neutrino report: which method wins each metric, by how much,
and whether the posterior is calibrated.

:func:`verdicts` reads the dict :func:`hepflow.neutrino.report.make_report` writes and returns one
line per metric, each saying whether lower is better, the numbers and the winner, e.g.::

    pz CRPS (lower is better): flow 48.7 GeV, quadratic 70.6 GeV: flow better by 31 %

and a line starting with ``CALIBRATION WARNING`` for every SBC p-value below
:data:`SBC_P_MIN` and every coverage outside two binomial standard deviations of its level.

Example:
    >>> compare("pz CRPS", {"flow": 48.7, "quadratic": 70.6}, unit="GeV")
    'pz CRPS (lower is better): flow 48.7 GeV, quadratic 70.6 GeV: flow better than quadratic by 31 %'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["SBC_P_MIN", "calibration_warnings", "compare", "verdicts"]

#: SBC rank-uniformity p-values below this are flagged
SBC_P_MIN = 0.01
#: names of the methods in the verdicts
NAMES = {
    "flow": "flow",
    "quad": "quadratic",
    "quad_mixture": "two-root mixture",
    "ff": "regression",
    "flow_peak": "flow marginal peak",
    "flow_median": "flow median",
    "flow_mode": "flow mode",
}


def compare(
    metric: str,
    values: Mapping[str, float],
    *,
    unit: str = "",
    first: str | None = None,
    against: str | None = None,
) -> str:
    """One verdict line: ``metric`` of each method (lower is better) and how ``first`` (default:
    the first method) compares with ``against`` (default: the second).

    Example:
        >>> compare("m_W distance", {"flow": 9.0, "quad": 6.0}, unit="GeV")
        'm_W distance (lower is better): flow 9 GeV, quad 6 GeV: flow worse than quad by 50 %'
    """
    names = list(values)
    a = first or names[0]
    b = against or names[1]
    u = f" {unit}" if unit else ""
    shown = ", ".join(f"{k} {v:.3g}{u}" for k, v in values.items())
    va, vb = float(values[a]), float(values[b])
    if not (np.isfinite(va) and np.isfinite(vb)) or vb == 0:
        return f"{metric} (lower is better): {shown}: no comparison (a value is missing or zero)"
    rel = (va - vb) / vb
    if abs(rel) < 0.005:
        tail = f"{a} and {b} equal within 0.5 %"
    else:
        tail = f"{a} {'better' if rel < 0 else 'worse'} than {b} by {abs(rel) * 100:.0f} %"
    return f"{metric} (lower is better): {shown}: {tail}"


def calibration_warnings(calibration: Mapping[str, Any], n_events: int) -> list[str]:
    """``CALIBRATION WARNING`` lines: SBC chi-square or KS p-values below :data:`SBC_P_MIN`,
    coverage at 68 % or 95 % more than two binomial standard deviations sqrt(L (1 - L) / n) from
    its level L; or one ``calibration OK`` line.

    Example:
        >>> calibration_warnings({"sbc": {"chi2_pvalue": {"pz": 0.0002}, "ks_pvalue": {"pz": 0.3}},
        ...                       "coverage": {"0.68": {"pz": 0.68}}}, 1000)[0][:59]
        'CALIBRATION WARNING: pz SBC ranks not uniform (chi2 p-value'
    """
    lines = []
    sbc = calibration.get("sbc", {})
    for name, p_chi2 in sbc.get("chi2_pvalue", {}).items():
        p_ks = sbc.get("ks_pvalue", {}).get(name, 1.0)
        if min(p_chi2, p_ks) < SBC_P_MIN:
            lines.append(
                f"CALIBRATION WARNING: {name} SBC ranks not uniform (chi2 p-value {p_chi2:.2g}, KS "
                f"p-value {p_ks:.2g}, threshold {SBC_P_MIN}): the posterior of {name} is miscalibrated"
            )
    for level, per_name in calibration.get("coverage", {}).items():
        lv = float(level)
        sd = float(np.sqrt(lv * (1 - lv) / max(n_events, 1)))
        for name, cov in per_name.items():
            if abs(cov - lv) > 2 * sd:
                kind = "too narrow (under-covers)" if cov < lv else "too wide (over-covers)"
                lines.append(
                    f"CALIBRATION WARNING: {name} coverage at {lv:.0%} is {cov:.3f}, outside "
                    f"{lv:.2f} +- {2 * sd:.3f} (2 binomial sd, {n_events} events): the posterior is {kind}"
                )
    return lines or [
        f"calibration OK: SBC p-values >= {SBC_P_MIN} and coverage within 2 binomial sd ({n_events} events)"
    ]


def verdicts(report: Mapping[str, Any]) -> list[str]:
    """The verdict lines of a neutrino report (see the module docstring)."""
    lines = []
    scores = report["scores"]
    for c in ("px", "py", "pz"):
        crps = scores["crps"][c]
        vals = {NAMES[m]: crps[m] for m in ("flow", "quad", "quad_mixture", "ff") if m in crps}
        lines.append(compare(f"{c} CRPS", vals, unit="GeV"))
        if c == "pz" and NAMES["quad_mixture"] in vals:
            pair = {k: vals[k] for k in ("flow", NAMES["quad_mixture"])}
            lines.append(compare(f"{c} CRPS", pair, unit="GeV"))
    es = scores["energy"]
    lines.append(
        compare(
            "energy score of (px, py, pz)",
            {NAMES[m]: es[m] for m in ("flow", "quad", "quad_mixture", "ff") if m in es},
            unit="GeV",
        )
    )
    res = report["resolution"]["all"]
    best = min(("flow_mode", "flow_peak", "flow_median"), key=lambda m: res[m]["pz"]["iqr_width"])
    for stat, label in (("iqr_width", "core width (IQR/1.349)"), ("rms", "RMS")):
        lines.append(
            compare(
                f"pz residual {label}",
                {NAMES[best]: res[best]["pz"][stat], "quadratic": res["quad"]["pz"][stat]},
                unit="GeV",
            )
        )
    down = report.get("downstream", {})
    for obs, label in (("m_w", "m(l nu)"), ("m_top", "m(l nu b)"), ("m_ttbar", "m(ttbar)")):
        if obs not in down.get("resolution", {}):
            continue
        r, w = down["resolution"][obs], down["wasserstein"][obs]
        note = " (the quadratic imposes m_W where its roots are real)" if obs == "m_w" else ""
        lines.append(
            compare(
                f"{label} resolution vs parton truth (IQR/1.349)",
                {"flow": r["flow"]["iqr_width"], "quadratic": r["quad"]["iqr_width"]},
                unit="GeV",
            )
            + note
        )
        lines.append(
            compare(
                f"{label} spectrum, Wasserstein distance to the truth",
                {"flow": w["flow"], "quadratic": w["quad"]},
                unit="GeV",
            )
        )
    if "unavailable" in down:
        lines.append(f"downstream observables: {down['unavailable']}")
    lines += calibration_warnings(report["calibration"], int(report["events"]))
    return lines
