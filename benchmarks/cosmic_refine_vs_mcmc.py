"""A cINN posterior for one observation against the MCMC on the same likelihood, with a verdict.

Reads the ``summary.json`` of ``hepflow infer cosmic --importance`` and of ``hepflow mcmc cosmic``
for the same observation and prints, per parameter, the cINN's mean shift in MCMC standard
deviations and its width ratio (cINN sd / MCMC sd), the importance efficiency ESS / n, and the
verdict against the issue-19 targets (every |shift| <= 0.3 MCMC sigma, widths within 20 %,
ESS / n >= 0.2). With ``--refinement`` (a ``hepflow refine cosmic`` output) it adds the cost of
the refinement next to the MCMC's wall time.

Usage::

    python benchmarks/cosmic_refine_vs_mcmc.py --infer runs/auger_refined --mcmc runs/mcmc_auger \\
        [--refinement models/cosmic_auger]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

PARAMETERS = ("gamma", "lg_rcut", "f_H", "f_He", "f_N", "f_Si", "f_Fe")


def compare(infer: dict[str, Any], mcmc: dict[str, Any]) -> dict[str, Any]:
    """Per-parameter shift (MCMC sigma) and width ratio, ESS / n, and whether the targets are met."""
    rows = {}
    for p in PARAMETERS:
        c, m = infer["posterior"][p], mcmc["posterior"][p]
        rows[p] = {"shift": (c["mean"] - m["mean"]) / m["std"], "width": c["std"] / m["std"]}
    eff = infer.get("importance", {}).get("efficiency")
    worst = max(abs(r["shift"]) for r in rows.values())
    widths = [r["width"] for r in rows.values()]
    ok = worst <= 0.3 and min(widths) >= 0.8 and max(widths) <= 1.2 and eff is not None and eff >= 0.2
    return {
        "parameters": rows,
        "efficiency": eff,
        "max_shift": worst,
        "widths": (min(widths), max(widths)),
        "ok": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--infer", type=Path, required=True, help="output of hepflow infer cosmic --importance"
    )
    parser.add_argument("--mcmc", type=Path, required=True, help="output of hepflow mcmc cosmic")
    parser.add_argument("--refinement", type=Path, default=None, help="output of hepflow refine cosmic")
    args = parser.parse_args()
    infer = json.loads((args.infer / "summary.json").read_text())
    mcmc = json.loads((args.mcmc / "summary.json").read_text())
    res = compare(infer, mcmc)
    print(
        f"{'parameter':9s} {'cINN mean':>10s} {'MCMC mean':>10s} {'MCMC sd':>9s} "
        f"{'shift/sd':>9s} {'width':>7s}"
    )
    for p in PARAMETERS:
        c, m, r = infer["posterior"][p], mcmc["posterior"][p], res["parameters"][p]
        print(
            f"{p:9s} {c['mean']:10.4g} {m['mean']:10.4g} {m['std']:9.3g} {r['shift']:+9.2f} {r['width']:7.2f}"
        )
    eff = res["efficiency"]
    print(f"importance ESS / n: {'n/a' if eff is None else f'{eff:.3f}'}")
    lo, hi = res["widths"]
    print(
        f"verdict: the cINN {'agrees' if res['ok'] else 'does NOT agree'} with the MCMC (max |shift| "
        f"{res['max_shift']:.2f} MCMC sigma, target <= 0.3; widths {lo:.2f} .. {hi:.2f}, target 0.8 .. 1.2; "
        f"ESS / n {'n/a' if eff is None else f'{eff:.3f}'}, target >= 0.2): "
        + (
            "use it"
            if res["ok"]
            else "use the MCMC (or the importance-weighted draws if ESS is large enough)"
        )
    )
    mcmc_s = mcmc.get("wall_time_s")
    if args.refinement is not None:
        ref = json.loads((args.refinement / "refinement.json").read_text())
        print(
            f"cost of the refinement: {ref['simulations']} simulations ({ref['simulate_seconds']:.1f} s), "
            f"training {ref['train_seconds']:.0f} s, wall time {ref['wall_seconds']:.0f} s; "
            f"MCMC wall time {mcmc_s:.1f} s; cINN sampling {infer['seconds']['to_posterior']:.2f} s"
        )


if __name__ == "__main__":
    main()
