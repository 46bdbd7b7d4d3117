"""Where the fast detector's pileup MET comes from: the MET of minimum-bias interactions alone.

Usage::

    python benchmarks/pileup_met.py                        # 600 crossings of 40 interactions
    python benchmarks/pileup_met.py --card                 # on the Delphes card's calorimeters
    python benchmarks/pileup_met.py --crossings 200 --pileup 20 --library 500

Compared with CMS simulation, the fast detector's MET widened with pileup by about 21 GeV^2 per
interaction and component in ttbar events with the Delphes card's calorimeters (29 +- 3 with
the shipped ones), the CMS NanoAOD samples by 1 +- 16 (docs/detector.md, "Pileup and the MET").
This script measures what each interaction adds where it starts:
crossings of ``--pileup`` minimum-bias interactions (the pileup library of ``hepflow generate
ttbar``) and nothing else go through the detector's particle measurement
(:func:`hepflow.generate.detector.measure`), and the variance of the candidates' vector sum per
component, divided by the number of interactions, is the MET each interaction adds (GeV^2).

Each row changes one thing of the detector and measures again on the same crossings, so the
differences say which part of the detector makes the pileup MET:

* ``generator level``: the visible particles within |eta| < 5 without any detector (what
  escapes beyond |eta| = 5, and neutrinos, is the floor no detector change removes);
* ``calorimeter resolution off`` (all, or by region): the towers are measured exactly, and so
  pass the ``E >= 2 sigma(E)`` cut, which uses the same resolution (the ``EnergyMin``
  thresholds stay);
* ``no smearing, cuts kept``: every measurement returns the true value (tracks too, a minor
  part), while the cuts keep their resolution;
* ``calorimeter thresholds off``: every tower is kept (its resolution stays);
* ``tracking efficiency 1``: every charged particle in the tracker has a track;
* ``Delphes card HCAL``, ``Delphes card ECAL noise``: the calorimeters of hepflow 0.x before
  the MET was matched to CMS (docs/detector.md, "Pileup and the MET"): hadrons within |eta| < 3
  measured with the card's 150 %/sqrt(E) (+) 5 % of the HCAL alone instead of the 84.7 %/sqrt(E)
  (+) 7.4 % of the CMS barrel calorimeter system (Eur. Phys. J. C 60 (2009) 359), and the card's
  ECAL noise term of 0.40 GeV instead of 0.15. ``--card`` measures every row on those
  calorimeters instead.

The error of a row is that of the crossings' variance; the library of ``--library`` events is
reused by every crossing, and other library seeds move a row by about 1 GeV^2 (seeds 7, 11, 12,
13: shipped 15.5-17.4, generator level 7.1-8.6), so compare rows of one run. Nothing is
written. The rows are what-if measurements, not detector options.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple
from unittest import mock

import numpy as np

from hepflow.generate import detector
from hepflow.generate.pileup import MinimumBiasLibrary, overlay


class Row(NamedTuple):
    """One detector variant: MET variance per interaction and component (with its statistical
    error, x and y of every crossing counted as two draws), and sumEt per interaction."""

    name: str
    variance: float
    error: float
    sum_et: float


def crossings(library: MinimumBiasLibrary, n_crossings: int, pileup: int, seed: int) -> detector.Particles:
    """``n_crossings`` events of exactly ``pileup`` library interactions each, nothing else."""
    if n_crossings < 2 or pileup < 1:
        raise ValueError(f"need at least 2 crossings of at least 1 interaction, got {n_crossings} x {pileup}")
    empty = detector.Particles(
        np.zeros(n_crossings + 1, dtype=np.int64),
        *(np.zeros(0) for _ in range(4)),
        np.zeros(0, dtype=np.int64),
        np.zeros(0),
        np.zeros(0, dtype=np.int64),
    )
    return overlay(empty, library, np.full(n_crossings, pileup), np.random.default_rng(seed))


def _per_interaction(
    name: str, event: np.ndarray, px: np.ndarray, py: np.ndarray, n: int, pileup: int
) -> Row:
    sx = np.bincount(event, weights=px, minlength=n)
    sy = np.bincount(event, weights=py, minlength=n)
    sum_et = np.bincount(event, weights=np.hypot(px, py), minlength=n).mean() / pileup
    variance = 0.5 * (sx.var(ddof=1) + sy.var(ddof=1)) / pileup
    return Row(name, float(variance), float(variance * np.sqrt(1.0 / (n - 1))), float(sum_et))


def generator_level(particles: detector.Particles, pileup: int) -> Row:
    """The visible particles within |eta| < 5 (no detector)."""
    eta = detector.pseudorapidity(particles.px, particles.py, particles.pz)
    aid = np.abs(particles.pdg_id)
    visible = ~np.isin(aid, (12, 14, 16)) & (np.abs(eta) <= detector.CALO_ETA_MAX)
    return _per_interaction(
        "generator level (visible, |eta| < 5)",
        particles.event[visible],
        particles.px[visible],
        particles.py[visible],
        particles.n_events,
        pileup,
    )


def reconstructed(particles: detector.Particles, pileup: int, name: str, *, seed: int) -> Row:
    """The candidates of :func:`~hepflow.generate.detector.measure` (the detector as patched now)."""
    c = detector.measure(particles, np.random.default_rng(seed))
    return _per_interaction(name, c.event, c.px, c.py, particles.n_events, pileup)


Resolution = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _exact_in(resolution: Resolution, lo: float, hi: float) -> Resolution:
    """``resolution`` with (nearly) no smearing for lo < |eta| <= hi."""

    def patched(energy: np.ndarray, eta: np.ndarray) -> np.ndarray:
        return np.where((np.abs(eta) > lo) & (np.abs(eta) <= hi), 1e-9, resolution(energy, eta))

    return patched


_SHIPPED_HCAL = detector.hcal_resolution
#: The Delphes CMS card's ECAL noise term, GeV.
CARD_ECAL_NOISE = 0.40


def card_hcal(energy: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """The Delphes CMS card's HCAL: sqrt(0.050^2 E^2 + 1.50^2 E) within |eta| <= 3, the HF beyond."""
    energy = np.asarray(energy, dtype=np.float64)
    card = np.sqrt(energy**2 * 0.050**2 + energy * 1.50**2)
    return np.where(np.abs(eta) <= 3.0, card, _SHIPPED_HCAL(energy, eta))


