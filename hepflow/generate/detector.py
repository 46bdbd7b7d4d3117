"""A fast CMS-like detector response, modelled on the Delphes CMS card.

Every stable visible particle is measured once, the way the particle-flow reconstruction of
the Delphes CMS card (``cards/delphes_card_CMS.tcl``) sees it: charged particles inside the
tracker as tracks (tracking efficiency, momentum resolution), photons and untracked electrons
in the ECAL, neutral and untracked charged hadrons in the HCAL (energy resolution, energy
threshold); muons only as tracks. The measured particles (the "PF candidates") then give

* electrons and muons (reconstruction efficiency, relative isolation in a cone),
* anti-kt R = 0.4 jets (FastJet) from all candidates except the selected isolated leptons,
  with the Delphes jet energy scale correction, flavour from ghost-associated heavy-flavour
  hadrons and partons, and b-tagging with the Delphes efficiencies and mistag rates,
* missing transverse momentum, the negative vector sum of all candidates with the jet
  corrections propagated (type-1).

The formulas, their sources and the reasons for each choice are in ``docs/detector.md``. All
randomness comes from the :class:`numpy.random.Generator` passed in, so a seed fixes the output.

Example:
    >>> import numpy as np
    >>> round(float(jet_energy_scale(np.array([30.0]), np.array([0.0]))[0]), 4)
    1.0992
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import awkward as ak
import numpy as np

#: Medium working point of DeepJet (``btagDeepFlavB``), CMS Run 2 UL 2018, used for the score.
BTAG_MEDIUM_WP = 0.2783
#: Transverse momentum above which jets are kept (after the energy scale correction), GeV.
JET_PT_MIN = 15.0
#: Anti-kt distance parameter.
JET_R = 0.4
#: Area of a hard anti-kt jet, pi R^2, for the pileup offset rho * A.
JET_AREA = np.pi * JET_R**2
#: Grid of the median energy density rho (FastJet ``GridMedianBackgroundEstimator(5.0, 0.55)``,
#: CMS ``fixedGridRhoFastjetAll``): 18 x 11 cells over |eta| < 5 and the full azimuth.
RHO_ETA_MAX = 5.0
RHO_ETA_CELLS = 18
RHO_PHI_CELLS = 11
#: Raw (uncorrected) jet pT pre-selection, GeV: a raw jet needs about 12 GeV to pass
#: ``JET_PT_MIN`` after the energy scale correction, so this cut loses none.
_RAW_JET_PT_MIN = 10.0
#: Calorimeter acceptance |eta| (ECAL + HF).
CALO_ETA_MAX = 5.0
#: Tracker acceptance |eta|.
TRACKER_ETA_MAX = 2.5
#: upper |eta| of the region just outside the tracker whose jets get
#: :data:`JET_TRANSITION_EXTRA` (the endcap calorimeters' edge, where HF begins)
JET_TRANSITION_ETA_MAX = 3.0
#: relative jet resolution added at 2.5 <= |eta| < 3, fitted so that the jets above 30 GeV have
#: the CMS NanoAOD resolution there, 0.306 +- 0.043 from 63 jets (docs/detector.md)
JET_TRANSITION_EXTRA = 0.25
#: Electron and muon reconstruction threshold, GeV (the Delphes efficiencies vanish below).
LEPTON_PT_MIN = 10.0
#: Cone sizes of the relative isolation (``pfRelIso03_all`` and ``pfRelIso04_all``).
ELECTRON_ISO_CONE = 0.3
MUON_ISO_CONE = 0.4
#: Candidates below this pT do not enter the isolation sums (Delphes ``PTMin``), GeV.
ISO_PT_MIN = 0.5
#: Relative isolation below which a prompt (tight) lepton is "selected": kept out of the jet
#: inputs (Delphes ``PTRatioMax`` of the CMS card).
ELECTRON_ISO_MAX = 0.12
MUON_ISO_MAX = 0.25
#: Noise term of the ECAL resolution, GeV: the ECAL's own, about 0.15 GeV (the design value at
#: low luminosity, CMS ECAL TDR, CERN/LHCC 97-33), where the Delphes card's 0.40 GeV describes
#: in-situ photons with the pileup of their collisions in it; pileup is overlaid here instead.
ECAL_NOISE = 0.15
#: Resolution of untracked hadrons within |eta| <= 3, sqrt(C^2 E^2 + S^2 E): the CMS barrel
#: calorimeter system (ECAL + HCAL) in the test beam, Eur. Phys. J. C 60 (2009) 359.
HADRON_STOCHASTIC = 0.847
HADRON_CONSTANT = 0.074
#: Calorimeter energy thresholds of the Delphes CMS card (``EnergyMin``), GeV.
ECAL_E_MIN = 0.5
HCAL_E_MIN = 1.0
#: ... and minimum significance E / sigma(E) (``EnergySignificanceMin``), both applied per
#: calorimeter tower to the smeared tower energy, the significance with sigma at that energy.
CALO_SIGNIFICANCE_MIN = 2.0
#: Calorimeter tower grid of the Delphes CMS card (module ``Calorimeter``): upper |eta| edges of
#: the rings, each with its number of phi sectors: 0.087 x 5 degrees up to |eta| 1.653, 10
#: degrees up to 4.525, 20 degrees up to 5 (HF). ECAL and HCAL share the grid.
TOWER_ETA_EDGES = np.r_[
    np.arange(20) * 0.087,
    [1.74, 1.83, 1.93, 2.043, 2.172, 2.322, 2.5, 2.65, 2.868, 2.95],
    [3.125, 3.3, 3.475, 3.65, 3.825, 4.0, 4.175, 4.35, 4.525, 4.7, 5.0],
]
TOWER_PHI_SECTORS = np.select(
    [TOWER_ETA_EDGES[1:] <= 1.654, TOWER_ETA_EDGES[1:] <= 4.526], [72, 36], 18
).astype(np.int64)

ELECTRON_MASS = 0.000511
MUON_MASS = 0.1056584
_ETA_CAP = 1.0e6  # eta of a particle along the beam (pT = 0), kept finite

# Track momentum resolution sigma(pT)/pT = sqrt(a^2 + (b pT)^2) per |eta| bin (upper edge, a, b),
# Delphes CMS card modules ChargedHadron-, Electron- and MuonMomentumSmearing (arXiv:1405.6569).
_TRACK_RESOLUTION = {
    "hadron": ((0.5, 0.01, 1.5e-4), (1.5, 0.015, 2.5e-4), (2.5, 0.025, 5.5e-4)),
    "electron": ((0.5, 0.03, 1.3e-3), (1.5, 0.05, 1.7e-3), (2.5, 0.15, 3.1e-3)),
    "muon": ((0.5, 0.01, 1.0e-4), (1.5, 0.015, 1.5e-4), (2.5, 0.025, 3.5e-4)),
}
# Tracking efficiency per |eta| bin (upper edge, 0.1 < pT <= 1, 1 < pT <= 100, pT > 100 GeV),
# Delphes CMS card modules ChargedHadron-, Electron- and MuonTrackingEfficiency.
_TRACKING_EFFICIENCY = {
    "hadron": ((1.5, 0.70, 0.95, 0.95), (2.5, 0.60, 0.85, 0.85)),
    "electron": ((1.5, 0.73, 0.95, 0.99), (2.5, 0.50, 0.83, 0.90)),
    "muon": ((1.5, 0.75, 0.99, 0.99), (2.5, 0.70, 0.98, 0.98)),
}


@dataclass(frozen=True)
class Particles:
    """Stable generator-level particles of a batch of events, flattened.

    Rows ``offsets[k]:offsets[k + 1]`` belong to event ``k``. ``genpart_idx`` links a particle to
    its entry in the event's pruned ``GenPart`` list (-1 for all but the prompt lepton).
    ``pileup`` marks particles of overlaid pileup interactions (``None``: none are).
    """

    offsets: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pdg_id: np.ndarray
    charge: np.ndarray
    genpart_idx: np.ndarray
    pileup: np.ndarray | None = None

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def event(self) -> np.ndarray:
        """Event number (0-based, within the batch) of every row."""
        return np.repeat(np.arange(self.n_events), np.diff(self.offsets))


@dataclass(frozen=True)
class Ghosts:
    """Generator-level objects that label jets by ghost association, flattened like :class:`Particles`.

    ``hadron_flavour`` is 5 for a weakly decaying B hadron, 4 for a C hadron, 0 for a parton;
    ``parton_flavour`` is the signed PDG id of the (heavy or light) quark the ghost stands for.
    """

    offsets: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    hadron_flavour: np.ndarray
    parton_flavour: np.ndarray


# --- parametrisations ----------------------------------------------------------------------


def ecal_resolution(energy: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Absolute ECAL energy resolution sigma(E) in GeV (Delphes CMS card, module ``ECal``, with the
    noise term of the ECAL itself).

    |eta| <= 1.5: (1 + 0.64 eta^2) sqrt(0.008^2 E^2 + 0.11^2 E + N^2);
    1.5 < |eta| <= 2.5: (2.16 + 5.6 (|eta| - 2)^2) sqrt(same); 2.5 < |eta| <= 5: sqrt(0.107^2 E^2 +
    2.08^2 E); 0 outside. N = :data:`ECAL_NOISE` (0.15 GeV) where the card has 0.40 GeV: the
    card's in-situ value has the pileup energy of its collisions folded in, which this detector
    overlays particle by particle (docs/detector.md, "Pileup and the MET").

    Example:
        >>> np.round(ecal_resolution(np.array([0.5, 10.0, 10.0]), np.array([0.0, 0.0, 4.0])), 3).tolist()
        [0.169, 0.387, 6.664]
    """
    energy, aeta = np.asarray(energy, dtype=np.float64), np.abs(eta)
    core = np.sqrt(energy**2 * 0.008**2 + energy * 0.11**2 + ECAL_NOISE**2)
    forward = np.sqrt(energy**2 * 0.107**2 + energy * 2.08**2)
    return np.select(
        [aeta <= 1.5, aeta <= 2.5, aeta <= CALO_ETA_MAX],
        [(1.0 + 0.64 * aeta**2) * core, (2.16 + 5.6 * (aeta - 2.0) ** 2) * core, forward],
        0.0,
    )


