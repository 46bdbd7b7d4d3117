"""Pileup: minimum-bias Pythia 8 interactions overlaid on every hard-scatter event.

CMS records every bunch crossing with dozens of simultaneous proton-proton interactions. Their
particles reach the detector with those of the hard scatter: they add soft energy to jets
(corrected by subtracting the median energy density times the jet area), spoil isolation and,
most of all, widen the missing-ET resolution (the MET of the CMS NanoAOD ttbar sample is about
1.6 times worse than that of a detector without pileup). This module does what the Delphes
``PileUpMerger`` module does:

* a library of minimum-bias events is generated once per job with Pythia 8
  (``SoftQCD:inelastic``, 13 TeV, the same Monash tune as the hard scatter);
* every hard event gets ``nTrueInt`` drawn from the pileup profile (a gamma distribution of the
  given mean and spread) and ``nPU ~ Poisson(nTrueInt)`` library events, each rotated by a random
  azimuth and, with probability 1/2, mirrored in z (``pz -> -pz``), so a library of a few thousand
  events serves any number of hard events without visible repetition.

Pileup particles carry ``pileup = True`` in :class:`~hepflow.generate.detector.Particles`: the
detector removes their charged tracks from jets and isolation (charged-hadron subtraction) and
keeps everything in the missing ET, as CMS particle flow does. ``docs/detector.md`` gives the
measurements that set the defaults.

Example:
    >>> import numpy as np
    >>> profile = PileupProfile(mean=36.0, spread=9.0)
    >>> true, n_pu = profile.draw(20_000, np.random.default_rng(1))
    >>> round(float(true.mean())), round(float(true.std())), round(float(n_pu.mean()))
    (36, 9, 36)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hepflow.errors import ConfigError, HepflowError
from hepflow.generate.detector import Particles

#: Mean number of interactions per crossing (``Pileup_nTrueInt``) of the CMS NanoAODv12 ttbar
#: simulation (Run 3, 2022 conditions) shipped in ``tests/samples/nano_tt_v12.root``: 36.3.
PILEUP_MEAN = 36.0
#: Its standard deviation in that sample: 9.1.
PILEUP_SPREAD = 9.0
#: Minimum-bias events generated per job (about 2.7 ms each).
LIBRARY_EVENTS = 2000


@dataclass(frozen=True)
class PileupProfile:
    """Distribution of the number of interactions per bunch crossing.

    ``nTrueInt`` (the Poisson mean of the crossing, as CMS simulation records it) follows a gamma
    distribution of mean ``mean`` and standard deviation ``spread``; the number of overlaid
    interactions is ``nPU ~ Poisson(nTrueInt)``. ``mean = 0`` switches pileup off.
    """

    mean: float = PILEUP_MEAN
    spread: float = PILEUP_SPREAD

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and self.mean >= 0.0):
            raise ConfigError(f"pileup mean must be a finite number >= 0, got {self.mean}")
        if not (math.isfinite(self.spread) and self.spread >= 0.0):
            raise ConfigError(f"pileup spread must be a finite number >= 0, got {self.spread}")

    @property
    def enabled(self) -> bool:
        return self.mean > 0.0

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(nTrueInt, nPU)`` for ``n`` crossings."""
        if not self.enabled:
            return np.zeros(n), np.zeros(n, dtype=np.int64)
        if self.spread == 0.0:
            true = np.full(n, self.mean)
        else:
            shape = (self.mean / self.spread) ** 2
            true = rng.gamma(shape, self.mean / shape, size=n)
        return true, rng.poisson(true)


