"""The fast detector's response side by side with CMS NanoAOD simulation (issue 21).

Usage::

    python benchmarks/detector_response.py                       # generate 5000 events
    python benchmarks/detector_response.py --fast ttbar.root     # an existing generated file
    python benchmarks/detector_response.py --events 2000 --out runs/response_small

Generates ``--events`` semileptonic ttbar events with ``hepflow.generate.generate_ttbar`` (or
reads ``--fast``), measures the detector response (:mod:`hepflow.generate.response`) on them
and on the CMS samples (``--cms``, default the NanoAOD samples in ``tests/samples``: ttbar v12,
ttbar v15, Drell-Yan), and compares the fast detector with all CMS events pooled: every number
with its statistical uncertainty, and the pull ``(fast - CMS) / sqrt(err_fast^2 + err_CMS^2)``.
Writes to ``--out``: ``response.json`` (every measurement, each CMS sample on its own and
pooled, and the comparison), ``report.md`` (table, disagreements, MET trend), and one PNG per
observable. About two minutes on one core for 5000 events, most of it Pythia.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.errors import HepflowError
from hepflow.generate.response import (
    BOTH,
    Binned,
    Comparison,
    Response,
    compare,
    measure,
    met_difference,
    pool_events,
    pull_summary,
    read_events,
)
from hepflow.outputs.atomic import atomic_write, write_json
from hepflow.plotting import save_figure

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "samples"
DEFAULT_CMS = ("nano_tt_v12.root", "nano_tt_v15.root", "nano_dy.root")
#: |pull| above which a number is listed as a disagreement.
PULL_LIMIT = 2.0
FAST_STYLE = {"color": "tab:blue", "marker": "o", "label": "fast detector"}
CMS_STYLE = {"color": "black", "marker": "s", "label": "CMS simulation (pooled)"}


def main() -> None:
    try:
        run()
    except HepflowError as err:  # bad input: one line, exit status 2, as the CLI does
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="fast-detector events to generate")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--fast", type=Path, help="an existing generated file instead of generating")
    parser.add_argument("--cms", type=Path, nargs="+", default=[SAMPLES / n for n in DEFAULT_CMS])
    parser.add_argument("--out", type=Path, default=Path("runs/detector_response"))
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    generation: dict[str, Any] | None = None
    if args.fast is None:
        from hepflow.generate import generate_ttbar

        args.fast = args.out / "fast_ttbar.root"
        stats = generate_ttbar(args.fast, events=args.events, seed=args.seed, progress=False, overwrite=True)
        print(stats.summary())
        generation = {"events": stats.events, "seed": args.seed, "seconds": round(stats.seconds, 1)}

    start = time.perf_counter()
    fast_events = read_events(args.fast)
    fast = measure(fast_events, source=str(args.fast), n_boot=args.n_boot)
    cms_events = {path.name: read_events(path) for path in args.cms}
    per_sample = {name: measure(ev, source=name, n_boot=args.n_boot) for name, ev in cms_events.items()}
    pooled_events = pool_events(list(cms_events.values()))
    cms = measure(pooled_events, source=" + ".join(cms_events), n_boot=args.n_boot)
    print(f"measured in {time.perf_counter() - start:.1f} s")

    rows = [r for r in compare(fast, cms) if math.isfinite(r.a.value) and math.isfinite(r.b.value)]
    table = format_table(rows)
    print(table)
    counted, disagree = disagreements(rows)
    print(
        f"\n{len(disagree)} of {len(counted)} numbers disagree by more than {PULL_LIMIT:g} standard "
        f"deviations (the MET rows of x and y together, derived from the x and y rows, not counted)"
    )
    together, together_summary = judged_together(counted)
    print(together)

    like = met_like_for_like(fast, per_sample)
    print("\n" + like)

    diffs = {"fast detector": met_difference(fast_events), "CMS (pooled)": met_difference(pooled_events)}
    plots = make_plots(args.out, fast, cms, per_sample, diffs)
    write_json(
        args.out / "response.json",
        {
            "command": " ".join(sys.argv),
            "generation": generation,
            "fast": fast.to_dict(),
            "cms_pooled": cms.to_dict(),
            "cms": {name: r.to_dict() for name, r in per_sample.items()},
            "met_per_sample": {
                name: [
                    {"name": c.name, "fast": c.a.to_dict(), "cms": c.b.to_dict(), "pull": _finite(c.pull)}
                    for c in met_rows(fast, r)
                ]
                for name, r in per_sample.items()
            },
            "judged_together": together_summary,
            "comparison": [
                {
                    "name": r.name,
                    "fast": r.a.to_dict(),
                    "cms": r.b.to_dict(),
                    "pull": _finite(r.pull),
                }
                for r in rows
            ],
        },
    )
    report = format_report(args, fast, cms, per_sample, rows, table, plots, like, together)
    with atomic_write(args.out / "report.md") as tmp:
        tmp.write_text(report)
    print(f"wrote {args.out}/response.json, report.md and {len(plots)} plots")


def detector_rows(counted: list[Comparison]) -> list[Comparison]:
    """The rows that compare the detector: not the mean pileup and rho, which compare the
    samples' pileup profiles (the pooled CMS samples are not at one pileup)."""
    return [r for r in counted if not r.name.startswith("mean ")]


