"""Semileptonic ttbar events at 13 TeV: Pythia 8, a fast CMS-like detector, NanoAOD output.

:func:`generate_ttbar` streams events through Pythia 8 (``pythia8mc``, with its batch interface
that hands whole event records over as awkward arrays), the detector simulation of
:mod:`hepflow.generate.detector` and into a ROOT ``TTree`` named ``Events`` in the CMS NanoAOD
layout, which ``coffea``'s ``NanoAODSchema`` reads unchanged.

Physics: gg -> ttbar and qqbar -> ttbar with m_t = 172.5 GeV, Pythia's default (Monash) tune,
initial- and final-state showers, multiparton interactions and hadronization. Each W decays to
quarks, e nu or mu nu (``24:onIfAny``), and a user hook vetoes the resonance decays, before
showering, unless exactly one W gives an electron or a muon: the sample is semileptonic, with
both lepton charges and flavours in their natural (equal) proportions.

The output depends only on the seed and the number of events, not on ``batch_size``.

Example:
    >>> stats = generate_ttbar("ttbar.root", events=100, seed=7, progress=False)  # doctest: +SKIP
    >>> print(stats.summary())  # doctest: +SKIP
    wrote 100 events to ttbar.root in 1.9 s (53 events/s: Pythia 1.3 s, detector 0.4 s, writing 0.1 s)
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.errors import ConfigError, HepflowError
from hepflow.generate import detector
from hepflow.generate.nanoaod import (
    EventRecord,
    branch_types,
    flavour_ghosts,
    generator_columns,
    genpart_columns,
    nanoaod_columns,
    stable_particles,
    ttbar_genpart,
)
from hepflow.generate.parallel import Part, generate_parts
from hepflow.generate.pileup import LIBRARY_EVENTS, MinimumBiasLibrary, PileupProfile, overlay
from hepflow.outputs.atomic import atomic_write

log = logging.getLogger(__name__)

#: Centre-of-mass energy, GeV.
SQRT_S = 13000.0
#: Top quark mass, GeV.
TOP_MASS = 172.5
#: Pythia settings of the sample (the seed is added per run).
PYTHIA_SETTINGS = (
    f"Beams:eCM = {SQRT_S}",
    "Top:gg2ttbar = on",
    "Top:qqbar2ttbar = on",
    f"6:m0 = {TOP_MASS}",
    "24:onMode = off",
    "24:onIfAny = 1 2 3 4 5 11 13",
    "PartonLevel:MPI = on",
    "PartonLevel:ISR = on",
    "PartonLevel:FSR = on",
    "HadronLevel:all = on",
    "Print:quiet = on",
    "Next:numberShowEvent = 0",
    "Random:setSeed = on",
)
#: Events per Pythia batch: bounds the memory of the full event records (~0.2 MB per event) and
#: fixes how the detector consumes random numbers, independently of ``batch_size``.
CHUNK_EVENTS = 250
#: Pythia accepts seeds 1 to 900 000 000 (0 would mean "from the clock").
_PYTHIA_SEED_MAX = 900_000_000


@dataclass(frozen=True)
class GenerationStats:
    """What :func:`generate_ttbar` did, with the time spent in each stage (seconds)."""

    path: Path
    events: int
    seconds: float
    pythia_seconds: float
    detector_seconds: float
    write_seconds: float
    #: the files of a parallel run (``jobs`` above 1), in order; empty for one file at ``path``
    parts: tuple[Path, ...] = ()

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """One line: events written, time, rate and its split, output path."""
        if self.parts:
            return (
                f"wrote {self.events} events to {len(self.parts)} files {self.parts[0]} ... "
                f"{self.parts[-1].name} in {self.seconds:.1f} s ({self.events_per_second:.0f} "
                f"events/s with {len(self.parts)} jobs; summed over the jobs: Pythia "
                f"{self.pythia_seconds:.1f} s, detector {self.detector_seconds:.1f} s)"
            )
        return (
            f"wrote {self.events} events to {self.path} in {self.seconds:.1f} s "
            f"({self.events_per_second:.0f} events/s: Pythia {self.pythia_seconds:.1f} s, "
            f"detector {self.detector_seconds:.1f} s, writing {self.write_seconds:.1f} s)"
        )


def generate_ttbar(
    path: str | os.PathLike[str],
    *,
    events: int,
    seed: int = 1,
    batch_size: int = 1000,
    progress: bool = True,
    overwrite: bool = False,
    pileup: PileupProfile | None = None,
    jobs: int = 1,
) -> GenerationStats:
    """Generate ``events`` semileptonic ttbar events into the NanoAOD ROOT file ``path``.

    Events stream through in chunks, so memory does not grow with ``events``; the tree is
    extended every ``batch_size`` events (one basket per branch). The file appears at ``path``
    only when every event is written. The same ``seed`` gives the same file content.

    Branches: ``run``, ``luminosityBlock`` (= ``seed``), ``event`` (1 to ``events``),
    ``genWeight``, ``GenPart_*`` (the pruned decay tree, see :mod:`hepflow.generate.nanoaod`),
    ``Jet_*``, ``Electron_*``, ``Muon_*`` (see :mod:`hepflow.generate.detector`), ``MET_pt``,
    ``MET_phi``, ``MET_sumEt``, ``Rho_fixedGridRhoFastjetAll``, ``Pileup_nPU``,
    ``Pileup_nTrueInt``, the generator-level ``GenJet_*``, ``Jet_genJetIdx``, ``GenMET_pt``,
    ``GenMET_phi`` (:func:`~hepflow.generate.nanoaod.generator_columns`, from the hard scatter
    only, as in CMS) and the counters ``nGenPart``, ``nJet``, ``nGenJet``, ``nElectron``, ``nMuon``.

    ``pileup`` is the distribution of overlaid minimum-bias interactions
    (:mod:`hepflow.generate.pileup`); the default, ``PileupProfile()``, is that of the CMS
    NanoAODv12 ttbar simulation (mean 36), ``PileupProfile(mean=0)`` switches it off.

    With ``jobs`` above 1, ``jobs`` worker processes generate the parts of the sample into the
    files ``<stem>_000<suffix>``, ``<stem>_001<suffix>``, ... beside ``path``
    (:func:`hepflow.generate.parallel.generate_parts`): part ``k`` has its own seed, spawned from
    ``seed`` (:class:`numpy.random.SeedSequence`), and the event numbers that follow those of
    part ``k - 1``, so the parts together number their events 1 to ``events``, as one file
    would. The same ``seed`` and ``jobs`` give the same files; either all appear or none.

    Raises:
        ConfigError: ``events``, ``batch_size`` or ``jobs`` below 1, ``jobs`` above ``events``,
            ``seed`` outside [0, 2^32).
        OutputError: ``path`` (a part, with ``jobs``) exists and ``overwrite`` is false, or
            cannot be written.
        HepflowError: ``pythia8mc`` or ``fastjet`` is not installed; a worker failed (its part
            named, no file written).
    """
    if events < 1:
        raise ConfigError(f"events must be at least 1, got {events}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2^32), got {seed}")
    if not 1 <= jobs <= events:
        raise ConfigError(f"jobs must be between 1 and events ({events}), got {jobs}")
    pileup = PileupProfile() if pileup is None else pileup
    if jobs > 1:
        result = generate_parts(
            path,
            events=events,
            seed=seed,
            jobs=jobs,
            worker=write_part,
            options={"batch_size": batch_size, "pileup": pileup},
            progress=progress,
            overwrite=overwrite,
        )
        pythia = sum(c["pythia"] for c in result.clocks)
        detector = sum(c["detector"] for c in result.clocks)
        return GenerationStats(
            path=Path(path),
            events=events,
            seconds=result.seconds,
            pythia_seconds=pythia,
            detector_seconds=detector,
            write_seconds=max(result.seconds * jobs - pythia - detector, 0.0),
            parts=result.parts,
        )
    path = Path(path)
    start = time.perf_counter()
    with atomic_write(path, overwrite=overwrite) as tmp:
        clock = write_events(
            tmp,
            events=events,
            seed=seed,
            sequence=np.random.SeedSequence(seed),
            batch_size=batch_size,
            pileup=pileup,
            progress=progress,
            desc=path.name,
        )
    seconds = time.perf_counter() - start
    return GenerationStats(
        path=path,
        events=events,
        seconds=seconds,
        pythia_seconds=clock["pythia"],
        detector_seconds=clock["detector"],
        write_seconds=seconds - clock["pythia"] - clock["detector"],
    )


def write_part(part: Part, report: Callable[[tuple[Any, ...]], None]) -> dict[str, float]:
    """Generate one part of a parallel run (in its worker process): :func:`write_events` with the
    part's seed sequence and first event; ``report`` receives ``("progress", index, n)``."""
    return write_events(
        part.tmp,
        events=part.events,
        seed=part.seed,
        sequence=part.sequence(),
        batch_size=part.options["batch_size"],
        pileup=part.options["pileup"],
        first_event=part.first_event,
        advance=lambda n: report(("progress", part.index, n)),
    )