@dataclass(frozen=True)
class MinimumBiasLibrary:
    """Stable particles of ``n_events`` minimum-bias events, flattened (rows ``offsets[k]:offsets[k+1]``)."""

    offsets: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pdg_id: np.ndarray
    charge: np.ndarray

    @property
    def n_events(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def generate(cls, *, events: int = LIBRARY_EVENTS, seed: int) -> MinimumBiasLibrary:
        """Generate the library with Pythia 8 (``SoftQCD:inelastic`` at 13 TeV), seeded by ``seed``."""
        from hepflow.generate.nanoaod import EventRecord, stable_particles

        if events < 1:
            raise ConfigError(f"the minimum-bias library needs at least 1 event, got {events}")
        try:
            import pythia8mc
        except ImportError as err:  # the [generate] extra
            raise HepflowError("pileup needs pythia8mc: pip install 'hepflow[generate]'") from err
        pythia = pythia8mc.Pythia("", False)
        settings = (
            "Beams:eCM = 13000.",
            "SoftQCD:inelastic = on",
            "Random:setSeed = on",
            f"Random:seed = {seed}",
            "Next:numberCount = 0",
            "Print:quiet = on",
        )
        for setting in settings:
            if not pythia.readString(setting):
                raise RuntimeError(f"Pythia rejected the setting {setting!r}")
        if not pythia.init():
            raise RuntimeError("Pythia initialisation failed (minimum bias)")
        record = EventRecord.from_pythia(pythia.nextBatch(events).prt)

        def charge(pdg_id: np.ndarray) -> np.ndarray:
            unique, inverse = np.unique(pdg_id, return_inverse=True)
            return np.array([pythia.particleData.charge(int(code)) for code in unique])[inverse]

        p = stable_particles(record, None, charge)
        return cls(p.offsets, p.px, p.py, p.pz, p.e, p.pdg_id, p.charge)


def overlay(
    particles: Particles, library: MinimumBiasLibrary, n_pileup: np.ndarray, rng: np.random.Generator
) -> Particles:
    """Add ``n_pileup[k]`` library events, randomly rotated and mirrored, to hard event ``k``.

    The hard-scatter particles keep their order and come first in each event; pileup rows have
    ``genpart_idx = -1`` and ``pileup = True``.

    Example:
        >>> lib = MinimumBiasLibrary(np.array([0, 1]), np.array([1.0]), np.array([0.0]),
        ...                          np.array([2.0]), np.array([3.0]), np.array([211]), np.array([1.0]))
        >>> hard = Particles(np.array([0, 1]), np.array([5.0]), np.array([0.0]), np.array([0.0]),
        ...                  np.array([5.0]), np.array([13]), np.array([-1.0]), np.array([0]))
        >>> out = overlay(hard, lib, np.array([2]), np.random.default_rng(0))
        >>> out.offsets.tolist(), out.pileup.tolist(), np.round(np.hypot(out.px, out.py), 6).tolist()
        ([0, 3], [False, True, True], [5.0, 1.0, 1.0])
    """
    n_pileup = np.asarray(n_pileup, dtype=np.int64)
    if len(n_pileup) != particles.n_events:
        raise ValueError(f"n_pileup has {len(n_pileup)} entries for {particles.n_events} events")
    pick_event = np.repeat(np.arange(particles.n_events), n_pileup)
    n_picks = len(pick_event)
    pick = rng.integers(0, library.n_events, size=n_picks)
    angle = rng.uniform(-np.pi, np.pi, size=n_picks)
    mirror = np.where(rng.random(n_picks) < 0.5, -1.0, 1.0)

    sizes = np.diff(library.offsets)[pick]
    start = np.repeat(library.offsets[pick] - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    rows = start + np.arange(sizes.sum())
    owner = np.repeat(np.arange(n_picks), sizes)
    cos, sin = np.cos(angle)[owner], np.sin(angle)[owner]
    pu_px = library.px[rows] * cos - library.py[rows] * sin
    pu_py = library.px[rows] * sin + library.py[rows] * cos

    hard_pileup = (
        particles.pileup if particles.pileup is not None else np.zeros(len(particles.px), dtype=bool)
    )
    event = np.r_[particles.event, pick_event[owner]]
    order = np.argsort(event, kind="stable")  # hard rows stay first within each event

    def merged(hard: np.ndarray, pu: np.ndarray) -> np.ndarray:
        return np.concatenate([hard, pu.astype(hard.dtype, copy=False)])[order]

    return Particles(
        offsets=np.r_[0, np.cumsum(np.bincount(event, minlength=particles.n_events))],
        px=merged(particles.px, pu_px),
        py=merged(particles.py, pu_py),
        pz=merged(particles.pz, library.pz[rows] * mirror[owner]),
        e=merged(particles.e, library.e[rows]),
        pdg_id=merged(particles.pdg_id, library.pdg_id[rows]),
        charge=merged(particles.charge, library.charge[rows]),
        genpart_idx=merged(particles.genpart_idx, np.full(len(rows), -1)),
        pileup=merged(hard_pileup, np.ones(len(rows), dtype=bool)),
    )
