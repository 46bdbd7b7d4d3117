"""Human-readable verdicts from a neutrino report: which method wins each metric, by how much,
and whether the posterior is calibrated.

:func:`verdicts` reads the dict :func:`hepflow.neutrino.report.make_report` writes and returns one
line per metric, each saying whether lower is better, the numbers and the winner, e.g.::

    pz CRPS (lower is better): flow 48.7 GeV, quadratic 70.6 GeV: flow better by 31 %

and a line starting with ``CALIBRATION WARNING`` for every SBC p-value below
:data:`SBC_P_MIN` and, when the coverages together fail their joint test
(:data:`JOINT_P_MIN`), for every coverage outside two binomial standard deviations of its level.

Example:
    >>> compare("pz CRPS", {"flow": 48.7, "quadratic": 70.6}, unit="GeV")
    'pz CRPS (lower is better): flow 48.7 GeV, quadratic 70.6 GeV: flow better than quadratic by 31 %'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from hepflow.calibration.coverage import sampled_level

__all__ = [
    "JOINT_P_MIN",
    "LABELS",
    "SBC_P_MIN",
    "calibration_warnings",
    "compare",
    "report_verdicts",
    "verdicts",
]

#: SBC rank-uniformity p-values below this are flagged
SBC_P_MIN = 0.01
#: joint coverage-test p-values (:func:`hepflow.calibration.joint.coverage_test`) below this are flagged
JOINT_P_MIN = 0.05
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
    se: float | None = None,
) -> str:
    """One verdict line: ``metric`` of each method (lower is better) and how ``first`` (default:
    the first method) compares with ``against`` (default: the second).

    ``se`` is the standard error of ``log(first / against)`` (the paired bootstrap of
    :func:`hepflow.calibration.paired.paired_ratio`); with it, a ratio within two standard errors
    of 1 is called a tie and a winner's margin is given with its uncertainty.

    Example:
        >>> compare("m_W distance", {"flow": 9.0, "quad": 6.0}, unit="GeV")
        'm_W distance (lower is better): flow 9 GeV, quad 6 GeV: flow worse than quad by 50 %'
        >>> compare("pz CRPS", {"flow": 49.0, "quad": 50.0}, unit="GeV", se=0.04).split("GeV: ")[-1]
        'a tie: flow and quad agree within the statistical uncertainty (ratio 0.98 +- 0.04)'
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
    if se is not None and math.isfinite(se) and va > 0 and vb > 0:
        ratio = va / vb
        unc = f"ratio {ratio:.2f} +- {ratio * se:.2f}"
        if abs(math.log(ratio)) <= 2 * se:
            tail = f"a tie: {a} and {b} agree within the statistical uncertainty ({unc})"
        else:
            tail = f"{a} {'better' if rel < 0 else 'worse'} than {b} by {abs(rel) * 100:.0f} % ({unc})"
    elif abs(rel) < 0.005:
        tail = f"{a} and {b} equal within 0.5 %"
    else:
        tail = f"{a} {'better' if rel < 0 else 'worse'} than {b} by {abs(rel) * 100:.0f} %"
    return f"{metric} (lower is better): {shown}: {tail}"


def _coverage_target(level: float, samples: int | None) -> float:
    """The coverage a calibrated posterior has at ``level`` with ``samples`` draws per event
    (:func:`~hepflow.calibration.coverage.sampled_level`), ``level`` when the count is unknown."""
    return level if samples is None else sampled_level(level, int(samples))