def write_events(
    path: Path,
    *,
    events: int,
    seed: int,
    sequence: np.random.SeedSequence,
    batch_size: int,
    pileup: PileupProfile,
    first_event: int = 0,
    progress: bool = False,
    desc: str = "",
    advance: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Generate ``events`` events into the new ROOT file ``path`` (no atomicity: the caller's
    temporary); returns the seconds spent in Pythia and in the detector.

    All random numbers come from ``sequence`` (Pythia's seed, the detector's and the pileup's
    streams); ``luminosityBlock`` is ``seed`` and ``event`` runs from ``first_event + 1``.
    ``advance`` is called with the number of events of each chunk done (a parallel run's progress).
    """
    import uproot
    from tqdm.auto import tqdm

    pythia_seed = int(sequence.generate_state(1)[0]) % _PYTHIA_SEED_MAX + 1
    rng = np.random.default_rng(sequence.spawn(1)[0])
    pileup_sequence = sequence.spawn(1)[0]  # a separate stream: no pileup leaves the rest unchanged
    pileup_rng = np.random.default_rng(pileup_sequence.spawn(1)[0])

    clock = {"pythia": 0.0, "detector": 0.0}
    start = time.perf_counter()
    generator = _Pythia(pythia_seed)
    library = None
    if pileup.enabled:
        library = MinimumBiasLibrary.generate(
            events=library_size(events, pileup.mean),
            seed=int(pileup_sequence.generate_state(1)[0]) % _PYTHIA_SEED_MAX + 1,
        )
    clock["pythia"] += time.perf_counter() - start
    log.info("Pythia initialised with seed %d (hepflow seed %d)", pythia_seed, seed)

    done: list[Callable[[int], Any]] = [] if advance is None else [advance]
    with contextlib.ExitStack() as stack:
        file = stack.enter_context(uproot.recreate(path))
        if progress:  # no tqdm object otherwise: in a worker it would leave a semaphore behind
            done.append(stack.enter_context(tqdm(total=events, unit="ev", desc=desc)).update)

        def chunks() -> Iterator[dict[str, Any]]:
            for first in range(0, events, CHUNK_EVENTS):
                t0 = time.perf_counter()
                record, weights = generator.next(min(CHUNK_EVENTS, events - first))
                t1 = time.perf_counter()
                columns = _reconstruct(
                    record,
                    weights,
                    generator.charge,
                    rng,
                    seed=seed,
                    first=first_event + first,
                    pileup=(pileup, library, pileup_rng),
                )
                clock["pythia"] += t1 - t0
                clock["detector"] += time.perf_counter() - t1
                for update in done:
                    update(record.n_events)
                yield columns

        tree = None
        for batch in _batches(chunks(), batch_size):
            if tree is None:
                tree = file.mktree("Events", branch_types(batch))
            tree.extend(batch)
    return clock


def _reconstruct(
    record: EventRecord,
    weights: np.ndarray,
    charge: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    *,
    seed: int,
    first: int,
    pileup: tuple[PileupProfile, MinimumBiasLibrary | None, np.random.Generator],
) -> dict[str, Any]:
    """NanoAOD columns of one chunk of events (``first`` is the index of its first event)."""
    genpart = ttbar_genpart(record)
    particles = stable_particles(record, genpart, charge)
    ghosts = flavour_ghosts(record, genpart)
    n = record.n_events
    profile, library, pileup_rng = pileup
    n_true, n_pu = profile.draw(n, pileup_rng)
    measured = particles if library is None else overlay(particles, library, n_pu, pileup_rng)
    reco = detector.simulate(measured, ghosts, rng)
    # generator jets and MET from the hard scatter alone, as CMS GenJet / GenMET
    reco |= generator_columns(particles, ghosts, reco["Jet"])
    reco["Pileup_nPU"] = n_pu.astype(np.int32)
    reco["Pileup_nTrueInt"] = n_true.astype(np.float32)
    return nanoaod_columns(
        run=np.ones(n),
        luminosity_block=np.full(n, seed),
        event=np.arange(first + 1, first + n + 1),
        gen_weight=weights,
        genpart=genpart_columns(record, genpart),
        reco=reco,
    )


def library_size(events: int, mean_pileup: float) -> int:
    """Minimum-bias library size for ``events`` hard events: each library event is drawn about
    ten times (randomly rotated), between 100 and ``LIBRARY_EVENTS`` events.

    Example:
        >>> library_size(40, 36.0), library_size(100_000, 36.0)
        (144, 2000)
    """
    return int(min(max(np.ceil(events * mean_pileup / 10.0), 100), LIBRARY_EVENTS))


def _batches(chunks: Iterable[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """Regroup column chunks into batches of ``size`` events (the last one may be smaller)."""
    pending: list[dict[str, Any]] = []
    for chunk in chunks:
        pending.append(chunk)
        while sum(len(c["event"]) for c in pending) >= size:
            merged = _concatenate(pending)
            yield {name: column[:size] for name, column in merged.items()}
            rest = {name: column[size:] for name, column in merged.items()}
            pending = [rest] if len(rest["event"]) else []
    if pending:
        yield _concatenate(pending)


def _concatenate(pending: list[dict[str, Any]]) -> dict[str, Any]:
    if len(pending) == 1:
        return pending[0]
    return {
        name: np.concatenate([c[name] for c in pending])
        if isinstance(pending[0][name], np.ndarray)
        else ak.concatenate([c[name] for c in pending])
        for name in pending[0]
    }


class _Pythia:
    """A Pythia instance configured for the semileptonic ttbar sample."""

    def __init__(self, seed: int) -> None:
        try:
            import pythia8mc
        except ImportError as err:  # the [generate] extra
            raise HepflowError("event generation needs pythia8mc: pip install 'hepflow[generate]'") from err
        try:
            import fastjet  # noqa: F401 - needed by the detector, checked before the long part
        except ImportError as err:
            raise HepflowError("event generation needs fastjet: pip install 'hepflow[generate]'") from err

        self._pythia = pythia8mc.Pythia("", False)
        for setting in (*PYTHIA_SETTINGS, f"Random:seed = {seed}"):
            if not self._pythia.readString(setting):
                raise RuntimeError(f"Pythia rejected the setting {setting!r}")
        # the hook must outlive the run: Pythia holds it by a pointer only
        self._hook = _semileptonic_veto(pythia8mc)
        self._pythia.setUserHooksPtr(self._hook)
        if not self._pythia.init():
            raise RuntimeError("Pythia initialisation failed")
        self._charges: dict[int, float] = {}

    def next(self, n: int) -> tuple[EventRecord, np.ndarray]:
        """The records and nominal weights of the next ``n`` events (failed events are retried)."""
        batch = self._pythia.nextBatch(n)
        weights = ak.to_numpy(ak.firsts(batch.info.weights))
        return EventRecord.from_pythia(batch.prt), weights

    def charge(self, pdg_id: np.ndarray) -> np.ndarray:
        """Electric charges (units of e) of the particles ``pdg_id``, from Pythia's particle data."""
        unique, inverse = np.unique(pdg_id, return_inverse=True)
        for code in unique.tolist():
            if code not in self._charges:
                self._charges[code] = self._pythia.particleData.charge(code)
        return np.array([self._charges[code] for code in unique.tolist()])[inverse]


def _semileptonic_veto(pythia8mc: Any) -> Any:
    """A Pythia ``UserHooks`` that vetoes resonance decays without exactly one electron or muon.

    With the W decays restricted to quarks, e nu and mu nu, exactly one charged lepton in the
    hard process means one leptonic and one hadronic W. The veto acts before the shower, so
    rejected events cost little.
    """

    class SemileptonicVeto(pythia8mc.UserHooks):
        def canVetoResonanceDecays(self) -> bool:
            return True

        def doVetoResonanceDecays(self, process: Any) -> bool:
            leptons = sum(process[i].idAbs() in (11, 13) for i in range(process.size()))
            return leptons != 1

    return SemileptonicVeto()


def ttbar_matches(path: Path, events: int, seed: int) -> bool:
    """Whether ``path`` is a generated ttbar file of ``events`` events and this ``seed``
    (``luminosityBlock`` holds the seed), so that a rerun can skip generating it."""
    if not path.is_file():
        return False
    import uproot

    try:
        with uproot.open(path) as f:
            tree = f["Events"]
            lumi = tree["luminosityBlock"].array(entry_stop=1, library="np")
            return tree.num_entries == events and len(lumi) == 1 and int(lumi[0]) == seed
    except Exception:  # unreadable or foreign: regenerate
        return False
