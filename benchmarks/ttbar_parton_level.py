"""Where does a ttbar sample's b-jet multiplicity come from? Parton-level ttbar, sample by sample.

Usage::

    python benchmarks/ttbar_parton_level.py                        # the CMS samples in tests/samples
    python benchmarks/ttbar_parton_level.py --fast tt_test.root    # and a generated sample

The domain-shift check of ``hepflow infer neutrino`` flags the number of b-tagged jets on the
CMS NanoAODv12 ttbar sample of ``tests/samples`` (2.1 per selected event against 1.7 in
training), although the per-jet b-tag rates of the fast detector and CMS agree
(docs/detector.md). This study asks whether the difference is in the detector, in the
generator (CMS: POWHEG + Pythia 8 CP5 at 13.6 TeV; hepflow: Pythia 8 Monash at 13 TeV), or in
the events of that one file, by comparing what no detector touches, per sample:

* the top quarks (``fromHardProcess``, last copy): pT;
* the b quarks from the top decays (first copy, mother a top): pT and the fraction within
  |eta| < 2.5;
* the b-flavoured generator jets in the tracker acceptance (``GenJet`` pT > 25 GeV,
  |eta| < 2.5, ``hadronFlavour == 5``) per event, the parton-level origin of ``nbjet``.

Both CMS ttbar samples (v12 semileptonic, v15 all-hadronic) are CMS simulations of the same
process at 13.6 TeV; the decay mode does not change the top and b-quark kinematics. A
two-sample Kolmogorov-Smirnov test compares every pair of samples (top and b-quark pT; the
tops of one event are not independent, so the p-values are indicative). Nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
from scipy import stats

SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "samples"
DEFAULT_CMS = {
    "CMS v12 (semileptonic)": SAMPLES / "nano_tt_v12.root",
    "CMS v15 (all-hadronic)": SAMPLES / "nano_tt_v15.root",
}
#: NanoAOD GenPart_statusFlags bits
FROM_HARD_PROCESS, IS_FIRST_COPY, IS_LAST_COPY = 8, 12, 13
BRANCHES = (
    "GenPart_pdgId",
    "GenPart_pt",
    "GenPart_eta",
    "GenPart_genPartIdxMother",
    "GenPart_statusFlags",
    "GenJet_pt",
    "GenJet_eta",
    "GenJet_hadronFlavour",
)


def parton_level(path: str | Path, *, max_events: int | None = None) -> dict[str, np.ndarray]:
    """Per sample: ``top_pt`` (every hard-process top, last copy), ``b_pt`` and ``b_eta`` (the b
    quarks from the top decays, first copy) and ``n_bgenjet`` (b-flavoured GenJets with pT > 25
    GeV and |eta| < 2.5, per event)."""
    with uproot.open(path) as f:
        g = f["Events"].arrays(list(BRANCHES), entry_stop=max_events)

    def flag(bit: int) -> ak.Array:
        return ((g.GenPart_statusFlags >> bit) & 1) == 1

    pdg = g.GenPart_pdgId
    top = (abs(pdg) == 6) & flag(FROM_HARD_PROCESS) & flag(IS_LAST_COPY)
    mother = g.GenPart_genPartIdxMother
    mother_pdg = pdg[ak.where(mother >= 0, mother, 0)]
    b = (abs(pdg) == 5) & (abs(mother_pdg) == 6) & (mother >= 0) & flag(IS_FIRST_COPY)
    in_acc = (g.GenJet_pt > 25.0) & (abs(g.GenJet_eta) < 2.5) & (g.GenJet_hadronFlavour == 5)
    return {
        "top_pt": ak.to_numpy(ak.flatten(g.GenPart_pt[top])).astype(np.float64),
        "b_pt": ak.to_numpy(ak.flatten(g.GenPart_pt[b])).astype(np.float64),
        "b_eta": ak.to_numpy(ak.flatten(g.GenPart_eta[b])).astype(np.float64),
        "n_bgenjet": ak.to_numpy(ak.sum(in_acc, axis=1)).astype(np.float64),
    }


def summarize(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Medians, the central b fraction and the mean b-GenJet count, with standard errors."""
    n_ev = len(values["n_bgenjet"])
    central = float(np.mean(np.abs(values["b_eta"]) < 2.5))
    return {
        "events": n_ev,
        "top_pt_median": float(np.median(values["top_pt"])),
        "b_pt_median": float(np.median(values["b_pt"])),
        "b_central": central,
        "b_central_se": float(np.sqrt(central * (1 - central) / max(len(values["b_eta"]), 1))),
        "n_bgenjet": float(np.mean(values["n_bgenjet"])),
        "n_bgenjet_se": float(np.std(values["n_bgenjet"], ddof=1) / np.sqrt(max(n_ev, 1))),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fast", nargs="*", default=[], help="generated ttbar files (hepflow generate ttbar)"
    )
    parser.add_argument("--max-events", type=int, default=None, help="per file")
    args = parser.parse_args(argv)
    samples = {name: str(path) for name, path in DEFAULT_CMS.items()}
    samples.update({f"hepflow {Path(p).name}": p for p in args.fast})
    values = {name: parton_level(path, max_events=args.max_events) for name, path in samples.items()}
    table = {name: summarize(v) for name, v in values.items()}
    print(
        "| sample | events | top pT median [GeV] | b pT median [GeV] | b within abs(eta) < 2.5 "
        "| b GenJets in acceptance per event |\n|---|---|---|---|---|---|"
    )
    for name, s in table.items():
        print(
            f"| {name} | {s['events']} | {s['top_pt_median']:.0f} | {s['b_pt_median']:.0f} "
            f"| {s['b_central']:.3f} +- {s['b_central_se']:.3f} "
            f"| {s['n_bgenjet']:.2f} +- {s['n_bgenjet_se']:.2f} |"
        )
    print("\nKolmogorov-Smirnov p-values (top pT, b pT):")
    for a, b in itertools.combinations(values, 2):
        p_top = stats.ks_2samp(values[a]["top_pt"], values[b]["top_pt"]).pvalue
        p_b = stats.ks_2samp(values[a]["b_pt"], values[b]["b_pt"]).pvalue
        print(f"  {a} vs {b}: {p_top:.2g}, {p_b:.2g}")
    return table


if __name__ == "__main__":
    main()
