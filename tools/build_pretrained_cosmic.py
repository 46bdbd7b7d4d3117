"""Install a trained cosmic model as the pretrained cosmic model shipped with hepflow
(docs/cosmic_model.md, "The pretrained cosmic model").

The model is trained and measured with the ordinary commands; this script copies it into
``hepflow/cosmic/pretrained/model`` (or ``--target``) with its model card: the training record,
the config it was trained with, and what ``hepflow infer cosmic --importance --mcmc`` measured on
the Auger data (and, with ``--compare``, what ``hepflow compare cosmic`` measured on mocks)::

    hepflow generate cosmic --n 400000 --seed 7 --config syst.toml --output pe400k.root
    hepflow train cosmic --data pe400k.root --output model400k --config syst.toml
    hepflow mcmc cosmic --observation auger --systematics --output mcmc_syst
    hepflow infer cosmic --model model400k --observation auger --config syst.toml \\
        --importance --mcmc mcmc_syst --output inf400k
    python tools/build_pretrained_cosmic.py --model model400k --config syst.toml --seed 7 --infer inf400k

When the Auger measurement changes (a new ``infer`` with a corrected model check, say) and the
model does not, ``--update-auger`` replaces only the card's Auger section of an installed model
(its files checked against the card first, and left untouched)::

    hepflow infer cosmic --observation auger --importance --mcmc mcmc_syst --output inf_pre
    python tools/build_pretrained_cosmic.py --update-auger --infer inf_pre
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hepflow.cosmic.config import load_config
from hepflow.cosmic.pretrained import LOCATION, install_model
from hepflow.errors import HepflowError, InputError


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable ({err})") from None


def auger_record(summary: dict[str, Any]) -> dict[str, Any]:
    """What the card records of an ``infer cosmic --importance --mcmc`` summary on the Auger data:
    the verdict, the importance ESS, the model checks (as lines and, under ``model_check``, the
    total p-value per method), and the per-parameter table."""
    if summary.get("observation") != "auger" or "verdict" not in summary or "importance" not in summary:
        raise InputError(
            "--infer must be an `hepflow infer cosmic --observation auger --importance --mcmc DIR` output"
        )
    imp, ver = summary["importance"], summary["verdict"]
    lines = [
        ver["line"],
        f"importance weights: ESS {imp['ess']:.0f} of {summary['samples']} (efficiency "
        f"{imp['efficiency']:.3f}; the target is 0.2)",
    ]
    if post := summary.get("posterior_importance"):
        shifts = {
            name: (post[name]["mean"] - row["mcmc_mean"]) / row["mcmc_std"]
            for name, row in ver["per_parameter"].items()
            if name in post
        }
        worst = max(shifts, key=lambda k: abs(shifts[k]))
        lines.append(
            "the importance-weighted cINN against the MCMC: largest shift "
            f"{shifts[worst]:+.2f} MCMC sd ({worst})"
        )
    checks = {}
    for method, check in summary.get("model_check", {}).items():
        p = check["total"]
        value = f"< {p['p_value_below']}" if p.get("p_value_below") else f"{p['p_value']:.3f}"
        name = {"cinn": "cINN", "mcmc": "MCMC"}.get(method, method)
        lines.append(f"model check ({name} posterior): posterior predictive p {value}")
        checks[method] = {"p_value": p["p_value"], "p_value_below": p.get("p_value_below")}
    return {
        "lines": lines,
        "per_parameter": ver["per_parameter"],
        "ess": imp["ess"],
        "n": summary["samples"],
        "model_check": checks,
    }


def update_auger(target: Path, auger: dict[str, Any]) -> dict[str, Any]:
    """Replace the Auger section of the card of the model installed in ``target`` (its files
    verified against the card first; only ``card.json`` and ``card.md`` are written)."""
    from hepflow import modelcard
    from hepflow.cosmic.pretrained import render_card
    from hepflow.outputs.atomic import atomic_write, write_json

    card = modelcard.verify_model(target)
    card = {**card, "auger": auger}
    write_json(target / modelcard.CARD_JSON, card)
    with atomic_write(target / modelcard.CARD_MD, overwrite=True) as tmp:
        tmp.write_text(render_card(card))
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="a `hepflow train cosmic` output (one cINN)")
    p.add_argument("--config", type=Path, help="the config it was trained with")
    p.add_argument("--seed", type=int, help="the seed of its pseudo-experiments")
    p.add_argument(
        "--update-auger",
        action="store_true",
        help="replace only the Auger section of the card of the model installed in --target",
    )
    p.add_argument("--infer", type=Path, required=True, help="its `infer --importance --mcmc` on auger")
    p.add_argument("--compare", type=Path, default=None, help="its `hepflow compare cosmic` output")
    p.add_argument("--target", type=Path, default=LOCATION, help=f"install folder (default: {LOCATION})")
    args = p.parse_args(argv)
    if not args.update_auger and None in (args.model, args.config, args.seed):
        p.error("--model, --config and --seed are required (or --update-auger)")
    try:
        auger = auger_record(_read(args.infer / "summary.json"))
        if args.update_auger:
            update_auger(args.target, auger)
            print(f"updated the Auger section of the card in {args.target}")
            print("\n".join(auger["lines"]))
            return 0
        mocks = None
        if args.compare is not None:
            comp = _read(args.compare / "comparison.json")
            mocks = {k: comp.get(k) for k in ("n_mocks", "summary", "timing", "calibration") if k in comp}
            if isinstance(mocks.get("calibration"), dict):
                keep = (
                    "n_observations",
                    "n_samples",
                    "coverage",
                    "coverage_target",
                    "max_coverage_deviation",
                )
                mocks["calibration"] = {k: mocks["calibration"].get(k) for k in keep}
        card = install_model(
            args.model, args.target, config=load_config(args.config), seed=args.seed, auger=auger, mocks=mocks
        )
    except HepflowError as err:
        print(f"build_pretrained_cosmic: error: {err}", file=sys.stderr)
        return 2
    print(
        f"installed {args.model} in {args.target} ({sum(f['bytes'] for f in card['files'].values())} bytes)"
    )
    print("\n".join(auger["lines"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