def calibration_warnings(
    calibration: Mapping[str, Any], n_events: int, *, samples: int | None = None
) -> list[str]:
    """``CALIBRATION WARNING`` lines, notes on single coverages, or one ``calibration OK`` line.

    * SBC: a chi-square or KS p-value below :data:`SBC_P_MIN` is a warning.
    * Coverage at 68 % and 95 %: a coverage more than two binomial standard deviations
      sqrt(L (1 - L) / n) from the coverage L a calibrated posterior has at that level with
      ``samples`` draws per event (:func:`hepflow.calibration.coverage.sampled_level`; by
      default the draws the joint test records, the level itself for a report without one) is
      a warning when the joint test of all coverages (``calibration["coverage_test"]``,
      :func:`hepflow.calibration.joint.coverage_test`) has a p-value below :data:`JOINT_P_MIN`,
      or when the report has no joint test. With a joint
      p-value at or above it the line is a ``coverage note``: with several coverages on few
      events a calibrated posterior often has one of them outside two standard deviations, and
      the note says how often.

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
    joint = calibration.get("coverage_test")
    joint_fails = joint is None
    joint_text = ""
    if joint is not None:
        if samples is None:  # the joint test knows the number of draws it was judged with
            samples = joint.get("samples")
        # the p-value as printed (3 decimals) is the one compared with the threshold
        p = round(float(joint["p_value"]), 3)
        joint_fails = p < JOINT_P_MIN
        n_pseudo = int(joint.get("n_pseudo", 0))
        bound = joint.get("exceed") == 0
        share = joint.get("exceed", 0) / n_pseudo if n_pseudo else float(joint["p_value"])
        joint_text = (
            f"largest deviation {joint['statistic']:.1f} sd ({joint['worst']}); a calibrated posterior has a "
            f"largest deviation at least this large in {share:.1%} of {n_pseudo} pseudo-experiments with "
            f"these events, joint p-value {'<= ' if bound else ''}{p:.3f}"
        )
    for level, per_name in calibration.get("coverage", {}).items():
        nominal = float(level)
        lv = _coverage_target(nominal, samples)
        sd = float(np.sqrt(lv * (1 - lv) / max(n_events, 1)))
        expected = "" if samples is None else f", expected with {samples} posterior samples per event"
        for name, cov in per_name.items():
            if abs(cov - lv) <= 2 * sd:
                continue
            outside = (
                f"{name} coverage at {nominal:.0%} is {cov:.3f}, outside {lv:.3f} +- {2 * sd:.3f} "
                f"(2 binomial sd, {n_events} events{expected})"
            )
            if joint_fails:
                kind = "too narrow (under-covers)" if cov < lv else "too wide (over-covers)"
                lines.append(f"CALIBRATION WARNING: {outside}: the posterior is {kind}")
            else:
                lines.append(
                    f"coverage note: {outside}; the coverages together pass their joint test "
                    f"({joint_text} >= {JOINT_P_MIN}): no significant evidence of miscalibration"
                )
    if joint is not None and joint_fails:
        lines.append(
            "CALIBRATION WARNING: the coverages together fail their joint test "
            f"({joint_text} < {JOINT_P_MIN})"
        )
    if any(line.startswith("CALIBRATION WARNING") for line in lines):
        return lines
    if lines:
        ok = (
            f"calibration OK: SBC p-values >= {SBC_P_MIN}; the coverages together consistent with a "
            f"calibrated posterior ({n_events} events)"
        )
    else:
        tail = f"; joint coverage test: {joint_text}" if joint is not None else ""
        ok = (
            f"calibration OK: SBC p-values >= {SBC_P_MIN} and every coverage within 2 binomial sd "
            f"({n_events} events{tail})"
        )
    return [*lines, ok]


def verdicts(report: Mapping[str, Any]) -> list[str]:
    """The verdict lines of a neutrino report (see the module docstring)."""
    lines = []
    scores = report["scores"]
    # standard errors of log(flow / other), when the report has them (paired bootstrap)
    se = scores.get("se_log_ratio", {})
    for c in ("px", "py", "pz"):
        crps = scores["crps"][c]
        se_c = se.get("crps", {}).get(c, {})
        vals = {NAMES[m]: crps[m] for m in ("flow", "quad", "quad_mixture", "ff") if m in crps}
        lines.append(compare(f"{c} CRPS", vals, unit="GeV", se=se_c.get("quad")))
        if c == "pz" and NAMES["quad_mixture"] in vals:
            pair = {k: vals[k] for k in ("flow", NAMES["quad_mixture"])}
            lines.append(compare(f"{c} CRPS", pair, unit="GeV", se=se_c.get("quad_mixture")))
    es = scores["energy"]
    lines.append(
        compare(
            "energy score of (px, py, pz)",
            {NAMES[m]: es[m] for m in ("flow", "quad", "quad_mixture", "ff") if m in es},
            unit="GeV",
            se=se.get("energy", {}).get("quad"),
        )
    )
    res = report["resolution"]["all"]
    best = min(("flow_mode", "flow_peak", "flow_median"), key=lambda m: res[m]["pz"]["iqr_width"])
    se_res = report.get("paired_se", {}).get("pz_residual", {}).get(best, {})
    for stat, label in (("iqr_width", "core width (IQR/1.349)"), ("rms", "RMS")):
        lines.append(
            compare(
                f"pz residual {label}",
                {NAMES[best]: res[best]["pz"][stat], "quadratic": res["quad"]["pz"][stat]},
                unit="GeV",
                se=se_res.get(stat),
            )
        )
    down = report.get("downstream", {})
    for obs, label in (("m_w", "m(l nu)"), ("m_top", "m(l nu b)"), ("m_ttbar", "m(ttbar)")):
        if obs not in down.get("resolution", {}):
            continue
        r, w = down["resolution"][obs], down["wasserstein"][obs]
        se_o = down.get("se_log_ratio", {}).get(obs, {})
        note = " (the quadratic imposes m_W where its roots are real)" if obs == "m_w" else ""
        lines.append(
            compare(
                f"{label} resolution vs parton truth (IQR/1.349)",
                {"flow": r["flow"]["iqr_width"], "quadratic": r["quad"]["iqr_width"]},
                unit="GeV",
                se=se_o.get("iqr_width"),
            )
            + note
        )
        lines.append(
            compare(
                f"{label} spectrum, Wasserstein distance to the truth",
                {"flow": w["flow"], "quadratic": w["quad"]},
                unit="GeV",
                se=se_o.get("wasserstein"),
            )
        )
    if "unavailable" in down:
        lines.append(f"downstream observables: {down['unavailable']}")
    lines += calibration_warnings(
        report["calibration"], int(report["events"]), samples=report.get("samples_per_event")
    )
    return lines


# --- verdicts of any report.json, older ones included -----------------------------------------
# A report written before the distributional metrics has no ``verdicts``; report_verdicts derives
# lines from the point metrics and the calibration every report holds. A difference smaller than
# twice the statistical uncertainty of the ratio is called a tie.

LABELS = {
    "flow_mode": "cINN mode",
    "flow_peak": "cINN marginal peak",
    "flow_median": "cINN median",
    "quad": "quadratic",
    "ff": "regression",
}
FLOW = ("flow_median", "flow_peak", "flow_mode")
#: the relative standard error of a width estimate from n Gaussian residuals: IQR/1.349 has an
#: efficiency of 37 % against the standard deviation, the RMS 1/sqrt(2 n)
_REL_ERROR = {"iqr_width": lambda n: 1.0 / math.sqrt(2 * 0.37 * n), "rms": lambda n: 1.0 / math.sqrt(2 * n)}


def _compare(metric: str, what: str, a: tuple[str, float], b: tuple[str, float], n: int, unit: str) -> str:
    """``metric (what): winner value beats loser value by ratio``, or a tie within 2 sigma."""
    (la, va), (lb, vb) = sorted([a, b], key=lambda t: t[1])
    ratio = vb / va if va > 0 else math.inf
    rel = _REL_ERROR[what](n) * math.sqrt(2) if n > 0 else math.inf  # independent: conservative
    head = f"{metric} ({'IQR/1.349' if what == 'iqr_width' else 'RMS'}, lower is better): "
    if math.log(ratio) < 2 * rel:
        return head + (
            f"{la} {va:.1f} {unit}, {lb} {vb:.1f} {unit}: a tie (ratio {ratio:.2f}, within +-{2 * rel:.0%}, "
            f"twice the statistical uncertainty of a ratio from {n} events)"
        )
    return head + f"{la} {va:.1f} {unit} beats {lb} {vb:.1f} {unit} by {ratio:.2f}x"


def _best(res: Mapping[str, Any], comp: str, what: str) -> str | None:
    flows = [m for m in FLOW if comp in res.get(m, {})]
    return min(flows, key=lambda m: res[m][comp][what]) if flows else None


def report_verdicts(report: Mapping[str, Any]) -> list[str]:
    """Human-readable verdict lines of a ``report.json`` (its own ``verdicts`` when present)."""
    if report.get("verdicts"):
        return [str(line) for line in report["verdicts"]]
    res = report["resolution"]["all"]
    n = int(report.get("events", 0))
    lines = []
    for what, metric in (("iqr_width", "pz core width"), ("rms", "pz RMS")):
        best = _best(res, "pz", what)
        if best is None or "quad" not in res:
            continue
        flow = (LABELS[best], res[best]["pz"][what])
        lines.append(_compare(metric, what, flow, ("quadratic", res["quad"]["pz"][what]), n, "GeV"))
        if "ff" in res:
            reg = ("regression", res["ff"]["pz"][what])
            lines.append(
                _compare(f"{metric}, regression", what, reg, ("quadratic", res["quad"]["pz"][what]), n, "GeV")
            )
    if "quad" in res:
        best = min(
            (m for m in FLOW if "pz" in res.get(m, {})), key=lambda m: abs(res[m]["pz"]["bias"]), default=None
        )
        if best is not None:
            q, f = res["quad"]["pz"]["bias"], res[best]["pz"]["bias"]
            se = [res[m]["pz"]["rms"] / math.sqrt(n) if n else math.inf for m in ("quad", best)]
            winner = LABELS[best] if abs(f) < abs(q) else "quadratic"
            verdict = f"{winner} is closer" if abs(abs(f) - abs(q)) > 2 * max(se) else "a tie"
            lines.append(
                f"pz bias (mean residual, closer to 0 is better): "
                f"{LABELS[best]} {f:+.1f} +- {se[1]:.1f} GeV, "
                f"quadratic {q:+.1f} +- {se[0]:.1f} GeV: {verdict}"
            )
    for comp in ("px", "py"):
        best = _best(res, comp, "rms")
        if best is not None and comp in res.get("quad", {}):
            flow = (LABELS[best], res[best][comp]["rms"])
            lines.append(_compare(f"{comp}", "rms", flow, ("MET", res["quad"][comp]["rms"]), n, "GeV"))
    calib = report.get("calibration", {})
    k = report.get("samples_per_event")
    for level, comps in calib.get("coverage", {}).items():
        nominal = float(level)
        target = _coverage_target(nominal, k)
        sd = math.sqrt(target * (1 - target) / n) if n else math.inf
        parts = []
        for comp, c in comps.items():
            ok = "ok" if abs(c - target) <= max(0.03, 2 * sd) else "off"
            parts.append(f"{comp} {c:.3f} ({ok})")
        nearer = (
            f"{target:.3f}, the {nominal:.0%} level with {k} samples per event" if k else f"{nominal:.2f}"
        )
        lines.append(
            f"coverage of the cINN's {nominal:.0%} intervals (nearer {nearer} is better; ok: within "
            f"0.03 or 2 binomial sd = {2 * sd:.3f}): " + ", ".join(parts)
        )
    if pvalues := calib.get("sbc", {}).get("ks_pvalue"):
        flagged = [f"{k} {p:.2g}" for k, p in pvalues.items() if p < 0.01]
        lines.append(
            "SBC (rank uniformity, KS p-value; below 0.01 flags a miscalibrated posterior): "
            + ("flagged: " + ", ".join(flagged) if flagged else "no component flagged")
            + " ("
            + ", ".join(f"{k} {p:.2g}" for k, p in pvalues.items())
            + ")"
        )
    return lines
