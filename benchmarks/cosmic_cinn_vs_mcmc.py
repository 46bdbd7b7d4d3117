"""cINN vs MCMC for the cosmic-ray source parameters, on held-out mock observations.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/cosmic_cinn_vs_mcmc.py --model models/cosmic \\
        --output runs/cosmic/comparison [--n-mocks 20] [--n-calibration 500] \\
        [--mcmc-auger runs/cosmic/mcmc_auger] [--report runs/cosmic/report] \\
        [--mcmc-from runs/cosmic/comparison]

Runs :func:`hepflow.cosmic.analysis.compare` with the ``[comparison]`` and ``[mcmc]`` settings of
the analysis config: per mock (parameters from the prior, seed ``[comparison] seed``, never in
the training set) the emcee posterior and the cINN posterior, their marginal mean shifts, width
ratios and 1D Wasserstein distances in units of the MCMC posterior sigma, and the wall-time ratio
(MCMC wall time / cINN time from loading the model to the samples); then the cINN calibration
(SBC, coverage, TARP) on ``--n-calibration`` further mocks. With ``--report`` it also writes the
Auger report (:func:`hepflow.cosmic.report.make_report`). Prints a table of the
results next to the targets (means within 0.2 sigma, widths within 20 %, coverage within 0.03,
cINN >= 1000x faster), and the same for the cINN samples importance-weighted with the
likelihood (exact in the limit; slower by the likelihood calls). ``--mcmc-from`` reuses the
MCMC runs (samples and wall times) of an earlier comparison on the same mocks, to compare another
model in seconds; the time ratio then sets the MCMC times of that run against this run's cINN
times.

One BLAS / torch thread unless ``OMP_NUM_THREADS`` is set: the MCMC's batches are small, and on a
shared machine more threads cost more than they give.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import time
from pathlib import Path

from hepflow.cosmic.compare import compare
from hepflow.cosmic.config import PARAMETERS


def _print_summary(comp: dict) -> None:
    _print_table(comp.get("summary"), f"{comp['n_mocks']} held-out mocks")
    conv = comp.get("summary_mcmc_converged")
    if conv:
        n_conv = conv["all"]["abs_mean_shift"]["n"] // len(PARAMETERS)
        _print_table(conv, f"the {n_conv} mocks whose MCMC converged")
    imp = comp.get("importance")
    if imp:
        _print_table(comp["summary_importance"], f"{comp['n_mocks']} mocks, cINN samples importance-weighted")
        print(
            f"importance: efficiency (ESS / n) median {imp['efficiency_median']:.3f}, min "
            f"{imp['efficiency_min']:.3f}; likelihood calls {imp['seconds_median']:.3f} s per mock; "
            f"MCMC / (cINN + weights) median {imp['time_ratio_median']:.0f}x"
        )
    _print_timing_and_calibration(comp)


def _print_table(s: dict | None, what: str) -> None:
    if s:
        print(f"\ncINN vs MCMC on {what} (units of the MCMC posterior sigma)")
        head = ("|shift| med", "q90", "<=0.2", "width med", "within 20%", "W1 med")
        widths = (11, 6, 6, 10, 11, 7)
        print(f"{'parameter':<10} " + " ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
        for name in (*PARAMETERS, "all"):
            p = s[name]
            print(
                f"{name:<10} {p['abs_mean_shift']['median']:>11.3f} {p['abs_mean_shift']['q90']:>6.2f} "
                f"{p['mean_within_tol']:>6.2f} {p['width_ratio']['median']:>10.3f} "
                f"{p['width_within_tol']:>11.2f} {p['wasserstein']['median']:>7.3f}"
            )


def _print_timing_and_calibration(comp: dict) -> None:
    if comp.get("summary"):
        t = comp["timing"]
        print(
            f"time: MCMC median {t['mcmc_seconds_median']:.1f} s, "
            f"cINN median {t['cinn_seconds_median']:.3f} s "
            f"(features + {comp['cinn_samples']} samples; model loaded once in "
            f"{t.get('cinn_model_load_seconds', float('nan')):.3f} s): "
            f"ratio median {t['time_ratio_median']:.0f}x "
            f"(target >= 1000x; {t.get('time_ratio_median_with_model_load', float('nan')):.0f}x with the "
            f"model load on every mock); MCMC converged on {comp['mcmc_converged_fraction']:.0%} of the mocks"
        )
    cal = comp.get("calibration")
    if cal:
        print(f"\ncINN calibration on {cal['n_observations']} mocks x {cal['n_samples']} samples")
        print(f"{'parameter':<10} {'cov68':>6} {'cov95':>6} {'SBC chi2 p':>11} {'SBC KS p':>9}")
        for name in PARAMETERS:
            print(
                f"{name:<10} {cal['coverage']['0.68'][name]:>6.3f} {cal['coverage']['0.95'][name]:>6.3f} "
                f"{cal['sbc']['chi2_pvalue'][name]:>11.3f} {cal['sbc']['ks_pvalue'][name]:>9.3f}"
            )
        dev = cal["max_coverage_deviation"]
        print(
            f"max |coverage - calibrated level (k - 1) / (k + 1)|: 68 % {dev['0.68']:.3f}, "
            f"95 % {dev['0.95']:.3f} (target 0.03); "
            f"TARP ATC {cal['tarp']['atc']:.3f}, KS p {cal['tarp']['ks_pvalue']:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="output of `hepflow train cosmic`")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument(
        "--config", type=Path, default=None, help="analysis config (default: the shipped one)"
    )
    parser.add_argument("--n-mocks", type=int, default=None, help="default: [comparison] n_mocks")
    parser.add_argument("--n-calibration", type=int, default=None, help="default: [comparison] n_calibration")
    parser.add_argument(
        "--mcmc-auger", type=Path, default=None, help="MCMC output on the Auger data, for --report"
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the Auger report there")
    parser.add_argument(
        "--mcmc-from", type=Path, default=None, help="reuse the MCMC runs of this earlier comparison output"
    )
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    t0 = time.perf_counter()
    comp = compare(
        args.model,
        args.output,
        config=args.config,
        n_mocks=args.n_mocks,
        n_calibration=args.n_calibration,
        mcmc_from=args.mcmc_from,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    _print_summary(comp)
    print(f"\ncomparison written to {args.output / 'comparison.json'} in {time.perf_counter() - t0:.0f} s")
    if args.report is not None:
        from hepflow.cosmic.report import make_report

        rep = make_report(
            args.model, args.report, config=args.config, mcmc_auger=args.mcmc_auger, comparison=comp
        )
        print(f"report written to {args.report / 'report.json'}")
        for name in PARAMETERS:
            c, m = rep["cinn"]["posterior"][name], rep["mcmc"]["posterior"][name]
            print(
                f"  Auger {name:<8} cINN {c['mean']:8.4f} +- {c['std']:.4f}   "
                f"MCMC {m['mean']:8.4f} +- {m['std']:.4f}"
            )


if __name__ == "__main__":
    main()