def hcal_resolution(energy: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Absolute energy resolution sigma(E) in GeV for hadrons without a track.

    |eta| <= 3: sqrt(0.074^2 E^2 + 0.847^2 E), the CMS barrel calorimeter system (ECAL + HCAL)
    measured for hadrons in the test beam (Eur. Phys. J. C 60 (2009) 359: 84.7 +- 1.6 %/sqrt(E),
    7.4 +- 0.8 %), as particle flow calibrates a neutral hadron's ECAL and HCAL deposits together;
    the Delphes CMS card has sqrt(0.050^2 E^2 + 1.50^2 E), for the HCAL alone. 3 < |eta| <= 5
    (HF): sqrt(0.130^2 E^2 + 2.70^2 E), the card's; 0 outside.

    Example:
        >>> np.round(hcal_resolution(np.array([10.0, 10.0]), np.array([0.0, 4.0])), 3).tolist()
        [2.779, 8.637]
    """
    energy, aeta = np.asarray(energy, dtype=np.float64), np.abs(eta)
    return np.select(
        [aeta <= 3.0, aeta <= CALO_ETA_MAX],
        [
            np.sqrt(energy**2 * HADRON_CONSTANT**2 + energy * HADRON_STOCHASTIC**2),
            np.sqrt(energy**2 * 0.130**2 + energy * 2.70**2),
        ],
        0.0,
    )


def calorimeter_description() -> str:
    """The calorimeter resolutions that differ from the Delphes CMS card, in one line: what a
    model card records, so that a model trained on another version of this detector says so.

    Example:
        >>> calorimeter_description()
        'hadrons within |eta| < 3: 84.7 %/sqrt(E) (+) 7.4 %; ECAL noise term 0.15 GeV'
    """
    return (
        f"hadrons within |eta| < 3: {100 * HADRON_STOCHASTIC:g} %/sqrt(E) (+) {100 * HADRON_CONSTANT:g} %; "
        f"ECAL noise term {ECAL_NOISE:g} GeV"
    )


def track_resolution(pt: np.ndarray, eta: np.ndarray, *, kind: str) -> np.ndarray:
    """Relative track momentum resolution sigma(pT)/pT for ``kind`` "hadron", "electron" or "muon".

    sqrt(a^2 + (b pT)^2) with (a, b) per |eta| bin from the Delphes CMS card, e.g. muons with
    |eta| <= 0.5: a = 0.01, b = 1e-4 / GeV; 0 outside the tracker (|eta| > 2.5).
    """
    pt, aeta = np.asarray(pt, dtype=np.float64), np.abs(eta)
    conditions, values, low = [], [], -1.0
    for edge, a, b in _TRACK_RESOLUTION[kind]:
        conditions.append((aeta > low) & (aeta <= edge))
        values.append(np.sqrt(a**2 + (b * pt) ** 2))
        low = edge
    return np.select(conditions, values, 0.0)


def tracking_efficiency(pt: np.ndarray, eta: np.ndarray, *, kind: str) -> np.ndarray:
    """Probability that a charged particle of ``kind`` ("hadron", "electron", "muon") leaves a track.

    Piecewise constant in pT (0.1-1, 1-100, > 100 GeV) and |eta| (<= 1.5, 1.5-2.5) as in the
    Delphes CMS card; 0 below 0.1 GeV and outside the tracker.
    """
    pt, aeta = np.asarray(pt, dtype=np.float64), np.abs(eta)
    eff = np.zeros(np.broadcast(pt, aeta).shape)
    low = -1.0
    for edge, soft, mid, hard in _TRACKING_EFFICIENCY[kind]:
        in_bin = (aeta > low) & (aeta <= edge)
        eff = np.where(in_bin & (pt > 0.1), np.select([pt <= 1.0, pt <= 100.0], [soft, mid], hard), eff)
        low = edge
    return eff


def electron_efficiency(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Electron identification efficiency (Delphes CMS card, ``ElectronEfficiency``).

    0.95 for |eta| <= 1.5, 0.85 for 1.5 < |eta| <= 2.5, for pT > 10 GeV; 0 otherwise.
    """
    aeta = np.abs(eta)
    eff = np.select([aeta <= 1.5, aeta <= TRACKER_ETA_MAX], [0.95, 0.85], 0.0)
    return np.where(np.asarray(pt) > LEPTON_PT_MIN, eff, 0.0)


def muon_efficiency(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Muon identification efficiency (Delphes CMS card, ``MuonEfficiency``).

    0.95 for 10 < pT <= 1000 GeV and 0.95 exp(0.5 - 5e-4 pT) above, for |eta| <= 2.4; 0 otherwise.
    """
    pt = np.asarray(pt, dtype=np.float64)
    eff = np.where(pt <= 1000.0, 0.95, 0.95 * np.exp(0.5 - pt * 5.0e-4))
    return np.where((pt > LEPTON_PT_MIN) & (np.abs(eta) <= 2.4), eff, 0.0)


def jet_energy_scale(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Jet energy scale correction factor (Delphes CMS card, ``JetEnergyScale``).

    sqrt((2.5 - 0.15 |eta|)^2 / pT + 1), applied to the four-momentum of the raw jet.
    """
    pt = np.asarray(pt, dtype=np.float64)
    return np.sqrt((2.5 - 0.15 * np.abs(eta)) ** 2 / pt + 1.0)


def _by_region(eta: np.ndarray, barrel: float, endcap: float, forward: float) -> np.ndarray:
    """``barrel`` for |eta| < 1.3, ``endcap`` up to the tracker's edge (2.5), ``forward`` beyond."""
    aeta = np.abs(eta)
    return np.select([aeta < 1.3, aeta < TRACKER_ETA_MAX], [barrel, endcap], forward)


def jet_residual_scale(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Residual jet correction after L1 and the Delphes energy scale, from this detector's MC truth.

    1 / (c0 - c1 / pT) with (c0, c1 / GeV) = (1.002, 1.4) for |eta| < 1.3, (0.976, 0) for
    1.3 <= |eta| < 2.5 and (0.92, 0) beyond. In the barrel it makes the median response pT /
    GenJet pT of ttbar jets with the default pileup 1 (1.02-1.03 before; fitted again after the
    calorimeter resolutions were matched to CMS, docs/detector.md), as CMS calibrates its jets to
    MC truth. The endcap and forward values were fitted the same way to the per-particle
    calorimeter; with the tower calorimeter they leave a response of 1.02-1.04 and 1.06-1.08,
    which is what the CMS NanoAOD jets show against their GenJets there (1.01-1.06 and
    1.03-1.16, docs/detector.md), so they are kept.

    Example:
        >>> pt, eta = np.array([40.0, 40.0, 40.0]), np.array([0.0, 2.0, 3.5])
        >>> np.round(jet_residual_scale(pt, eta), 4).tolist()
        [1.0341, 1.0246, 1.087]
    """
    pt = np.asarray(pt, dtype=np.float64)
    c0, c1 = _by_region(eta, 1.002, 0.976, 0.92), _by_region(eta, 1.4, 0.0, 0.0)
    return 1.0 / (c0 - c1 / np.maximum(pt, 10.0))


def btag_efficiency(pt: np.ndarray, hadron_flavour: np.ndarray) -> np.ndarray:
    """b-tagging probability at ``btagDeepFlavB > 0.2783``, by hadron flavour and jet pT.

    b (5): 0.87 - 0.27 exp(-pT / 25 GeV); c (4): 0.21; light (0): 0.01 + 3.8e-5 pT. The b and c
    rates are fits to the CMS NanoAOD ttbar and Drell-Yan simulation (docs/detector.md,
    "Compared with CMS simulation": b 0.76-0.89 from 20 to 400 GeV, c 0.21 +- 0.02, chi2 1.4
    and 2.8 for 3 and 4 degrees of freedom); the light rate is the Delphes CMS card's
    (arXiv:1211.4462), which agrees with CMS. The card's b and c rates (0.55-0.71 and 0.1-0.25,
    a 2012 tagger) were 3-7 standard deviations below CMS.

    Example:
        >>> pt, flavour = np.array([25.0, 100.0, 100.0, 100.0]), np.array([5, 5, 4, 0])
        >>> np.round(btag_efficiency(pt, flavour), 4).tolist()
        [0.7707, 0.8651, 0.21, 0.0138]
    """
    pt = np.asarray(pt, dtype=np.float64)
    b = 0.87 - 0.27 * np.exp(-pt / 25.0)
    c = np.full_like(pt, 0.21)
    light = 0.01 + 3.8e-5 * pt
    return np.select([hadron_flavour == 5, hadron_flavour == 4], [b, c], light)


def jet_extra_resolution(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Relative jet pT resolution added on top of the constituent measurements.

    sigma/pT = sqrt(S^2 / pT + C^2) with (S, C) = (0.55 GeV^1/2, 0.092) for |eta| < 1.3,
    (1.16 GeV^1/2, 0.076) for 1.3 <= |eta| < 2.5, (0, :data:`JET_TRANSITION_EXTRA`) for
    2.5 <= |eta| < 3 and none beyond: the quadrature difference between the CMS NanoAOD
    simulation's jet resolution and this detector's with pileup, fitted in bins of GenJet pT
    (docs/detector.md; at 2.5-3, just outside the tracker, one number for jets above 30 GeV:
    CMS 0.306 +- 0.043 from 63 jets, this detector 0.133 without it). It stands for what
    particle-level smearing leaves out: calorimeter non-linearity and non-compensation,
    out-of-cone showering, flavour and neutrino content, pileup fluctuations inside the jet (the
    CMS samples use PUPPI jets).
    Applied like the Delphes ``JetMomentumSmearing`` module of the later CMS cards.

    Example:
        >>> pt, eta = np.array([30.0, 30.0, 30.0, 30.0]), np.array([0.0, 2.0, 2.7, 3.0])
        >>> np.round(jet_extra_resolution(pt, eta), 4).tolist()
        [0.1362, 0.225, 0.25, 0.0]
    """
    pt = np.asarray(pt, dtype=np.float64)
    s, c = _by_region(eta, 0.55, 1.16, 0.0), _by_region(eta, 0.092, 0.076, 0.0)
    aeta = np.abs(eta)
    c = np.where((aeta >= TRACKER_ETA_MAX) & (aeta < JET_TRANSITION_ETA_MAX), JET_TRANSITION_EXTRA, c)
    return np.sqrt(s**2 / np.where(pt > 0, pt, 1.0) + c**2)


def btag_score(tagged: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A DeepJet-like ``btagDeepFlavB`` score that reproduces the tag decision at the medium WP.

    Tagged jets: WP + (1 - WP) Beta(3, 1), peaked at 1; untagged: WP Beta(1, 3), peaked at 0.
    """
    tagged = np.asarray(tagged, dtype=bool)
    high = BTAG_MEDIUM_WP + (1.0 - BTAG_MEDIUM_WP) * rng.beta(3.0, 1.0, size=tagged.shape)
    low = BTAG_MEDIUM_WP * rng.beta(1.0, 3.0, size=tagged.shape)
    # keep both sides of the working point apart after the cast to float32
    wp = np.float32(BTAG_MEDIUM_WP)
    return np.where(tagged, np.maximum(high, wp), np.minimum(low, np.nextafter(wp, np.float32(0))))


def lognormal(mean: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw from a log-normal distribution of given mean and standard deviation (Delphes ``LogNormal``).

    Used for every energy and momentum measurement: it has the requested mean and width and is
    positive. Entries with ``mean <= 0`` or ``sigma == 0`` are returned unchanged.
    """
    mean, sigma = np.broadcast_arrays(np.asarray(mean, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    ok = (mean > 0.0) & (sigma > 0.0)
    ratio = np.where(ok, sigma / np.where(ok, mean, 1.0), 0.0)
    b = np.sqrt(np.log1p(ratio**2))
    a = np.log(np.where(ok, mean, 1.0)) - 0.5 * b**2
    draw = np.exp(a + b * rng.standard_normal(mean.shape))
    return np.where(ok, draw, mean)


def missing_et(
    px: np.ndarray, py: np.ndarray, event: np.ndarray, n_events: int
) -> tuple[np.ndarray, np.ndarray]:
    """(pT, phi) of the negative vector sum of the objects ``(px, py)`` of each event.

    Example:
        >>> pt, phi = missing_et(np.array([3.0, 0.0]), np.array([4.0, -2.0]), np.array([0, 1]), 2)
        >>> pt.tolist(), phi.round(3).tolist()
        ([5.0, 2.0], [-2.214, 1.571])
    """
    mex = -np.bincount(event, weights=px, minlength=n_events)
    mey = -np.bincount(event, weights=py, minlength=n_events)
    return np.hypot(mex, mey), np.arctan2(mey, mex)


def pseudorapidity(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """eta = asinh(pz / pT), finite (+-1e6) for particles along the beam."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
    return np.where(pt > 0.0, eta, np.copysign(_ETA_CAP, pz))


def delta_phi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b wrapped into [-pi, pi)."""
    return (a - b + np.pi) % (2.0 * np.pi) - np.pi


# --- reconstruction ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidates:
    """Measured particles (PF candidates), flattened.

    ``source`` is the row of the particle in :class:`Particles`; ``track`` tells tracks from
    calorimeter deposits.
    """

    event: np.ndarray
    source: np.ndarray
    track: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray

    # cached: with pileup a batch holds millions of candidates, and isolation, both leptons and
    # the three density medians each need them
    @cached_property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @cached_property
    def eta(self) -> np.ndarray:
        return pseudorapidity(self.px, self.py, self.pz)

    def take(self, rows: np.ndarray) -> _Candidates:
        return _Candidates(
            self.event[rows],
            self.source[rows],
            self.track[rows],
            self.px[rows],
            self.py[rows],
            self.pz[rows],
            self.e[rows],
        )


def measure(particles: Particles, rng: np.random.Generator) -> _Candidates:
    """Turn generator-level particles into PF candidates: efficiencies, resolutions, thresholds.

    A track is the particle's four-momentum scaled by the smeared momentum; untracked visible
    particles go to the calorimeter towers of :func:`calorimeter_towers` (summed per tower,
    smeared, Delphes thresholds on the tower). Neutrinos and muons without a track leave
    nothing. The candidates are ordered by event, tracks before towers.
    """
    px, py, pz, e = particles.px, particles.py, particles.pz, particles.e
    pt = np.hypot(px, py)
    eta = pseudorapidity(px, py, pz)
    aid = np.abs(particles.pdg_id)
    is_mu, is_e = aid == 13, aid == 11
    invisible = (aid == 12) | (aid == 14) | (aid == 16)

    def by_kind(function: Callable[..., np.ndarray]) -> np.ndarray:
        return np.select(
            [is_mu, is_e],
            [function(pt, eta, kind="muon"), function(pt, eta, kind="electron")],
            function(pt, eta, kind="hadron"),
        )

    track = (particles.charge != 0) & ~invisible & (rng.random(len(pt)) < by_kind(tracking_efficiency))
    track_res = by_kind(track_resolution)
    track_e = e * lognormal(np.ones_like(e), track_res, rng)

    # electrons with a track: inverse-variance mean of the track and their own ECAL cluster
    ecal_sigma = ecal_resolution(e, eta)
    track_var, ecal_var = (track_res * e) ** 2, ecal_sigma**2
    both = track & is_e & (track_var > 0) & (ecal_var > 0)
    cluster_e = lognormal(np.where(both, e, 0.0), np.where(both, ecal_sigma, 0.0), rng)
    weight = np.where(both, track_var / np.where(both, track_var + ecal_var, 1.0), 0.0)  # of the ECAL
    track_e = np.where(both, (1.0 - weight) * track_e + weight * cluster_e, track_e)
    rows = np.flatnonzero(track)
    factor = (track_e / np.where(e > 0, e, 1.0))[rows]
    tracks = _Candidates(
        event=particles.event[rows],
        source=rows,
        track=np.ones(len(rows), dtype=bool),
        px=px[rows] * factor,
        py=py[rows] * factor,
        pz=pz[rows] * factor,
        e=track_e[rows],
    )

    # calorimeters: photons and electrons without a track in the ECAL, all other visible
    # particles without a track in the HCAL, muons nowhere; summed per tower, then measured
    in_calo = np.abs(eta) <= CALO_ETA_MAX
    ecal = in_calo & ~track & ((aid == 22) | is_e)
    hcal = in_calo & ~track & ~invisible & ~is_mu & ~ecal
    towers = calorimeter_towers(particles, eta, ecal=ecal, hcal=hcal, rng=rng)
    order = np.argsort(np.r_[tracks.event, towers.event], kind="stable")
    return _Candidates(
        *(np.r_[getattr(tracks, f), getattr(towers, f)][order] for f in _Candidates.__dataclass_fields__)
    )


def calorimeter_towers(
    particles: Particles, eta: np.ndarray, *, ecal: np.ndarray, hcal: np.ndarray, rng: np.random.Generator
) -> _Candidates:
    """ECAL and HCAL towers: the energy of the particles ``ecal`` / ``hcal`` summed per tower of
    the Delphes CMS grid (:data:`TOWER_ETA_EDGES`, :data:`TOWER_PHI_SECTORS`), smeared with the
    resolution at the tower's energy and kept above :data:`ECAL_E_MIN` / :data:`HCAL_E_MIN` and
    :data:`CALO_SIGNIFICANCE_MIN` sigma (evaluated at the measured energy), as the Delphes
    ``Calorimeter`` module does. A tower is a massless deposit along the summed momentum of its
    particles (the energy-weighted position of a particle-flow cluster, where Delphes uses the
    cell); its ``source`` is its most energetic particle.

    Summing before the threshold is what keeps soft neutral energy: a particle far below the
    threshold still counts when its tower passes, and a tower passes on its summed energy, not
    on an upward fluctuation of one particle's measurement.

    Example:
        >>> import numpy as np
        >>> p = Particles(np.array([0, 2]), np.array([0.6, 0.6]), np.zeros(2), np.zeros(2),
        ...               np.array([0.6, 0.6]), np.array([22, 22]), np.zeros(2), -np.ones(2, int))
        >>> t = calorimeter_towers(p, np.zeros(2), ecal=np.ones(2, bool), hcal=np.zeros(2, bool),
        ...                        rng=np.random.default_rng(0))
        >>> len(t.e)  # two 0.6 GeV photons in one tower: one deposit
        1
    """
    rows = np.flatnonzero(ecal | hcal)
    if len(rows) == 0:
        empty = np.zeros(0)
        return _Candidates(rows, rows, np.zeros(0, dtype=bool), empty, empty, empty, empty)
    aeta = np.abs(eta[rows])
    n_rings = len(TOWER_PHI_SECTORS)
    ring = np.clip(np.searchsorted(TOWER_ETA_EDGES, aeta, side="right") - 1, 0, n_rings - 1)
    sectors = TOWER_PHI_SECTORS[ring]
    phi = np.arctan2(particles.py[rows], particles.px[rows])
    sector = np.minimum(np.floor((phi + np.pi) / (2 * np.pi) * sectors).astype(np.int64), sectors - 1)
    side = (eta[rows] >= 0).astype(np.int64)
    layer = hcal[rows].astype(np.int64)
    event = particles.event[rows]
    key = (((event * 2 + layer) * 2 + side) * n_rings + ring) * int(TOWER_PHI_SECTORS.max()) + sector
    # one tower per distinct key; its most energetic particle first
    order = np.lexsort((-particles.e[rows], key))
    key = key[order]
    first = np.r_[True, key[1:] != key[:-1]]
    tower_of = np.cumsum(first) - 1
    lead = order[first]
    true_e = np.bincount(tower_of, weights=particles.e[rows][order])
    t_ring, t_hcal = ring[lead], layer[lead] == 1
    centre = (
        np.where(side[lead] == 1, 1.0, -1.0) * 0.5 * (TOWER_ETA_EDGES[t_ring] + TOWER_ETA_EDGES[t_ring + 1])
    )

    def sigma(energy: np.ndarray) -> np.ndarray:
        return np.where(t_hcal, hcal_resolution(energy, centre), ecal_resolution(energy, centre))

    measured = lognormal(true_e, sigma(true_e), rng)
    kept = (measured >= np.where(t_hcal, HCAL_E_MIN, ECAL_E_MIN)) & (
        measured >= CALO_SIGNIFICANCE_MIN * sigma(measured)
    )
    # direction: the summed momentum of the tower's particles (the energy-weighted position of a
    # particle-flow cluster), so a lone particle keeps its own direction
    direction = np.stack(
        [np.bincount(tower_of, weights=getattr(particles, c)[rows][order]) for c in ("px", "py", "pz")]
    )
    norm = np.linalg.norm(direction, axis=0)
    unit = direction / np.where(norm > 0, norm, 1.0)
    return _Candidates(
        event=event[lead][kept],
        source=rows[lead][kept],
        track=np.zeros(int(kept.sum()), dtype=bool),
        px=(measured * unit[0])[kept],
        py=(measured * unit[1])[kept],
        pz=(measured * unit[2])[kept],
        e=measured[kept],
    )


def relative_isolation(
    lepton: np.ndarray,
    candidates: _Candidates,
    offsets: np.ndarray,
    cone: float,
    *,
    counted: np.ndarray | None = None,
    rho: np.ndarray | None = None,
) -> np.ndarray:
    """Pileup-corrected relative isolation of the candidates ``lepton`` (indices) in ``cone``.

    ``(charged + max(0, neutral - rho * pi * cone^2)) / pT``: scalar pT sums of the other
    candidates with pT > 0.5 GeV in the cone, tracks (charged) and calorimeter deposits
    (neutral) apart, only over candidates with ``counted`` true (the charged pileup tracks are
    not), with the neutral sum corrected by the event's median pileup density ``rho`` (the
    effective-area correction of the CMS electron isolation). ``offsets`` delimits each event's
    candidates.
    """
    if len(lepton) == 0:
        return np.zeros(0)
    ev = candidates.event[lepton]
    start, stop = offsets[ev], offsets[ev + 1]
    counts = stop - start
    owner = np.repeat(np.arange(len(lepton)), counts)
    other = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(start, counts)
    pt, eta = candidates.pt, candidates.eta
    phi = np.arctan2(candidates.py, candidates.px)
    dr2 = (eta[other] - eta[lepton][owner]) ** 2 + delta_phi(phi[other], phi[lepton][owner]) ** 2
    inside = (dr2 < cone**2) & (other != lepton[owner]) & (pt[other] > ISO_PT_MIN)
    if counted is not None:
        inside &= counted[other]
    in_pt = np.where(inside, pt[other], 0.0)
    track = candidates.track[other]
    charged = np.bincount(owner, weights=np.where(track, in_pt, 0.0), minlength=len(lepton))
    neutral = np.bincount(owner, weights=np.where(track, 0.0, in_pt), minlength=len(lepton))
    if rho is not None:
        neutral = np.maximum(neutral - rho[ev] * np.pi * cone**2, 0.0)
    return (charged + neutral) / pt[lepton]


def median_density(
    candidates: _Candidates, n_events: int, *, eta_min: float = 0.0, eta_max: float = RHO_ETA_MAX
) -> np.ndarray:
    """Median pT density rho (GeV per unit eta-phi area) of each event's candidates.

    The scalar pT sum in each cell of a grid over ``eta_min <= |eta| < eta_max`` (rows of about
    0.55 in eta on each side, 11 in phi), divided by the cell area; rho is the median over the
    cells (FastJet's grid-median estimator). The full range, 18 x 11 cells over |eta| < 5, is
    CMS ``fixedGridRhoFastjetAll``. Empty cells count, so a lone hard event has rho near 0.

    Example:
        >>> c = _Candidates(np.zeros(1, dtype=int), np.zeros(1, dtype=int), np.ones(1, dtype=bool),
        ...                 np.array([10.0]), np.zeros(1), np.zeros(1), np.array([10.0]))
        >>> median_density(c, 1).tolist()
        [0.0]
    """
    if n_events == 0:
        return np.zeros(0)
    rows = max(round((eta_max - eta_min) / (2 * RHO_ETA_MAX / RHO_ETA_CELLS)), 1)  # per side
    height = (eta_max - eta_min) / rows
    eta = candidates.eta
    aeta = np.abs(eta)
    inside = (aeta >= eta_min) & (aeta < eta_max)
    row = np.minimum(np.floor((aeta[inside] - eta_min) / height).astype(np.int64), rows - 1)
    row = np.where(eta[inside] < 0, row, row + rows)
    phi = np.arctan2(candidates.py[inside], candidates.px[inside])
    iphi = np.floor((phi + np.pi) / (2 * np.pi) * RHO_PHI_CELLS).astype(np.int64)
    iphi = np.minimum(iphi, RHO_PHI_CELLS - 1)
    cells = 2 * rows * RHO_PHI_CELLS
    index = candidates.event[inside] * cells + row * RHO_PHI_CELLS + iphi
    sums = np.bincount(index, weights=candidates.pt[inside], minlength=n_events * cells)
    area = height * (2 * np.pi / RHO_PHI_CELLS)
    return np.median(sums.reshape(n_events, cells), axis=1) / area


def _lepton_collection(
    particles: Particles,
    candidates: _Candidates,
    offsets: np.ndarray,
    rng: np.random.Generator,
    *,
    flavour: int,
    counted: np.ndarray,
    rho: np.ndarray,
) -> dict[str, np.ndarray]:
    """Reconstructed electrons (``flavour`` 11) or muons (13), flat, with their candidate indices.

    ``counted`` and ``rho`` are passed on to :func:`relative_isolation`.
    """
    tracked = np.flatnonzero(candidates.track & (np.abs(particles.pdg_id[candidates.source]) == flavour))
    pt, eta = candidates.pt[tracked], candidates.eta[tracked]
    eff = electron_efficiency(pt, eta) if flavour == 11 else muon_efficiency(pt, eta)
    index = tracked[rng.random(len(pt)) < eff]
    cone = ELECTRON_ISO_CONE if flavour == 11 else MUON_ISO_CONE
    iso = relative_isolation(index, candidates, offsets, cone, counted=counted, rho=rho)
    genpart_idx = particles.genpart_idx[candidates.source[index]]
    prompt = genpart_idx >= 0
    selected = prompt & (iso < (ELECTRON_ISO_MAX if flavour == 11 else MUON_ISO_MAX))
    return {"index": index, "iso": iso, "prompt": prompt, "selected": selected, "genPartIdx": genpart_idx}


@dataclass(frozen=True)
class _Jets:
    """Raw anti-kt jets, flattened, with the flavour labels of their ghosts."""

    event: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    hadron_flavour: np.ndarray
    parton_flavour: np.ndarray


def cluster_jets(inputs: _Candidates, ghosts: Ghosts, n_events: int) -> _Jets:
    """Anti-kt R = 0.4 jets of the candidates ``inputs`` with ghost-associated flavour labels.

    The ghosts are clustered with their momenta scaled by 1e-18, so they label jets without
    changing them. hadronFlavour is 5 if a B hadron is among the ghosts, else 4 if a C hadron is,
    else 0; partonFlavour is the flavour of the heaviest, then hardest ghost, 21 if there is none.
    The jet four-momentum is the sum of its real constituents.
    """
    import fastjet
    import fastjet._swig

    # FastJet prints a banner on first use; docs/detector.md cites it instead
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)

    counts = np.bincount(inputs.event, minlength=n_events)
    input_offsets = np.r_[0, np.cumsum(counts)]
    tiny = 1.0e-18
    real = ak.unflatten(ak.zip({"px": inputs.px, "py": inputs.py, "pz": inputs.pz, "E": inputs.e}), counts)
    ghost = ak.unflatten(
        ak.zip(
            {"px": ghosts.px * tiny, "py": ghosts.py * tiny, "pz": ghosts.pz * tiny, "E": ghosts.e * tiny}
        ),
        np.diff(ghosts.offsets),
    )
    together = ak.with_name(ak.concatenate([real, ghost], axis=1), "Momentum4D")
    sequence = fastjet.ClusterSequence(together, fastjet.JetDefinition(fastjet.antikt_algorithm, JET_R))
    constituents = sequence.constituent_index(min_pt=_RAW_JET_PT_MIN)

    jets_per_event = ak.to_numpy(ak.num(constituents, axis=1))
    sizes = ak.to_numpy(ak.flatten(ak.num(constituents, axis=2)))
    n_jets = len(sizes)
    local = ak.to_numpy(ak.flatten(constituents, axis=None)).astype(np.int64)
    jet_of = np.repeat(np.arange(n_jets), sizes)
    jet_event = np.repeat(np.arange(n_events), jets_per_event)
    event_of = jet_event[jet_of]
    is_real = local < counts[event_of]

    row = input_offsets[event_of[is_real]] + local[is_real]
    owner = jet_of[is_real]
    px, py, pz, e = (
        np.bincount(owner, weights=getattr(inputs, c)[row], minlength=n_jets) for c in ("px", "py", "pz", "e")
    )

    ghost_row = ghosts.offsets[event_of[~is_real]] + local[~is_real] - counts[event_of[~is_real]]
    ghost_owner = jet_of[~is_real]
    hadron = np.zeros(n_jets, dtype=np.uint8)
    np.maximum.at(hadron, ghost_owner, ghosts.hadron_flavour[ghost_row])
    parton = np.full(n_jets, 21, dtype=np.int16)
    key = ghosts.hadron_flavour[ghost_row] * 1.0e6 + np.hypot(ghosts.px[ghost_row], ghosts.py[ghost_row])
    if len(key):
        order = np.lexsort((key, ghost_owner))  # the last entry of each jet is its best ghost
        best = np.r_[ghost_owner[order][1:] != ghost_owner[order][:-1], True]
        parton[ghost_owner[order][best]] = ghosts.parton_flavour[ghost_row[order][best]]
    return _Jets(jet_event, px, py, pz, e, hadron, parton)


def simulate(
    particles: Particles, ghosts: Ghosts, rng: np.random.Generator
) -> dict[str, ak.Array | np.ndarray]:
    """Reconstruct one batch of events: NanoAOD-like ``Jet``, ``Electron``, ``Muon`` and ``MET_*``.

    Returns a mapping of collection name to a jagged record array (one list per event, sorted by
    decreasing pT, NanoAOD field names and dtypes) and of ``MET_pt``/``MET_phi``/``MET_sumEt``
    and ``Rho_fixedGridRhoFastjetAll`` to flat float32 arrays.

    Pileup particles (``particles.pileup``) are measured like the others. Their tracks are
    removed from jets and isolation (charged-hadron subtraction); their neutral deposits and
    everything outside the tracker stay, and jets lose the offset ``rho * A`` (the median
    density of the jet inputs in the jet's region, inside or outside the tracker, times the jet
    area) before the jet energy scale correction, as the CMS L1 correction does. The missing
    ET keeps every candidate, pileup included.

    Jets then get the residual correction of :func:`jet_residual_scale` (propagated to the
    missing ET with the energy scale) and the extra resolution of :func:`jet_extra_resolution`
    (what particle-level smearing leaves out; not propagated).
    """
    n_events = particles.n_events
    candidates = measure(particles, rng)
    offsets = np.r_[0, np.cumsum(np.bincount(candidates.event, minlength=n_events))]
    if particles.pileup is None:
        counted = np.ones(len(candidates.event), dtype=bool)
    else:
        counted = ~(candidates.track & particles.pileup[candidates.source])
    # pileup density of the jet inputs: inside the tracker only neutral pileup is left (CHS),
    # outside it all of it, so each region gets its own median (CMS: fixedGridRhoFastjetCentral*)
    jet_like = candidates.take(counted)
    rho_central = median_density(jet_like, n_events, eta_max=TRACKER_ETA_MAX)
    rho_forward = median_density(jet_like, n_events, eta_min=TRACKER_ETA_MAX)

    electrons = _lepton_collection(
        particles, candidates, offsets, rng, flavour=11, counted=counted, rho=rho_central
    )
    muons = _lepton_collection(
        particles, candidates, offsets, rng, flavour=13, counted=counted, rho=rho_central
    )

    jet_input = counted.copy()
    jet_input[electrons["index"][electrons["selected"]]] = False
    jet_input[muons["index"][muons["selected"]]] = False
    jets = cluster_jets(candidates.take(jet_input), ghosts, n_events)
    raw_pt = np.hypot(jets.px, jets.py)
    jet_eta = pseudorapidity(jets.px, jets.py, jets.pz)
    # L1: subtract the pileup offset; L2L3: the Delphes jet energy scale on the L1-corrected pT
    rho = np.where(np.abs(jet_eta) < TRACKER_ETA_MAX, rho_central[jets.event], rho_forward[jets.event])
    l1 = np.maximum(1.0 - rho * JET_AREA / raw_pt, 0.0)
    l1_pt = raw_pt * l1
    scale = np.where(l1 > 0.0, jet_energy_scale(np.where(l1 > 0.0, l1_pt, 1.0), jet_eta), 0.0)
    scale = scale * jet_residual_scale(l1_pt * scale, jet_eta)
    # the resolution the particle-level smearing leaves out, around the corrected pT: Gaussian,
    # median and mean 1 (as the CMS jet energy resolution smearing), kept positive; not
    # propagated to the MET (below): it matches CMS PUPPI jets, whose fluctuations are not in
    # the particle-flow MET, and energy shifted out of a jet's cone is still in the MET
    smear = np.maximum(
        1.0 + jet_extra_resolution(l1_pt * scale, jet_eta) * rng.standard_normal(len(scale)), 0.01
    )
    jet_pt = l1_pt * scale * smear
    keep = jet_pt > JET_PT_MIN
    eff = np.where(np.abs(jet_eta) < TRACKER_ETA_MAX, btag_efficiency(jet_pt, jets.hadron_flavour), 0.0)
    tagged = rng.random(len(jet_pt)) < eff

    # type-1 missing ET: all candidates, with the L2L3 correction of every kept jet propagated
    # (the L1 offset stays, as in CMS: it is pileup, which the candidates also contain)
    corr = np.where(keep, l1 * (scale - 1.0), 0.0)
    met_px = np.r_[candidates.px, jets.px * corr]
    met_py = np.r_[candidates.py, jets.py * corr]
    met_pt, met_phi = missing_et(met_px, met_py, np.r_[candidates.event, jets.event], n_events)
    sum_et = np.bincount(candidates.event, weights=candidates.pt, minlength=n_events)

    raw_mass = np.sqrt(np.maximum(jets.e**2 - jets.px**2 - jets.py**2 - jets.pz**2, 0.0))
    jet = {
        "pt": jet_pt,
        "eta": jet_eta,
        "phi": np.arctan2(jets.py, jets.px),
        "mass": raw_mass * l1 * scale * smear,
        "btagDeepFlavB": btag_score(tagged, rng),
        "hadronFlavour": jets.hadron_flavour,
        "partonFlavour": jets.parton_flavour,
        "jetId": np.full(len(jet_pt), 6, dtype=np.uint8),  # tight + tight lepton veto
    }
    return {
        "Jet": collection(jet, jets.event, keep, n_events, _JET_TYPES),
        "Electron": _lepton_record(electrons, candidates, particles, n_events, flavour=11),
        "Muon": _lepton_record(muons, candidates, particles, n_events, flavour=13),
        "MET_pt": met_pt.astype(np.float32),
        "MET_phi": met_phi.astype(np.float32),
        "MET_sumEt": sum_et.astype(np.float32),
        "Rho_fixedGridRhoFastjetAll": median_density(candidates, n_events).astype(np.float32),
    }


_JET_TYPES = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "btagDeepFlavB": np.float32,
    "hadronFlavour": np.uint8,
    "partonFlavour": np.int16,
    "jetId": np.uint8,
}
_ELECTRON_TYPES = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "charge": np.int32,
    "pdgId": np.int32,
    "pfRelIso03_all": np.float32,
    "cutBased": np.uint8,
    "genPartIdx": np.int16,
}
_MUON_TYPES = {
    "pt": np.float32,
    "eta": np.float32,
    "phi": np.float32,
    "mass": np.float32,
    "charge": np.int32,
    "pdgId": np.int32,
    "pfRelIso04_all": np.float32,
    "tightId": np.bool_,
    "genPartIdx": np.int16,
}


def _lepton_record(
    leptons: dict[str, np.ndarray],
    candidates: _Candidates,
    particles: Particles,
    n_events: int,
    *,
    flavour: int,
) -> ak.Array:
    index = leptons["index"]
    px, py, pz = candidates.px[index], candidates.py[index], candidates.pz[index]
    pdg = particles.pdg_id[candidates.source[index]]
    fields = {
        "pt": np.hypot(px, py),
        "eta": pseudorapidity(px, py, pz),
        "phi": np.arctan2(py, px),
        "mass": np.full(len(index), ELECTRON_MASS if flavour == 11 else MUON_MASS),
        "charge": -np.sign(pdg),
        "pdgId": pdg,
    }
    if flavour == 11:
        # cut-based ID as a function of the origin: tight (4) for prompt, veto (1) for non-prompt
        fields |= {"pfRelIso03_all": leptons["iso"], "cutBased": np.where(leptons["prompt"], 4, 1)}
        types = _ELECTRON_TYPES
    else:
        fields |= {"pfRelIso04_all": leptons["iso"], "tightId": leptons["prompt"]}
        types = _MUON_TYPES
    fields["genPartIdx"] = leptons["genPartIdx"]
    event = candidates.event[index]
    return collection(fields, event, np.ones(len(index), dtype=bool), n_events, types)


def collection(
    fields: dict[str, np.ndarray], event: np.ndarray, keep: np.ndarray, n_events: int, types: dict[str, type]
) -> ak.Array:
    """Jagged record array of the kept objects, per event, sorted by decreasing pT, typed."""
    rows = np.flatnonzero(keep)
    order = rows[np.lexsort((-fields["pt"][rows], event[rows]))]
    counts = np.bincount(event[rows], minlength=n_events)
    return ak.unflatten(
        ak.zip({name: fields[name][order].astype(types[name]) for name in types}, depth_limit=1), counts
    )


# --- generator-level jets ------------------------------------------------------------------

#: Generator jets below this pT are not kept, GeV (the NanoAOD ``GenJet`` threshold).
GENJET_PT_MIN = 10.0
_NEUTRINO_IDS = (12, 14, 16)


def cluster_gen_jets(particles: Particles, ghosts: Ghosts) -> _Jets:
    """Generator jets as CMS builds ``GenJet``: anti-kt R = 0.4 on all stable particles but neutrinos.

    The inputs are the particles themselves, unmeasured (prompt leptons and muons included,
    neutrinos excluded: CMS ``genParticlesForJetsNoNu``); flavour labels come from the same
    ghosts as the reconstructed jets (:func:`cluster_jets`). Jets with pT <= ``GENJET_PT_MIN``
    are dropped.
    """
    visible = np.flatnonzero(~np.isin(np.abs(particles.pdg_id), _NEUTRINO_IDS))
    inputs = _Candidates(
        event=particles.event[visible],
        source=visible,
        track=np.zeros(len(visible), dtype=bool),
        px=particles.px[visible],
        py=particles.py[visible],
        pz=particles.pz[visible],
        e=particles.e[visible],
    )
    jets = cluster_jets(inputs, ghosts, particles.n_events)
    keep = np.hypot(jets.px, jets.py) > GENJET_PT_MIN
    return _Jets(*(getattr(jets, name)[keep] for name in _Jets.__dataclass_fields__))