def judged_together(counted: list[Comparison]) -> tuple[str, dict[str, float]]:
    """The detector rows' pulls judged as a family (:func:`pull_summary`): one sentence, and the
    summary itself."""
    rows = [r for r in detector_rows(counted) if math.isfinite(r.pull)]
    s = pull_summary([r.pull for r in rows], limit=PULL_LIMIT)
    worst = max(rows, key=lambda r: abs(r.pull))
    sentence = (
        f"Judged together: of the {s['n']} numbers that compare the detector (the mean pileup and "
        f"rho compare the samples' pileup profiles and are left out), {s['beyond']} lie beyond "
        f"{PULL_LIMIT:g} standard deviations, where a detector that matches puts {s['expected']:.1f} "
        f"on average (probability of {s['beyond']} or more: {s['p_count']:.2g}); the largest pull, "
        f"{worst.pull:+.1f} ({worst.name}), is reached by the largest of {s['n']} independent pulls "
        f"with probability {s['p_max']:.2g}."
    )
    return sentence, s


def disagreements(rows: list[Comparison]) -> tuple[list[Comparison], list[Comparison]]:
    """The rows that count (not the MET widths of both components together, which repeat the x
    and y rows) and those of them beyond :data:`PULL_LIMIT`."""
    counted = [r for r in rows if BOTH not in r.name]
    return counted, [r for r in counted if abs(r.pull) > PULL_LIMIT]


def met_rows(fast: Response, cms: Response) -> list[Comparison]:
    """The MET widths of both components together (core and RMS) and the mean pileup, fast
    against one CMS sample."""
    keys = (f"MET core width {BOTH} [GeV]", f"MET RMS {BOTH} [GeV]", "mean Pileup_nPU")
    return [r for r in compare(fast, cms) if r.name in keys]


