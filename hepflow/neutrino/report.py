"""Comparison report of the neutrino methods: resolution, W mass, calibration, event displays.

Reads the inference outputs (parquet chunks with truth; events without a truth neutrino, e.g.
W -> tau nu in full simulation, are left out and counted as ``events_without_truth``), and writes
``report.json`` and plots:
for px, py, pz and eta the bias, RMS and IQR width (IQR / 1.349, the Gaussian-equivalent sigma)
of (reconstructed - true) for the flow mode (highest-density joint sample), the flow peak
(mode of each marginal), the flow median, the quadratic solution (px, py
from MET) and the regression, overall and split by real/complex quadratic solutions; the
complex fraction; how often each method picks the quadratic root nearer the truth and the width
that picking the right root would give (:func:`root_choice`); the reconstructed W mass per
method; SBC ranks and coverage of the flow posterior; and posterior displays of multimodal
events next to the two quadratic roots.

Distribution-level metrics (:func:`posterior_scores`): the CRPS of px, py and pz and the energy
score of (px, py, pz) (:mod:`hepflow.calibration.scores`, lower is better) of the flow's posterior
samples, of the quadratic solution as a point (MET and the chosen root), of the quadratic's
two roots as a 50/50 mixture (complex solutions: the single real-part root) and of the
regression (a point). Downstream observables (:func:`downstream_metrics`, defined in
:mod:`hepflow.neutrino.downstream`): m(l nu), m(l nu b) and m(ttbar) from the flow samples, the
quadratic solution and the true neutrino, their resolution against the parton-level truth and the
Wasserstein distance of each spectrum to the truth spectrum. ``"verdicts"``
(:func:`hepflow.neutrino.verdicts.verdicts`) says in words which method wins each metric and
flags calibration problems; ``hepflow report neutrino`` prints them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.calibration.paired import paired_ratio
from hepflow.calibration.scores import crps_ensemble, energy_score
from hepflow.errors import InputError
from hepflow.neutrino.downstream import (
    OBSERVABLES,
    TRUTH_COLUMNS,
    jets_from_columns,
    lepton_from_columns,
    observables,
)
from hepflow.neutrino.quadratic import M_W, lepton_mass, reconstruct_w_mass
from hepflow.neutrino.verdicts import LABELS, verdicts
from hepflow.outputs import read_parquet_dir, write_json
from hepflow.plotting import caption, figure, hist_with_flow, save_figure, style

COMPONENTS = ("px", "py", "pz", "eta")
METHODS = ("flow_mode", "flow_peak", "flow_median", "quad", "ff")


def _eta(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return np.arcsinh(pz / np.maximum(np.hypot(px, py), 1e-9))


def estimates(cols: ak.Array) -> dict[str, dict[str, np.ndarray]]:
    """Per method, the (px, py, pz, eta) estimate of every event."""
    get = {k: ak.to_numpy(cols[k]).astype(np.float64) for k in cols.fields if cols[k].ndim == 1}
    out: dict[str, dict[str, np.ndarray]] = {}
    for stat in ("mode", "peak", "median"):
        px, py, pz = (get[f"flow_{c}_{stat}"] for c in ("px", "py", "pz"))
        out[f"flow_{stat}"] = {"px": px, "py": py, "pz": pz, "eta": _eta(px, py, pz)}
    px, py, pz = get["met_px"], get["met_py"], get["quad_pz"]
    out["quad"] = {"px": px, "py": py, "pz": pz, "eta": _eta(px, py, pz)}
    px, py, pz = get["ff_px"], get["ff_py"], get["ff_pz"]
    out["ff"] = {"px": px, "py": py, "pz": pz, "eta": _eta(px, py, pz)}
    return out


def resolution(residual: np.ndarray) -> dict[str, float]:
    """Bias, RMS and IQR-based width of residuals."""
    if residual.size == 0:
        return {"bias": float("nan"), "rms": float("nan"), "iqr_width": float("nan"), "n": 0}
    q25, q50, q75 = np.percentile(residual, [25, 50, 75])
    return {
        "bias": float(np.mean(residual)),
        "median_bias": float(q50),
        "rms": float(np.sqrt(np.mean(residual**2))),
        "iqr_width": float((q75 - q25) / 1.349),
        "n": int(residual.size),
    }


def root_choice(
    pz_samples: np.ndarray,
    quad: np.ndarray,
    quad_alt: np.ndarray,
    is_complex: np.ndarray,
    true_pz: np.ndarray,
    flow_peak: np.ndarray,
) -> dict[str, Any]:
    """How well each method picks between the two quadratic roots, and what that is worth.

    For events with real roots the flow's choice is the root nearer to the majority of its pz
    samples (its posterior probability of that root's side is above one half); the quadratic
    takes the smaller ``|pz|``; the *oracle* takes the root nearer the truth (it uses the truth:
    a bound, not a method). ``pz_width_ratio_to_quadratic`` gives the IQR width, relative to the
    quadratic's, of the estimate that returns the chosen root (the flow peak, or for the oracle
    the quadratic, where the roots are complex): the oracle's is the best any estimator that
    returns one of the two roots can do.

    Example:
        >>> import numpy as np
        >>> s = np.array([[9.0, 11.0, -1.0], [-9.0, -10.0, 10.0]])  # K = 3 pz samples per event
        >>> r = root_choice(s, np.array([0.0, 1.0]), np.array([10.0, -10.0]), np.array([False, False]),
        ...                 np.array([10.0, -10.0]), np.array([10.0, -9.0]))
        >>> r["correct_root_fraction"]
        {'quad': 0.0, 'flow': 1.0, 'oracle': 1.0}
    """
    real = ~np.asarray(is_complex, bool)
    nearer_first = np.abs(pz_samples - quad[:, None]) <= np.abs(pz_samples - quad_alt[:, None])
    flow_pick = np.where(nearer_first.mean(1) >= 0.5, quad, quad_alt)
    oracle_pick = np.where(np.abs(quad - true_pz) <= np.abs(quad_alt - true_pz), quad, quad_alt)

    def correct(pick: np.ndarray) -> float:
        ok = np.abs(pick - true_pz) <= np.abs(np.where(pick == quad, quad_alt, quad) - true_pz)
        return float(ok[real].mean()) if real.any() else float("nan")

    quad_w = resolution(quad - true_pz)["iqr_width"]
    flow_root = np.where(real, flow_pick, flow_peak)
    oracle_root = np.where(real, oracle_pick, quad)
    return {
        "events_with_real_roots": int(real.sum()),
        "correct_root_fraction": {
            "quad": correct(quad),
            "flow": correct(flow_pick),
            "oracle": correct(oracle_pick),
        },
        "pz_width_ratio_to_quadratic": {
            "flow_root": resolution(flow_root - true_pz)["iqr_width"] / quad_w,
            "oracle_root": resolution(oracle_root - true_pz)["iqr_width"] / quad_w,
        },
    }


def posterior_scores(
    true: np.ndarray,
    samples: np.ndarray,
    quad: np.ndarray,
    quad_alt_pz: np.ndarray,
    regression: np.ndarray,
) -> dict[str, Any]:
    """Mean CRPS per component and mean energy score of each method, in GeV (lower is better),
    with the paired-bootstrap standard error of log(flow / method) for each other method.

    Args:
        true: (n, 3) true neutrino px, py, pz.
        samples: (n, K, 3) flow posterior samples (fair estimator).
        quad: (n, 3) the quadratic solution: MET and the chosen root (a point).
        quad_alt_pz: (n,) the other root (the real part again for complex solutions).
        regression: (n, 3) the regression's estimate (a point).

    Returns:
        ``{"crps": {"px": {"flow", "quad", "quad_mixture", "ff"}, "py": ..., "pz": ...},
        "energy": {method: score}, "se_log_ratio": {"crps": {c: {method: se}}, "energy": ...}}``
        (:func:`hepflow.calibration.paired.paired_ratio`); ``quad_mixture`` gives each root probability 1/2 (a
        complex solution's single real part is a point: both roots are equal).

    Example:
        >>> import numpy as np
        >>> t = np.zeros((2, 3))
        >>> s = posterior_scores(t, np.zeros((2, 4, 3)), t + [0, 0, 10], np.array([-10.0, 10.0]), t)
        >>> s["crps"]["pz"]["quad"], s["crps"]["pz"]["quad_mixture"], s["energy"]["flow"]
        (10.0, 7.5, 0.0)
    """
    alt = quad.copy()
    alt[:, 2] = quad_alt_pz
    mix = np.stack([quad, alt], axis=1)  # (n, 2, 3)
    half = np.full(mix.shape[:2], 0.5)
    per_event: dict[str, dict[str, np.ndarray]] = {}
    for j, c in enumerate(("px", "py", "pz")):
        per_event[c] = {
            "flow": crps_ensemble(samples[..., j], true[:, j]),
            "quad": np.abs(quad[:, j] - true[:, j]),
            "quad_mixture": crps_ensemble(mix[..., j], true[:, j], weights=half),
            "ff": np.abs(regression[:, j] - true[:, j]),
        }
    per_event["energy"] = {
        "flow": energy_score(samples, true),
        "quad": np.linalg.norm(quad - true, axis=1),
        "quad_mixture": energy_score(mix, true, weights=half),
        "ff": np.linalg.norm(regression - true, axis=1),
    }
    means = {k: {m: float(v.mean()) for m, v in d.items()} for k, d in per_event.items()}
    se = {k: _paired_se(d) for k, d in per_event.items()}
    return {
        "crps": {c: means[c] for c in ("px", "py", "pz")},
        "energy": means["energy"],
        "se_log_ratio": {"crps": {c: se[c] for c in ("px", "py", "pz")}, "energy": se["energy"]},
    }


def _paired_se(per_event: dict[str, np.ndarray]) -> dict[str, float]:
    """Paired-bootstrap standard error of log(mean flow score / mean score of each other method)."""
    flow = per_event["flow"]
    return {
        m: paired_ratio(lambda i, v=v: (flow[i].mean(), v[i].mean()), len(flow)).se
        for m, v in per_event.items()
        if m != "flow"
    }


def downstream_metrics(
    cols: ak.Array, samples: np.ndarray, quad: np.ndarray, true: np.ndarray
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """m(l nu), m(l nu b), m(ttbar) per method (:mod:`hepflow.neutrino.downstream`) and how well
    each reproduces the parton-level truth.

    Methods: ``flow`` (every posterior sample; its per-event estimate is the posterior median of
    the observable), ``quad`` (the quadratic solution) and ``nu_true`` (the true neutrino: the
    limit set by the lepton and jets). Per observable: ``resolution`` (of estimate - truth:
    :func:`resolution`), ``crps`` (of the flow's observable posterior; |estimate - truth| for
    points), ``wasserstein`` (:func:`scipy.stats.wasserstein_distance` of the spectrum, for the
    flow all samples with weight 1/K, to the truth spectrum) and the spectra's ``median``.
    Without the truth columns (inference outputs written before they existed, or data) the dict
    says why under ``"unavailable"``. Also returns the values, for the plots.
    """
    from scipy.stats import wasserstein_distance

    lep, jets = lepton_from_columns(cols), jets_from_columns(cols)
    values = {
        "flow": observables(lep, samples, jets),
        "quad": observables(lep, quad, jets),
        "nu_true": observables(lep, true, jets),
    }
    out: dict[str, Any] = {
        "definitions": {
            "m_w": "m(lepton + nu)",
            "m_top": "m(lepton + nu + b): b is the b-tagged jet (any jet if none is tagged) giving m closest "
            "to 172.5 GeV, chosen per posterior sample for the flow",
            "m_ttbar": "m(lepton + nu + four leading jets)",
        },
        "median": {o: {m: float(np.median(v[o])) for m, v in values.items()} for o in OBSERVABLES},
    }
    missing = [c for c in TRUTH_COLUMNS.values() if c not in cols.fields]
    if missing:
        out["unavailable"] = (
            f"the inference outputs lack the parton-truth columns {missing} (written by hepflow's "
            "processor since the downstream metrics exist; reprocess simulated events to get them)"
        )
        return out, values
    res: dict[str, Any] = {}
    crps: dict[str, Any] = {}
    wd: dict[str, Any] = {}
    se: dict[str, dict[str, float]] = {}
    truth_values: dict[str, np.ndarray] = {}
    for o in OBSERVABLES:
        t = ak.to_numpy(ak.fill_none(cols[TRUTH_COLUMNS[o]], np.nan)).astype(np.float64)
        ok = np.isfinite(t)
        truth_values[o] = t[ok]
        flow = values["flow"][o][ok]
        point = {
            "flow": np.median(flow, axis=1),
            "quad": values["quad"][o][ok],
            "nu_true": values["nu_true"][o][ok],
        }
        res[o] = {m: resolution(v - t[ok]) for m, v in point.items()}
        crps[o] = {
            "flow": float(crps_ensemble(flow, t[ok]).mean()) if ok.any() else float("nan"),
            "quad": float(np.abs(point["quad"] - t[ok]).mean()) if ok.any() else float("nan"),
            "nu_true": float(np.abs(point["nu_true"] - t[ok]).mean()) if ok.any() else float("nan"),
        }
        wd[o] = (
            {
                "flow": float(wasserstein_distance(flow.ravel(), t[ok])),
                "quad": float(wasserstein_distance(point["quad"], t[ok])),
                "nu_true": float(wasserstein_distance(point["nu_true"], t[ok])),
            }
            if ok.any()
            else {m: float("nan") for m in point}
        )
        se[o] = _downstream_se(flow, point["quad"], t[ok]) if ok.sum() >= 2 else {}
        out["median"][o]["truth"] = float(np.median(t[ok])) if ok.any() else float("nan")
    out.update(
        resolution=res,
        crps=crps,
        wasserstein=wd,
        se_log_ratio=se,
        events_with_truth={o: int(v.size) for o, v in truth_values.items()},
    )
    values["truth"] = truth_values
    return out, values


def _downstream_se(flow: np.ndarray, quad: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Paired-bootstrap standard errors of log(flow / quadratic) for the resolution (IQR/1.349 of
    the flow's posterior median - truth) and the Wasserstein distance of the spectrum to the truth
    (the flow's spectrum thinned to 16 samples per event inside the bootstrap, for speed)."""
    from scipy.stats import wasserstein_distance

    med = np.median(flow, axis=1)
    thin = flow[:, :: max(1, flow.shape[1] // 16)]
    return {
        "iqr_width": paired_ratio(
            lambda i: (
                resolution(med[i] - truth[i])["iqr_width"],
                resolution(quad[i] - truth[i])["iqr_width"],
            ),
            len(truth),
        ).se,
        "wasserstein": paired_ratio(
            lambda i: (
                wasserstein_distance(thin[i].ravel(), truth[i]),
                wasserstein_distance(quad[i], truth[i]),
            ),
            len(truth),
        ).se,
    }


def _residual_se(
    est: dict[str, dict[str, np.ndarray]], true: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Paired-bootstrap standard errors of log(flow point / quadratic) of the pz residual's
    IQR/1.349 and RMS, for each flow point estimate."""
    t, q = true["pz"], est["quad"]["pz"]
    out = {}
    for m in ("flow_mode", "flow_peak", "flow_median"):
        f = est[m]["pz"]
        out[m] = {
            stat: paired_ratio(
                lambda i, s=stat, f=f: (resolution(f[i] - t[i])[s], resolution(q[i] - t[i])[s]), len(t)
            ).se
            for stat in ("iqr_width", "rms")
        }
    return out


def make_report(
    inference_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], *, n_displays: int = 6
) -> dict[str, Any]:
    """Compute the comparison and write ``report.json`` and the plots into ``output_dir``."""
    from hepflow.calibration import calibration_report

    cols = read_parquet_dir(inference_dir)
    needed = {"nu_px_true", "flow_pz_mode", "flow_pz_peak", "quad_pz", "ff_pz"}
    if missing := needed - set(cols.fields):
        raise InputError(
            f"{inference_dir}: inference outputs lack columns {sorted(missing)} (truth or methods)"
        )
    has_truth = ~ak.to_numpy(ak.is_none(cols.nu_px_true))
    if not has_truth.any():
        raise InputError(
            f"{inference_dir}: none of its {len(cols)} events has a truth neutrino (W -> e nu or mu nu "
            "in GenPart); the report needs simulated semileptonic events"
        )
    cols = cols[has_truth]
    true = {c: ak.to_numpy(ak.fill_none(cols[f"nu_{c}_true"], np.nan)).astype(np.float64) for c in COMPONENTS}
    est = estimates(cols)
    is_complex = ak.to_numpy(cols.quad_is_complex).astype(bool)
    splits = {"all": np.ones(len(cols), bool), "quad_real": ~is_complex, "quad_complex": is_complex}

    metrics: dict[str, Any] = {}
    for split, sel in splits.items():
        metrics[split] = {
            m: {c: resolution(est[m][c][sel] - true[c][sel]) for c in COMPONENTS} for m in METHODS
        }
    quad_w = metrics["all"]["quad"]["pz"]["iqr_width"]
    mw = {m: _w_mass(cols, est[m]) for m in METHODS}
    samples = np.stack([ak.to_numpy(cols[f"flow_{c}"]) for c in ("px", "py", "pz")], axis=-1)
    theta_true = np.stack([true[c] for c in ("px", "py", "pz")], axis=1)
    out = Path(output_dir)
    calib = calibration_report(theta_true, samples, ["px", "py", "pz"], plot_dir=out)
    quad = np.stack([est["quad"][c] for c in ("px", "py", "pz")], axis=1)
    quad_alt = ak.to_numpy(cols.quad_pz_alt).astype(np.float64)
    regression = np.stack([est["ff"][c] for c in ("px", "py", "pz")], axis=1)
    down, down_values = downstream_metrics(cols, samples.astype(np.float64), quad, theta_true)
    report = {
        "events": len(cols),
        "events_without_truth": int((~has_truth).sum()),
        "samples_per_event": int(samples.shape[1]),
        "quad_complex_fraction": float(is_complex.mean()),
        "resolution": metrics,
        "pz_width_ratio_to_quadratic": {
            m: metrics["all"][m]["pz"]["iqr_width"] / quad_w
            for m in ("flow_mode", "flow_peak", "flow_median", "ff")
        },
        "root_choice": root_choice(
            samples[..., 2],
            est["quad"]["pz"],
            quad_alt,
            is_complex,
            true["pz"],
            est["flow_peak"]["pz"],
        ),
        "w_mass": {
            m: {
                "median": float(np.median(v)),
                "iqr_width": resolution(v - M_W)["iqr_width"],
                "within_10_gev": float(np.mean(np.abs(v - M_W) < 10)),
            }
            for m, v in mw.items()
        },
        "paired_se": {"pz_residual": _residual_se(est, true)},
        "scores": posterior_scores(theta_true, samples.astype(np.float64), quad, quad_alt, regression),
        "downstream": down,
        "calibration": {k: calib[k] for k in ("sbc", "coverage", "coverage_test", "tarp")},
        "plots": list(calib.get("plots", {}).values()),  # the paths of the SBC, coverage and TARP plots
    }
    report["plots"] += [str(p) for p in _plot_residuals(true, est, out)]
    report["plots"].append(str(_plot_w_mass(mw, out)))
    report["plots"] += [str(p) for p in _plot_displays(cols, true, out, n_displays)]
    report["plots"].append(str(_plot_downstream(down_values, out)))
    report["verdicts"] = verdicts(report)
    write_json(out / "report.json", report)
    return report


def _w_mass(cols: ak.Array, e: dict[str, np.ndarray]) -> np.ndarray:
    lep = [ak.to_numpy(cols[f"lep_{c}"]).astype(np.float64) for c in ("px", "py", "pz", "e")]
    m = lepton_mass(ak.to_numpy(cols.lep_flavor))
    return np.asarray(reconstruct_w_mass(*lep, e["px"], e["py"], e["pz"], lep_mass=m), np.float64)


def _styled(plot: Any) -> Any:
    """Build and save the figure of ``plot`` in hepflow's style (:func:`hepflow.plotting.style`)."""
    import functools

    @functools.wraps(plot)
    def run(*args: Any, **kwargs: Any) -> Any:
        with style():
            return plot(*args, **kwargs)

    return run


_UNITS = {"px": "GeV", "py": "GeV", "pz": "GeV", "eta": ""}
_SYMBOL = {"px": r"p_x", "py": r"p_y", "pz": r"p_z", "eta": r"\eta"}


@_styled
def _plot_residuals(true: dict[str, np.ndarray], est: dict[str, Any], out: Path) -> list[Path]:
    paths = []
    ranges = {"px": 100.0, "py": 100.0, "pz": 250.0, "eta": 3.0}
    for c in COMPONENTS:
        fig, ax = figure()
        bins = np.linspace(-ranges[c], ranges[c], 51)
        for m in METHODS:
            hist_with_flow(ax, est[m][c] - true[c], bins, label=LABELS[m])
        unit = f" [{_UNITS[c]}]" if _UNITS[c] else ""
        with style():
            ax.set_xlabel(rf"$\nu$ ${_SYMBOL[c]}$: reconstructed $-$ true{unit}")
            ax.set_ylabel(f"events / {bins[1] - bins[0]:.3g} {_UNITS[c]}".rstrip())
            ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
            ax.legend(fontsize="x-small", loc="upper right")
        caption(
            fig,
            f"Residual of the neutrino {c} per method ({len(true[c])} events); entries outside the "
            "axis range are counted in the legend.",
        )
        paths.append(save_figure(fig, out / f"residual_{c}.png", dpi=110))
    return paths


@_styled
def _plot_w_mass(mw: dict[str, np.ndarray], out: Path) -> Path:
    fig, ax = figure()
    bins = np.linspace(0, 200, 101)
    for m in METHODS:
        if m != "flow_median":
            hist_with_flow(ax, mw[m], bins, label=LABELS[m])
    with style():
        ax.axvline(M_W, color="0.4", linestyle="--", label=r"$m_W$")
        ax.set_xlabel(r"reconstructed $m(\ell\nu)$ [GeV]")
        ax.set_ylabel("events / 2 GeV")
        ax.set_yscale("log")  # the quadratic's peak at m_W next to the others' broad spectra
        ax.set_ylim(0.5, ax.get_ylim()[1] * 30)
        ax.legend(fontsize="x-small", loc="upper right")
    caption(
        fig,
        "Leptonic W mass from the lepton and each method's neutrino. The quadratic solution gives "
        "m_W exactly when its roots are real (the peak); logarithmic scale; entries outside "
        "0-200 GeV are counted in the legend, not piled into the edge bins.",
    )
    return save_figure(fig, out / "w_mass.png", dpi=110)


@_styled
def _plot_displays(cols: ak.Array, true: dict[str, np.ndarray], out: Path, n: int) -> list[Path]:
    """Posterior pz of the events whose samples are most bimodal, with both quadratic roots."""
    pz = ak.to_numpy(cols.flow_pz)
    # bimodality coefficient-like score: spread of samples relative to the width of each half
    med = np.median(pz, axis=1, keepdims=True)
    lower = np.where(pz <= med, pz, np.nan)
    upper = np.where(pz > med, pz, np.nan)
    gap = np.nanmedian(upper, axis=1) - np.nanmedian(lower, axis=1)
    spread = np.nanstd(lower, axis=1) + np.nanstd(upper, axis=1) + 1.0
    real = ~ak.to_numpy(cols.quad_is_complex).astype(bool)
    score = np.where(real, gap / spread, -np.inf)
    chosen = np.argsort(score)[::-1][: min(n, len(score))]
    ids = [ak.to_numpy(cols[k]) for k in ("run", "luminosityBlock", "event")]
    fig, axes = figure(nrows=2, ncols=3, figsize=(15, 9))
    axes = axes.ravel()
    for ax, i in zip(axes, chosen, strict=False):
        marks = [float(cols.quad_pz[i]), float(cols.quad_pz_alt[i]), float(true["pz"][i])]
        lo, hi = np.percentile(pz[i], [1, 99])
        lo, hi = min(lo, *marks), max(hi, *marks)
        pad = 0.08 * (hi - lo) + 1.0
        bins = np.linspace(lo - pad, hi + pad, 41)
        hist_with_flow(ax, pz[i], bins, label="cINN posterior", color="tab:blue")
        with style():
            ax.axvline(marks[0], color="tab:red", label="quadratic (chosen)")
            ax.axvline(marks[1], color="tab:red", linestyle=":", label="quadratic (other)")
            ax.axvline(marks[2], color="k", linestyle="--", label="true")
            ax.set_xlabel(r"neutrino $p_z$ [GeV]", fontsize="small")
            ax.set_ylabel(f"samples / {bins[1] - bins[0]:.0f} GeV", fontsize="small")
            ax.set_title(f"event {ids[0][i]}:{ids[1][i]}:{ids[2][i]}", fontsize="small")
            ax.tick_params(labelsize="x-small")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.6)
            ax.legend(fontsize=9, loc="upper right")
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    with style():
        fig.tight_layout()
    caption(
        fig,
        f"Posterior displays: the cINN's {pz.shape[1]} pz samples (blue) of the {len(chosen)} events "
        "with real quadratic roots whose posterior is most bimodal, with the quadratic's chosen "
        "(smaller |pz|) and other root (red) and the true pz (black dashed); titles are "
        "run:lumi:event; samples outside the range are counted in the legend.",
    )
    return [save_figure(fig, out / "posterior_displays.png", dpi=110)]


@_styled
def _plot_downstream(values: dict[str, dict[str, np.ndarray]], out: Path) -> Path:
    """Spectra of m(l nu), m(l nu b), m(ttbar): parton truth, flow (all samples), quadratic, true nu."""
    fig, axes = figure(ncols=3, figsize=(21, 6.5))
    spec = {
        "m_w": (np.linspace(40, 160, 49), r"$m(\ell\nu)$ [GeV]"),
        "m_top": (np.linspace(80, 320, 49), r"$m(\ell\nu b)$ [GeV]"),
        "m_ttbar": (np.linspace(250, 1450, 49), r"$m(\ell\nu + 4\,\mathrm{jets})$ [GeV]"),
    }
    truth = values.get("truth", {})
    for ax, o in zip(axes, OBSERVABLES, strict=True):
        bins, xlabel = spec[o]
        if o in truth:
            hist_with_flow(ax, truth[o], bins, label="parton truth", color="0.5", fill=False, linestyle="-")
        k = values["flow"][o].shape[1]
        hist_with_flow(
            ax, values["flow"][o], bins, label="cINN (all samples)", unit_weight=k, color="tab:blue"
        )
        hist_with_flow(ax, values["quad"][o], bins, label="quadratic", color="tab:red")
        hist_with_flow(ax, values["nu_true"][o], bins, label=r"true $\nu$", color="k", linestyle=":")
        with style():
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"events / {bins[1] - bins[0]:.3g} GeV")
            if o == "m_ttbar":
                ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
            else:  # the parton W and top are Breit-Wigner peaks of 2 and 1.4 GeV width: log scale
                ax.set_yscale("log")
                ax.set_ylim(0.3, ax.get_ylim()[1] * 40)
            ax.legend(fontsize="x-small", loc="upper right")
    with style():
        fig.tight_layout()
    caption(
        fig,
        "Downstream spectra: leptonic W, leptonic top (the b-tagged jet giving m closest to 172.5 GeV, "
        "chosen per posterior sample for the cINN) and the ttbar system (lepton, neutrino, four "
        "leading jets), from the cINN posterior (each sample weighted 1/K), the quadratic solution "
        "and the true neutrino, against the parton-level truth (t, tbar and W masses of GenPart); "
        "logarithmic scale for the W and top. Entries outside the range are counted in the legend.",
    )
    return save_figure(fig, out / "downstream_spectra.png", dpi=100)


_SHORT = {"m_w": "m(l nu)", "m_top": "m(l nu b)", "m_ttbar": "m(l nu + 4 jets)"}


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """The lines ``hepflow report neutrino`` prints about the scores, the downstream observables
    and the verdicts of a report (after its point metrics)."""
    sc = rep["scores"]
    methods = ("flow", "quad", "quad_mixture", "ff")
    lines = [
        "scores in GeV (lower is better): "
        + f"{'':<10}"
        + " ".join(f"{m:>13}" for m in ("flow", "quad point", "quad 2-root", "regression")),
    ]
    for c in ("px", "py", "pz"):
        lines.append(f"  CRPS {c:<4}" + " " * 32 + " ".join(f"{sc['crps'][c][m]:>13.2f}" for m in methods))
    lines.append("  energy score" + " " * 29 + " ".join(f"{sc['energy'][m]:>13.2f}" for m in methods))
    down = rep.get("downstream", {})
    if "resolution" in down:
        lines.append(
            "downstream vs parton truth [GeV]: resolution (IQR/1.349), then spectrum Wasserstein distance"
        )
        lines.append(f"{'':<40}{'flow':>9} {'quad':>9} {'true nu':>9} {'W flow':>9} {'W quad':>9}")
        for o in OBSERVABLES:
            r, w = down["resolution"][o], down["wasserstein"][o]
            lines.append(
                f"  {_SHORT[o]:<38}"
                + " ".join(f"{r[m]['iqr_width']:>9.2f}" for m in ("flow", "quad", "nu_true"))
                + " "
                + " ".join(f"{w[m]:>9.2f}" for m in ("flow", "quad"))
            )
    lines.append("verdicts:")
    lines += [f"  {v}" for v in rep["verdicts"]]
    return lines
