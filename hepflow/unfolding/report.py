"""Report of the ttbar unfolding study: figures, per-bin tables and chi2 for both methods.

Reads ``results.json`` of :func:`hepflow.unfolding.study.run_study` and writes, per scenario
(``nominal``, ``reweighted``) and observable:

* ``unfolded_<scenario>_<observable>.png``: the particle-level truth, the simulation prior
  (scaled to the truth's total), IBU and cINN unfolded spectra (events per GeV), and a ratio
  panel to the truth with the total uncertainties;
* in ``report.json``: per bin the truth, the unfolded value, the bias (absolute and relative),
  the total and per-source uncertainties and the pull, and the chi2, for both methods; the IBU
  chi2 after every iteration;
* ``report.md``: the same numbers as Markdown tables.

Pulls and chi2 use the method's total covariance plus the truth's statistical variance (the
truth is the particle level of the unfolded events, a Poisson realisation of the spectrum: a
regularised method returns a smoother estimate than that realisation, and the difference is
covered only with the truth's own fluctuation); ``chi2_without_truth_stat`` leaves it out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import hist
import matplotlib as mpl
import mplhep
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hepflow.errors import InputError
from hepflow.outputs import write_json
from hepflow.outputs.atomic import atomic_write
from hepflow.plotting import save_figure
from hepflow.unfolding.observables import OBSERVABLES
from hepflow.unfolding.result import Unfolded, chi2, compare

METHODS = {"ibu": "IBU (D'Agostini)", "cinn": "cINN"}
COLORS = {"ibu": "tab:blue", "cinn": "tab:red"}


def _hist(edges: list[float], values: Any, variances: Any = None) -> hist.Hist:
    h = hist.Hist(hist.axis.Variable(edges, underflow=False, overflow=False), storage=hist.storage.Weight())
    h.view()["value"] = values
    h.view()["variance"] = values if variances is None else variances
    return h


def _figure(name: str, scenario: str, res: dict[str, Any], path: Path) -> None:
    edges = np.asarray(res["edges"])
    width = np.diff(edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    truth = np.asarray(res["truth"])
    prior = np.asarray(res["prior"]) * truth.sum() / max(np.sum(res["prior"]), 1e-300)
    with mpl.rc_context(mplhep.style.CMS):
        fig = Figure(figsize=(9, 9))
        FigureCanvasAgg(fig)
        ax, rax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        mplhep.histplot(
            _hist(res["edges"], truth / width, np.asarray(res["truth_var"]) / width**2),
            ax=ax,
            color="black",
            label="truth (particle level)",
            yerr=False,
        )
        mplhep.histplot(
            _hist(res["edges"], prior / width),
            ax=ax,
            color="grey",
            ls="--",
            label="simulation (prior)",
            yerr=False,
        )
        safe = np.where(truth > 0, truth, 1.0)
        rax.stairs(np.ones_like(truth), edges, color="black")
        rax.stairs(prior / safe, edges, color="grey", ls="--")
        band = np.sqrt(np.asarray(res["truth_var"])) / safe
        rax.stairs(
            1 + band, edges, baseline=1 - band, fill=True, color="black", alpha=0.15, label="truth stat."
        )
        for k, (method, label) in enumerate(METHODS.items()):
            u = Unfolded.from_dict(res[method])
            x = centres + (k - 0.5) * 0.12 * width
            ax.errorbar(
                x,
                u.central / width,
                yerr=u.uncertainty / width,
                fmt="o",
                color=COLORS[method],
                label=label,
                ms=6,
            )
            rax.errorbar(x, u.central / safe, yerr=u.uncertainty / safe, fmt="o", color=COLORS[method], ms=5)
        ax.set_xlabel("")
        ax.set_yscale("log")
        ax.set_ylabel("events / GeV")
        ax.legend(title=f"{scenario} pseudo-data", fontsize=16, title_fontsize=16)
        rax.set_ylabel("unfolded / truth")
        rax.set_xlabel(OBSERVABLES[name])
        rax.set_ylim(0.5, 1.5)
        rax.set_xlim(edges[0], edges[-1])
        save_figure(fig, path, dpi=90, bbox_inches="tight")


def _table(res: dict[str, Any]) -> dict[str, Any]:
    truth = np.asarray(res["truth"])
    out: dict[str, Any] = {
        "edges": res["edges"],
        "truth": res["truth"],
        "truth_stat": np.sqrt(res["truth_var"]).tolist(),
    }
    truth_var = np.asarray(res["truth_var"])
    for method in METHODS:
        u = Unfolded.from_dict(res[method])
        out[method] = {
            "unfolded": u.central.tolist(),
            "uncertainty": u.uncertainty.tolist(),
            "components": {k: v.tolist() for k, v in u.components.items()},
            **compare(u, truth, truth_var=truth_var),
            "chi2_without_truth_stat": compare(u, truth)["chi2"],
        }
    cov = Unfolded.from_dict(res["ibu"]).covariance + np.diag(truth_var)
    out["ibu_chi2_by_iteration"] = [chi2(np.asarray(step) - truth, cov) for step in res["ibu_iterates"]]
    return out


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# ttbar unfolding: per-bin results", ""]
    for scenario, per_obs in report["scenarios"].items():
        for name, t in per_obs.items():
            lines += [f"## {scenario}: {name}", ""]
            lines += [
                "| bin [GeV] | truth | IBU bias % | IBU unc. % | IBU pull "
                "| cINN bias % | cINN unc. % | cINN pull |",
                "|---|---|---|---|---|---|---|---|",
            ]
            edges = t["edges"]
            for i in range(len(edges) - 1):
                row = [f"{edges[i]:g}-{edges[i + 1]:g}", f"{t['truth'][i]:.0f}"]
                for method in METHODS:
                    m = t[method]
                    row += [
                        f"{100 * m['relative_bias'][i]:+.1f}",
                        f"{100 * m['relative_uncertainty'][i]:.1f}",
                        f"{m['pull'][i]:+.2f}",
                    ]
                lines.append("| " + " | ".join(row) + " |")
            chis = ", ".join(
                f"{METHODS[m]} {t[m]['chi2']:.1f}/{t[m]['ndf']} ({t[m]['chi2_without_truth_stat']:.1f})"
                for m in METHODS
            )
            lines += ["", f"chi2/ndf vs truth (without the truth's statistical uncertainty): {chis}", ""]
    return "\n".join(lines) + "\n"


def make_report(
    study_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Write the figures, ``report.json`` and ``report.md`` (see the module docstring)."""
    path = Path(study_dir) / "results.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist: run the study first (hepflow.unfolding.study.run_study)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from err
    if results.get("analysis") != "ttbar_unfolding" or "scenarios" not in results:
        raise InputError(f"{path} is not a ttbar unfolding result")
    out = Path(study_dir) / "report" if output_dir is None else Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "counts": results["counts"],
        "training": results["training"],
        "timings_s": results["timings_s"],
        "scenarios": {},
        "figures": [],
    }
    for scenario, per_obs in results["scenarios"].items():
        report["scenarios"][scenario] = {}
        for name in OBSERVABLES:
            res = per_obs[name]
            report["scenarios"][scenario][name] = _table(res)
            fig = out / f"unfolded_{scenario}_{name}.png"
            _figure(name, scenario, res, fig)
            report["figures"].append(fig.name)
    write_json(out / "report.json", report)
    with atomic_write(out / "report.md") as tmp:
        tmp.write_text(_markdown(report))
    return report
