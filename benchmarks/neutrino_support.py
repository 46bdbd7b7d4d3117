"""How many true neutrinos lie outside the neutrino analysis's ``[support]``, and the tails.

Usage::

    hepflow generate ttbar --events 30000 --seed 5 --pileup 0 --output truth.root [--jobs N]
    python benchmarks/neutrino_support.py truth.root [more.root ...] [--config my.toml]

Reads the W neutrinos from ``GenPart`` (|pdgId| 12, 14 or 16 whose mother is a W), prints their
pT, |pz| and |eta| quantiles and largest values, and the number and fraction outside the
config's ``[support]`` (``|px|, |py| < pt_max``, ``|pz| < pz_max``), with the 95 % upper limit
on that fraction when none is outside. docs/training.md quotes its output for 30 000 events.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np


def truth_neutrinos(path: str | Path) -> dict[str, np.ndarray]:
    """``px``, ``py``, ``pz``, ``pt``, ``eta`` (float64) of the W neutrinos in a NanoAOD file."""
    import uproot

    branches = ["GenPart_pdgId", "GenPart_pt", "GenPart_eta", "GenPart_phi", "GenPart_genPartIdxMother"]
    with uproot.open(path) as f:
        a = f["Events"].arrays(branches)
    pdg, mother = abs(a.GenPart_pdgId), a.GenPart_genPartIdxMother
    mother_pdg = abs(pdg[ak.where(mother >= 0, mother, 0)])
    nu = ((pdg == 12) | (pdg == 14) | (pdg == 16)) & (mother >= 0) & (mother_pdg == 24)
    pt, eta, phi = (
        ak.to_numpy(ak.flatten(a[f"GenPart_{k}"][nu])).astype(np.float64) for k in ("pt", "eta", "phi")
    )
    return {"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta), "pt": pt, "eta": eta}


def support_table(nu: dict[str, np.ndarray], *, pt_max: float, pz_max: float) -> dict[str, Any]:
    """Counts outside the support (checked with the flow's own ``MomentumBound``, float32) and the
    tails: quantiles 0.99, 0.999, 0.9999 and the largest pT, |pz| and |eta|."""
    import torch

    from hepflow.flows.constraints import MomentumBound

    n = len(nu["pt"])
    theta = torch.as_tensor(np.stack([nu["px"], nu["py"], nu["eta"]], 1), dtype=torch.float32)
    outside = int((~MomentumBound([0, 1, 2], pt_max=pt_max, pz_max=pz_max).contains(theta)).sum()) if n else 0
    tails = {}
    for name, values in (("pt", nu["pt"]), ("abs_pz", np.abs(nu["pz"])), ("abs_eta", np.abs(nu["eta"]))):
        q = np.quantile(values, [0.99, 0.999, 0.9999]).tolist() if n else [np.nan] * 3
        tails[name] = {"q99": q[0], "q999": q[1], "q9999": q[2], "max": float(values.max()) if n else np.nan}
    return {
        "neutrinos": n,
        "outside": outside,
        "fraction": outside / n if n else np.nan,
        # 95 % upper limit of a Poisson mean with no event seen: 3.0 / n
        "upper_limit_95": (3.0 / n if outside == 0 else None) if n else None,
        "tails": tails,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from hepflow.neutrino.config import NeutrinoConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--config", type=Path, default=None, help="neutrino config (default: shipped)")
    args = parser.parse_args(argv)
    support = NeutrinoConfig.load(args.config).support
    parts = [truth_neutrinos(f) for f in args.files]
    nu = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    table = support_table(nu, pt_max=support.pt_max, pz_max=support.pz_max)
    print(f"{table['neutrinos']} W neutrinos in {len(args.files)} file(s)")
    print(f"{'':>8} {'99 %':>9} {'99.9 %':>9} {'99.99 %':>9} {'largest':>9}")
    for name, t in table["tails"].items():
        print(f"{name:>8} {t['q99']:>9.2f} {t['q999']:>9.2f} {t['q9999']:>9.2f} {t['max']:>9.2f}")
    limit = f" (95 % upper limit {table['upper_limit_95']:.1e})" if table["upper_limit_95"] else ""
    print(
        f"outside [support] (|px|, |py| < {support.pt_max:g}, |pz| < {support.pz_max:g} GeV): "
        f"{table['outside']} = {table['fraction']:.2e}{limit}"
    )
    return table


if __name__ == "__main__":
    main()
