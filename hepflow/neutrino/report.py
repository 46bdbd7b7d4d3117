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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import awkward as ak
import matplotlib as mpl
import mplhep
import numpy as np
from matplotlib.figure import Figure

from hepflow.errors import InputError
from hepflow.neutrino.quadratic import M_W, lepton_mass, reconstruct_w_mass
from hepflow.outputs import read_parquet_dir, write_json
from hepflow.plotting import save_figure

COMPONENTS = ("px", "py", "pz", "eta")
METHODS = ("flow_mode", "flow_peak", "flow_median", "quad", "ff")
LABELS = {
    "flow_mode": "cINN mode",
    "flow_peak": "cINN marginal peak",
    "flow_median": "cINN median",
    "quad": "quadratic",
    "ff": "regression",
}


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
            ak.to_numpy(cols.quad_pz_alt).astype(np.float64),
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
        "calibration": {k: calib[k] for k in ("sbc", "coverage", "tarp")},
        "plots": list(calib.get("plots", {}).values()),  # the paths of the SBC, coverage and TARP plots
    }
    report["plots"] += [str(p) for p in _plot_residuals(true, est, out)]
    report["plots"].append(str(_plot_w_mass(mw, out)))
    report["plots"] += [str(p) for p in _plot_displays(cols, true, out, n_displays)]
    write_json(out / "report.json", report)
    return report


def _w_mass(cols: ak.Array, e: dict[str, np.ndarray]) -> np.ndarray:
    lep = [ak.to_numpy(cols[f"lep_{c}"]).astype(np.float64) for c in ("px", "py", "pz", "e")]
    m = lepton_mass(ak.to_numpy(cols.lep_flavor))
    return np.asarray(reconstruct_w_mass(*lep, e["px"], e["py"], e["pz"], lep_mass=m), np.float64)


def _plot_residuals(true: dict[str, np.ndarray], est: dict[str, Any], out: Path) -> list[Path]:
    paths = []
    ranges = {"px": 100.0, "py": 100.0, "pz": 250.0, "eta": 3.0}
    for c in COMPONENTS:
        with mpl.style.context(mplhep.style.CMS):
            fig = Figure(figsize=(8, 6))
            ax = fig.add_subplot()
            bins = np.linspace(-ranges[c], ranges[c], 61)
            for m in METHODS:
                ax.hist(est[m][c] - true[c], bins=bins, histtype="step", linewidth=2, label=LABELS[m])
            unit = "" if c == "eta" else " [GeV]"
            ax.set_xlabel(f"reconstructed - true neutrino {c}{unit}")
            ax.set_ylabel("events")
            ax.legend(fontsize="small")
            mplhep.label.exp_text("hepflow", "Simulation", ax=ax, loc=0)
            paths.append(save_figure(fig, out / f"residual_{c}.png", dpi=110))
    return paths


def _plot_w_mass(mw: dict[str, np.ndarray], out: Path) -> Path:
    with mpl.style.context(mplhep.style.CMS):
        fig = Figure(figsize=(8, 6))
        ax = fig.add_subplot()
        bins = np.linspace(40, 160, 61)
        for m in METHODS:
            if m == "flow_median":
                continue
            ax.hist(
                np.clip(mw[m], bins[0], bins[-1]), bins=bins, histtype="step", linewidth=2, label=LABELS[m]
            )
        ax.axvline(M_W, color="0.4", linestyle="--", label=r"$m_W$")
        ax.set_xlabel(r"reconstructed $m(\ell\nu)$ [GeV]")
        ax.set_ylabel("events")
        ax.legend(fontsize="small")
        mplhep.label.exp_text("hepflow", "Simulation", ax=ax, loc=0)
        return save_figure(fig, out / "w_mass.png", dpi=110)


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
    paths = []
    with mpl.style.context(mplhep.style.CMS):
        fig = Figure(figsize=(12, 8))
        axes = fig.subplots(2, 3).ravel()
        for ax, i in zip(axes, chosen, strict=False):
            ax.hist(pz[i], bins=40, histtype="stepfilled", alpha=0.5, label="cINN posterior")
            ax.axvline(float(cols.quad_pz[i]), color="tab:red", label="quadratic (chosen)")
            ax.axvline(float(cols.quad_pz_alt[i]), color="tab:red", linestyle=":", label="quadratic (other)")
            ax.axvline(true["pz"][i], color="k", linestyle="--", label="true")
            ax.set_xlabel(r"neutrino $p_z$ [GeV]", fontsize="small")
            ax.tick_params(labelsize="x-small")
        axes[0].legend(fontsize="x-small")
        for ax in axes[len(chosen) :]:
            ax.set_visible(False)
        fig.tight_layout()
        paths.append(save_figure(fig, out / "posterior_displays.png", dpi=110))
    return paths