def variants() -> dict[str, dict[str, object]]:
    """Name -> the detector attributes to replace (the shipped functions as they are now)."""
    h, e = detector.hcal_resolution, detector.ecal_resolution

    def both_exact(lo: float, hi: float) -> dict[str, object]:
        return {"hcal_resolution": _exact_in(h, lo, hi), "ecal_resolution": _exact_in(e, lo, hi)}

    def all_tracked(pt: np.ndarray, eta: np.ndarray, *, kind: str) -> np.ndarray:
        return np.where((np.abs(eta) <= detector.TRACKER_ETA_MAX) & (np.asarray(pt) > 0.1), 1.0, 0.0)

    def unsmeared(mean: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(mean, dtype=np.float64)

    return {
        "detector": {},
        "no smearing, cuts kept": {"lognormal": unsmeared},
        "calorimeter resolution off": both_exact(-1.0, detector.CALO_ETA_MAX),
        "  ECAL resolution off": {"ecal_resolution": _exact_in(e, -1.0, detector.CALO_ETA_MAX)},
        "  HCAL resolution off, |eta| < 3": {"hcal_resolution": _exact_in(h, -1.0, 3.0)},
        "  calorimeters exact, |eta| < 1.5": both_exact(-1.0, 1.5),
        "  calorimeters exact, 1.5-3": both_exact(1.5, 3.0),
        "  calorimeters exact, 3-5 (HF)": both_exact(3.0, detector.CALO_ETA_MAX),
        "calorimeter thresholds off": {"HCAL_E_MIN": 0.0, "ECAL_E_MIN": 0.0, "CALO_SIGNIFICANCE_MIN": 0.0},
        "tracking efficiency 1": {"tracking_efficiency": all_tracked},
    }


#: the Delphes CMS card's calorimeters (hepflow before the MET was matched to CMS)
CARD = {"hcal_resolution": card_hcal, "ECAL_NOISE": CARD_ECAL_NOISE}
#: rows that change the shipped calorimeters back to the card's, one part at a time
CARD_ROWS = {
    "Delphes card HCAL": {"hcal_resolution": card_hcal},
    "Delphes card ECAL noise": {"ECAL_NOISE": CARD_ECAL_NOISE},
    "Delphes card HCAL and ECAL noise": CARD,
}


@contextlib.contextmanager
def patched(attributes: dict[str, object]) -> Iterator[None]:
    """Replace detector module attributes for the duration of the block."""
    with contextlib.ExitStack() as stack:
        for name, value in attributes.items():
            stack.enter_context(mock.patch.object(detector, name, value))
        yield


def decompose(particles: detector.Particles, pileup: int, *, seed: int = 2, card: bool = False) -> list[Row]:
    """The generator-level row, then one row per :func:`variants` entry, on the same crossings:
    on the shipped detector followed by the :data:`CARD_ROWS`, or (``card``) on the card's
    calorimeters."""
    rows = [generator_level(particles, pileup)]
    with patched(CARD if card else {}):
        # variants() takes the resolutions as patched here, so it is called inside
        for name, attributes in {**variants(), **({} if card else CARD_ROWS)}.items():
            with patched(attributes):
                rows.append(reconstructed(particles, pileup, name, seed=seed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crossings", type=int, default=600, help="events of pileup only")
    parser.add_argument("--pileup", type=int, default=40, help="interactions per crossing")
    parser.add_argument("--library", type=int, default=2000, help="minimum-bias library events")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--card", action="store_true", help="every row on the Delphes card's calorimeters")
    args = parser.parse_args()
    library = MinimumBiasLibrary.generate(events=args.library, seed=args.seed)
    particles = crossings(library, args.crossings, args.pileup, args.seed + 1)
    rows = decompose(particles, args.pileup, card=args.card)
    shipped = next(r for r in rows if r.name == "detector")
    print(
        f"{args.crossings} crossings x {args.pileup} minimum-bias interactions "
        f"(library of {args.library}, seed {args.seed}); detector: "
        + ("the Delphes card's calorimeters" if args.card else "shipped")
    )
    print(f"{'':40s} {'MET^2 / interaction':>20s} {'vs detector':>11s} {'sumEt / interaction':>20s}")
    print(f"{'':40s} {'[GeV^2, per comp.]':>20s} {'':>11s} {'[GeV]':>20s}")
    for r in rows:
        print(
            f"{r.name:40s} {r.variance:13.1f} +- {r.error:3.1f} {r.variance - shipped.variance:+11.1f} "
            f"{r.sum_et:20.1f}"
        )
    print(
        "(the rows share their crossings, so their differences are more precise than the errors; "
        "another library seed moves every row by about 1 GeV^2)"
    )
    floor = rows[0].variance
    print(
        f"verdict: of the {shipped.variance:.1f} GeV^2 each interaction adds, {floor:.1f} is there without "
        f"a detector (beyond |eta| 5, neutrinos) and {shipped.variance - floor:.1f} is the detector's; "
        "the rows above show which part of it."
    )


if __name__ == "__main__":
    main()
