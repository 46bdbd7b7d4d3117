"""What a full-simulation NanoAOD sample gives the neutrino training: weights, W decays, truth.

Usage::

    python benchmarks/fullsim_truth.py tests/samples/nano_tt_v12.root tests/samples/nano_tt_v15.root

Per file: the events and their ``genWeight`` (values, sum, negative ones); how the W bosons of the
generator record decay (``GenPart``: hard-process last-copy neutrinos whose first ancestor of
another species is a W, found by walking the mother indices); the events the shipped selection
keeps, those of them with a truth neutrino (W -> e nu or mu nu, what ``hepflow train neutrino``
uses) and the sums of their weights. Prints figures; the checks are in
``tests/neutrino/test_processor.py`` and ``tests/neutrino/test_fullsim_path.py``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from hepflow.neutrino.processor import NeutrinoFeatureProcessor

FROM_HARD_PROCESS, IS_LAST_COPY = 8, 13  # NanoAOD GenPart_statusFlags bits


def w_decays(path: Path) -> Counter[str]:
    """Events per set of leptonic W decays (``e``, ``mu``, ``tau``; ``hadronic`` for none)."""
    gen = uproot.open(path)["Events"].arrays(
        ["GenPart_pdgId", "GenPart_genPartIdxMother", "GenPart_statusFlags"], library="np"
    )
    names = {12: "e", 14: "mu", 16: "tau"}
    counts: Counter[str] = Counter()
    for pdg, mother, flags in zip(*gen.values(), strict=True):
        found = []
        for k in range(len(pdg)):
            hard = (flags[k] >> FROM_HARD_PROCESS) & 1 and (flags[k] >> IS_LAST_COPY) & 1
            if abs(pdg[k]) not in names or not hard:
                continue
            m = mother[k]
            while m >= 0 and pdg[m] == pdg[k]:
                m = mother[m]
            if m >= 0 and abs(pdg[m]) == 24:
                found.append(names[abs(int(pdg[k]))])
        counts[" + ".join(sorted(found)) or "hadronic"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path, help="NanoAOD files with GenPart and genWeight")
    args = parser.parse_args()
    for path in args.files:
        weight = uproot.open(path)["Events"]["genWeight"].array(library="np").astype(np.float64)
        values, counts = np.unique(weight, return_counts=True)
        print(
            f"{path}: {len(weight)} events, genWeight sum {weight.sum():.1f}, "
            f"{int((weight < 0).sum())} negative"
        )
        print("  genWeight values: " + ", ".join(f"{v:g} x{c}" for v, c in zip(values, counts, strict=True)))
        decays = w_decays(path)
        print("  leptonic W decays: " + ", ".join(f"{k} {n}" for k, n in decays.most_common()))
        events = NanoEventsFactory.from_root(
            {str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager", metadata={"filename": str(path)}
        ).events()
        cols = NeutrinoFeatureProcessor().columns(events).columns
        w = ak.to_numpy(cols.weight).astype(np.float64)
        truth = (
            ~ak.to_numpy(ak.is_none(cols.nu_px_true))
            if "nu_px_true" in cols.fields
            else np.zeros(len(cols), bool)
        )
        print(
            f"  selected {len(cols)} (sum of weights {w.sum():.1f}); "
            f"with a truth neutrino {int(truth.sum())} ({w[truth].sum():.1f})"
        )


if __name__ == "__main__":
    main()