def met_like_for_like(fast: Response, per_sample: dict[str, Response]) -> str:
    """MET against each CMS sample on its own. The MET resolution depends on the process (its
    hadronic activity) and on the pileup, so of these rows the like-for-like one for a ttbar
    sample is the CMS ttbar sample at its pileup; the pool mixes in Drell-Yan and another pileup."""
    lines = [
        "MET - GenMET, both components together, against each CMS sample on its own (like for like: "
        "the CMS sample of the same process at the same pileup):",
        "",
        "| CMS sample | <nPU> fast / CMS | core width fast / CMS [GeV] | pull "
        "| RMS fast / CMS [GeV] | pull |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in per_sample.items():
        rows = {c.name.split(" [")[0]: c for c in met_rows(fast, r)}
        core, rms = rows[f"MET core width {BOTH}"], rows[f"MET RMS {BOTH}"]
        pu = rows.get("mean Pileup_nPU")
        npu = f"{pu.a.value:.1f} / {pu.b.value:.1f}" if pu is not None else "-"
        cells = [
            f"{_pm(c.a.value, c.a.error)} / {_pm(c.b.value, c.b.error)} | {c.pull:+.1f}" for c in (core, rms)
        ]
        lines.append(f"| {name} ({r.events}) | {npu} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _pm(value: float, error: float) -> str:
    if not math.isfinite(value):
        return "-"
    digits = 3 if abs(value) < 2 else 1
    return f"{value:.{digits}f} +- {error:.{digits}f}"


def format_table(rows: list[Comparison]) -> str:
    """Markdown table: observable, fast +- stat, CMS +- stat, pull (flagged beyond the limit)."""
    lines = ["| observable | fast | CMS | pull |", "|---|---|---|---|"]
    for r in rows:
        flag = " **" if abs(r.pull) > PULL_LIMIT else ""
        lines.append(
            f"| {r.name} | {_pm(r.a.value, r.a.error)} | {_pm(r.b.value, r.b.error)} ({r.b.count}) "
            f"| {flag.strip()}{r.pull:+.1f}{flag.strip()} |"
        )
    return "\n".join(lines)


def format_report(
    args: argparse.Namespace,
    fast: Response,
    cms: Response,
    per_sample: dict[str, Response],
    rows: list[Comparison],
    table: str,
    plots: list[Path],
    like: str,
    together: str,
) -> str:
    out = [
        "# Fast detector vs CMS simulation: detector response",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Fast detector: {fast.events} events ({fast.source}). CMS: "
        + ", ".join(f"{name} ({r.events} events)" for name, r in per_sample.items())
        + f", pooled ({cms.events} events). Errors are statistical (bootstrap with {args.n_boot} "
        "resamples; binomial for tag rates); CMS counts in brackets.",
        "",
        "## Pileup (CMS)",
        "",
    ]
    for name, r in per_sample.items():
        pu, rho = r.pileup["Pileup_nPU"], r.pileup["fixedGridRhoFastjetAll [GeV]"]
        out.append(
            f"* {name}: <nPU> = {_pm(pu.value, pu.error) if pu else '-'}, "
            f"<rho> = {_pm(rho.value, rho.error) if rho else '-'} GeV"
        )
    out += ["", "## MET resolution against sumEt", ""]
    out.append(
        "| sample | <sumEt> [GeV] | core width x, y [GeV] | fit a [GeV] | fit b [GeV^1/2] | b (a = 0) |"
    )
    out.append("|---|---|---|---|---|---|")
    for name, r in [("fast detector", fast), *per_sample.items(), ("CMS pooled", cms)]:
        fit = r.met.fit or {}
        cells = [_pm(fit[k].value, fit[k].error) if k in fit else "-" for k in ("a", "b", "b (a = 0)")]
        cw = r.met.core_width
        out.append(
            f"| {name} | {r.met.mean_sumet.value:.0f} | {_pm(cw['x'].value, cw['x'].error)}, "
            f"{_pm(cw['y'].value, cw['y'].error)} | " + " | ".join(cells) + " |"
        )
    out += ["", "## MET against each CMS sample", "", like]
    counted, disagree = disagreements(rows)
    out += [
        "",
        f"## Comparison ({len(disagree)} of {len(counted)} independent numbers beyond {PULL_LIMIT:g} "
        "standard deviations; the MET rows of x and y together are not counted)",
        "",
        together,
        "",
        table,
        "",
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
    ]
    return "\n".join(out)


# --- plots -------------------------------------------------------------------------------------


def _errorbar(ax: Any, b: Binned, style: dict[str, Any], *, shift: float = 0.0, **extra: Any) -> None:
    ok = np.isfinite(b.value)
    x = np.where(np.isfinite(b.centre), b.centre, 0.5 * (b.edges[:-1] + b.edges[1:]))
    xerr = np.vstack([x - b.edges[:-1], b.edges[1:] - x])
    ax.errorbar(
        x[ok] * (1.0 + shift),
        b.value[ok],
        yerr=b.error[ok],
        xerr=xerr[:, ok],
        linestyle="none",
        markersize=4,
        capsize=0,
        **{**style, **extra},
    )


def _pt_axis(ax: Any, edges: np.ndarray) -> None:
    """Log pT axis labelled at the bin edges (no crowded minor labels)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(edges))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def make_plots(
    out: Path,
    fast: Response,
    cms: Response,
    per_sample: dict[str, Response],
    diffs: dict[str, tuple[np.ndarray, np.ndarray]],
) -> list[Path]:
    from matplotlib.figure import Figure

    paths = []
    sample_styles = [
        {"color": c, "marker": m, "label": f"CMS {n}", "alpha": 0.6, "markerfacecolor": "none"}
        for (n, c, m) in zip(
            per_sample, ("tab:red", "tab:green", "tab:purple"), ("^", "v", "D"), strict=False
        )
    ]

    # MET resolution against sumEt, with the fits sigma = b sqrt(sumEt)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, attr, title in (
        (axes[0], "core_vs_sumet", "core width (IQR/1.349)"),
        (axes[1], "rms_vs_sumet", "RMS"),
    ):
        _errorbar(ax, getattr(fast.met, attr), FAST_STYLE)
        _errorbar(ax, getattr(cms.met, attr), CMS_STYLE)
        for style, r in zip(sample_styles, per_sample.values(), strict=False):
            _errorbar(ax, getattr(r.met, attr), style, shift=0.01)
        grid = np.linspace(50.0, 4000.0, 200)
        for r, style in ((fast, FAST_STYLE), (cms, CMS_STYLE)):
            if r.met.fit is not None:
                b = r.met.fit["b (a = 0)"].value
                ax.plot(
                    grid,
                    b * np.sqrt(grid),
                    color=style["color"],
                    lw=0.8,
                    ls="--",
                    label=f"{b:.2f} sqrt(sumEt)",
                )
        ax.set_xlabel("MET_sumEt [GeV]")
        ax.set_ylabel("MET - GenMET per component [GeV]")
        ax.set_title(title)
        ax.set_xlim(0, 4000)
        ax.set_ylim(0, None)
        ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "met_vs_sumet.png", bbox_inches="tight"))

    # MET - GenMET distributions
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    bins = np.linspace(-120.0, 120.0, 41)
    for i, (ax, comp) in enumerate(zip(axes, ("x", "y"), strict=True)):
        for (label, d), color in zip(diffs.items(), ("tab:blue", "black"), strict=True):
            values = d[i]
            counts, _ = np.histogram(values, bins)
            width = np.diff(bins)
            density = counts / (len(values) * width)
            err = np.sqrt(counts) / (len(values) * width)
            centres = 0.5 * (bins[:-1] + bins[1:])
            if label.startswith("fast"):
                ax.stairs(density, bins, color=color, label=f"{label} ({len(values)})")
            else:
                ax.errorbar(
                    centres,
                    density,
                    yerr=err,
                    color=color,
                    marker="s",
                    ms=3,
                    ls="none",
                    label=f"{label} ({len(values)})",
                )
        ax.set_xlabel(f"MET_{comp} - GenMET_{comp} [GeV]")
        ax.set_ylabel("events / GeV (normalised)")
        ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "met_difference.png", bbox_inches="tight"))

    # jet response and resolution against GenJet pT, per |eta| region
    regions = list(fast.jets.response_vs_pt)
    fig = Figure(figsize=(4 * len(regions), 7), layout="constrained")
    axes = fig.subplots(2, len(regions), squeeze=False)
    for j, region in enumerate(regions):
        for i, (attr, ylabel) in enumerate(
            (("response_vs_pt", "median pT / GenJet pT"), ("resolution_vs_pt", "IQR/1.349 of pT / GenJet pT"))
        ):
            ax = axes[i, j]
            _errorbar(ax, getattr(fast.jets, attr)[region], FAST_STYLE)
            _errorbar(ax, getattr(cms.jets, attr)[region], CMS_STYLE, shift=0.02)
            _pt_axis(ax, fast.jets.response_vs_pt[region].edges)
            ax.set_xlabel("GenJet pT [GeV]")
            ax.set_ylabel(ylabel)
            ax.set_title(f"|eta| {region}")
            if i == 0:
                ax.axhline(1.0, color="grey", lw=0.5)
            else:
                ax.set_ylim(0, None)
            ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "jet_response_pt.png", bbox_inches="tight"))

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, attr, ylabel in (
        (axes[0], "response_vs_eta", "median pT / GenJet pT"),
        (axes[1], "resolution_vs_eta", "IQR/1.349 of pT / GenJet pT"),
    ):
        _errorbar(ax, getattr(fast.jets, attr), FAST_STYLE)
        _errorbar(ax, getattr(cms.jets, attr), CMS_STYLE, shift=0.02)
        ax.set_xlabel("GenJet |eta|")
        ax.set_ylabel(ylabel)
        ax.set_title(f"GenJet pT > {fast.jets.eta_pt_min:g} GeV")
        ax.legend(fontsize=8)
    axes[0].axhline(1.0, color="grey", lw=0.5)
    axes[1].set_ylim(0, None)
    paths.append(save_figure(fig, out / "jet_response_eta.png", bbox_inches="tight"))

    # leptons
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for j, flavour in enumerate(("electron", "muon")):
        for i, kind in enumerate(("scale", "resolution")):
            ax = axes[i, j]
            _errorbar(ax, fast.leptons[flavour][kind], FAST_STYLE)
            _errorbar(ax, cms.leptons[flavour][kind], CMS_STYLE, shift=0.02)
            _pt_axis(ax, fast.leptons[flavour][kind].edges)
            ax.set_xlabel(f"generator {flavour} pT [GeV]")
            ax.set_ylabel("median pT / gen pT" if kind == "scale" else "IQR/1.349 of pT / gen pT")
            ax.set_title(f"{flavour}s (tight ID, prompt)")
            if kind == "scale":
                ax.axhline(1.0, color="grey", lw=0.5)
            else:
                ax.set_ylim(0, None)
            ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "lepton_resolution.png", bbox_inches="tight"))

    # b-tagging
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, flavour in zip(axes, ("b", "c", "light"), strict=True):
        _errorbar(ax, fast.btag[flavour], FAST_STYLE)
        _errorbar(ax, cms.btag[flavour], CMS_STYLE, shift=0.02)
        _pt_axis(ax, fast.btag[flavour].edges)
        ax.set_xlabel("jet pT [GeV]")
        ax.set_ylabel("fraction with btagDeepFlavB > 0.2783")
        ax.set_title(f"{flavour} jets (hadronFlavour), |eta| < 2.5")
        ax.set_ylim(0, 1.0 if flavour == "b" else None)
        ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "btag_rates.png", bbox_inches="tight"))
    return paths


if __name__ == "__main__":
    main()
