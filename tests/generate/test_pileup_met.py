"""The pileup-MET decomposition benchmark (benchmarks/pileup_met.py) on libraries with known MET."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.generate import detector
from hepflow.generate.pileup import MinimumBiasLibrary
from tests.conftest import load_benchmark

bench = load_benchmark("pileup_met")


def pair_library(pdg_id: int, pt: float, n: int = 50) -> MinimumBiasLibrary:
    """``n`` interactions of two particles of transverse momentum ``pt``, back to back at eta 0:
    balanced, so whatever MET they leave is the detector's."""
    px = np.tile([pt, -pt], n)
    zeros = np.zeros(2 * n)
    return MinimumBiasLibrary(
        np.arange(0, 2 * n + 1, 2), px, zeros, zeros, np.abs(px), np.full(2 * n, pdg_id), zeros
    )


def by_name(rows: list) -> dict:
    return {r.name.strip(): r for r in rows}


def test_photon_pairs_leave_only_the_ecal_resolution() -> None:
    particles = bench.crossings(pair_library(22, 10.0), 400, 5, seed=1)
    rows = by_name(bench.decompose(particles, 5))
    assert rows["generator level (visible, |eta| < 5)"].variance == pytest.approx(0.0, abs=1e-12)
    # towers well above threshold: without resolution the detector is exact
    assert rows["calorimeter resolution off"].variance == pytest.approx(0.0, abs=1e-6)
    # each photon of 10 GeV is measured to about 0.6 GeV (barrel ECAL), and x gets half of it
    shipped = rows["detector"]
    expected = 2 * detector.ecal_resolution(np.array([10.0]), np.array([0.0]))[0] ** 2 / 2
    assert shipped.variance == pytest.approx(expected, rel=0.25)
    assert shipped.sum_et == pytest.approx(20.0, rel=0.05)


def test_neutral_hadrons_show_the_hadron_resolution_and_the_card_hcal_loses_towers() -> None:
    particles = bench.crossings(pair_library(130, 10.0), 400, 5, seed=2)
    rows = by_name(bench.decompose(particles, 5))
    gen = rows["generator level (visible, |eta| < 5)"].variance
    shipped, card = rows["detector"].variance, rows["Delphes card HCAL"].variance
    off = rows["HCAL resolution off, |eta| < 3"].variance
    assert gen == pytest.approx(0.0, abs=1e-12)
    assert off == pytest.approx(0.0, abs=1e-6)
    # shipped: 0.85 sqrt(10) (+) 0.74 = 2.8 GeV on each 10 GeV hadron, nearly every tower kept:
    # two independent measurements, half of each variance in x
    sigma = detector.hcal_resolution(np.array([10.0]), np.zeros(1))[0]
    assert shipped == pytest.approx(sigma**2, rel=0.3)
    assert rows["detector"].sum_et == pytest.approx(20.0, rel=0.1)
    # the card's 1.5 sqrt(10) = 4.7 GeV, and its 2-sigma cut (about 9 GeV) drops towers
    assert card > 1.5 * shipped
    assert rows["Delphes card HCAL"].sum_et < 0.85 * rows["detector"].sum_et
    # the ECAL noise does not touch hadrons
    assert rows["Delphes card ECAL noise"].variance == pytest.approx(shipped, rel=1e-9)


def test_patched_detector_is_restored_and_bad_sizes_are_refused() -> None:
    before, noise = detector.hcal_resolution, detector.ECAL_NOISE
    with bench.patched({"hcal_resolution": bench.card_hcal, "ECAL_NOISE": 0.4}):
        assert detector.hcal_resolution is bench.card_hcal
        assert detector.ecal_resolution(np.array([0.0]), np.array([0.0]))[0] == pytest.approx(0.4)
    assert detector.hcal_resolution is before
    assert noise == detector.ECAL_NOISE
    # beyond |eta| 3 the card's variant keeps the forward calorimeter (the card's, shipped)
    assert bench.card_hcal(np.array([50.0]), np.array([4.0])) == pytest.approx(
        detector.hcal_resolution(np.array([50.0]), np.array([4.0]))
    )
    with pytest.raises(ValueError, match="at least 2 crossings"):
        bench.crossings(pair_library(22, 1.0), 1, 5, seed=0)


def test_card_option_measures_every_row_on_the_card_calorimeters() -> None:
    particles = bench.crossings(pair_library(130, 8.0), 200, 5, seed=3)
    shipped = by_name(bench.decompose(particles, 5))
    card = by_name(bench.decompose(particles, 5, card=True))
    assert "Delphes card HCAL" not in card
    assert card["detector"].variance == pytest.approx(shipped["Delphes card HCAL and ECAL noise"].variance)
    # measured exactly, an 8 GeV hadron fails the card's cut (2 sigma = 8.5 GeV) but passes the
    # shipped one (2 sigma = 4.9 GeV), unless two share a tower; with the resolution off the cut
    # goes too
    assert card["no smearing, cuts kept"].sum_et < 0.2 * card["calorimeter resolution off"].sum_et
    assert shipped["no smearing, cuts kept"].sum_et == pytest.approx(16.0, rel=0.02)
