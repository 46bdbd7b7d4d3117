"""The neutrino analysis's settings: the shipped ``config.toml`` as typed dataclasses.

One dataclass per table (:class:`~hepflow.neutrino.selection.NeutrinoSelection` for
``[selection]``, kept in its own module so that the processors need no torch; :class:`GenerationConfig`,
:class:`SummaryConfig`, :class:`FlowConfig`, :class:`SupportConfig`, :class:`RegressionConfig`,
:class:`TrainingConfig`, :class:`InferenceConfig`) and :class:`NeutrinoConfig` for the whole file.
Reading is strict: unknown keys and wrong types are refused with a message that names them. ``config=None``
everywhere means the config shipped with hepflow (``hepflow config show neutrino`` prints it).

Example:
    >>> cfg = NeutrinoConfig.from_file()  # the shipped config
    >>> cfg.selection.min_jets, cfg.flow.depth, cfg.inference.samples
    (4, 7, 256)
    >>> NeutrinoConfig().training.epochs  # the dataclass defaults, sized for a CPU
    25
    >>> cfg.support.pt_max, cfg.support.pz_max  # every posterior sample is physical (GeV)
    (2000.0, 5000.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hepflow.config import (
    COUNT,
    SAMPLES,
    SEED,
    SIZE,
    AnalysisConfig,
    Bound,
    ValueOutOfBounds,
    check_values,
)
from hepflow.flows.config import FlowArchitecture
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.training.config import FitConfig

__all__ = [
    "FlowConfig",
    "GenerationConfig",
    "InferenceConfig",
    "NeutrinoConfig",
    "NeutrinoSelection",
    "RegressionConfig",
    "SummaryConfig",
    "SupportConfig",
    "TrainingConfig",
]

#: the LHC beam energy at 13 TeV, GeV: no particle of the event can carry more momentum
BEAM_ENERGY = 6500.0
_MOMENTUM = Bound(
    f"a number in (0, {BEAM_ENERGY:g}] GeV (the beam energy)",
    lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= BEAM_ENERGY,
)


@dataclass(frozen=True)
class SummaryConfig:
    """The condition network shared by flow and regression: an MLP over the flat features
    concatenated with an attention-pooling set encoder over the jets."""

    flat_embedding: int = 32
    jet_embedding: int = 32
    set_width: int = 64
    set_heads: int = 4
    set_blocks: int = 1

    def __post_init__(self) -> None:
        check_values(
            self,
            flat_embedding=SIZE,
            jet_embedding=SIZE,
            set_width=SIZE,
            set_heads=SIZE,
            set_blocks=SIZE,
        )
        if self.set_width % self.set_heads:
            raise ValueOutOfBounds(
                "SummaryConfig",
                "set_width",
                f"expected a multiple of set_heads={self.set_heads}, got {self.set_width}",
            )


@dataclass(frozen=True)
class FlowConfig(FlowArchitecture):
    """The cINN (defaults after nu-Flows: 7 spline couplings, 10 bins, 2 x 64 subnets)."""

    depth: int = 7
    width: int = 64
    bins: int = 10
    bound: float = 4.0


@dataclass(frozen=True)
class SupportConfig:
    """``[support]``: the physical range of the neutrino, a
    :class:`~hepflow.flows.constraints.MomentumBound` on the targets (px, py, eta) of the flow
    and the regression: ``|px|, |py| < pt_max`` and ``|pz| = pT |sinh(eta)| < pz_max`` (GeV).

    Every posterior sample and regression estimate then lies inside, whatever the event (a MET
    of 2 TeV included); training events whose true neutrino lies outside are dropped and counted
    (``dropped_outside_support`` in ``training.json``). ``enabled = false`` trains without it,
    as models trained before the support existed: samples are then unbounded (pz of 14 TeV
    were seen).
    See docs/training.md for the fractions of true neutrinos beyond these bounds.
    """

    enabled: bool = True
    pt_max: float = 2000.0
    pz_max: float = 5000.0

    def __post_init__(self) -> None:
        check_values(self, pt_max=_MOMENTUM, pz_max=_MOMENTUM)

    def constraint(self) -> Any:
        """The :class:`~hepflow.flows.constraints.MomentumBound` on (px, py, eta), or None if off."""
        from hepflow.flows.constraints import MomentumBound

        return MomentumBound([0, 1, 2], pt_max=self.pt_max, pz_max=self.pz_max) if self.enabled else None


@dataclass(frozen=True)
class RegressionConfig:
    """The feed-forward regression baseline (same inputs and summary network, MSE)."""

    width: int = 128
    layers: int = 3

    def __post_init__(self) -> None:
        check_values(self, width=SIZE, layers=SIZE)


@dataclass(frozen=True)
class TrainingConfig(FitConfig):
    """``[training]``: :func:`hepflow.fit` options for both models, sized for a CPU."""

    epochs: int = 25
    batch_size: int = 512
    patience: int = 6
    max_events: int | None = None
    #: fewer usable events (with a truth neutrino, finite) than this are refused: a guard
    #: against training on an almost empty sample, not a sign that 100 events are enough
    min_events: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        check_values(self, max_events=COUNT, min_events=COUNT)


@dataclass(frozen=True)
class InferenceConfig:
    """Posterior sampling per event."""

    samples: int = 256
    batch_events: int = 2048
    seed: int = 7

    def __post_init__(self) -> None:
        check_values(self, samples=SAMPLES, batch_events=COUNT, seed=SEED)


@dataclass(frozen=True)
class GenerationConfig:
    """Samples the analysis trains and tests on (``hepflow generate ttbar``)."""

    train_events: int = 100_000
    test_events: int = 20_000
    train_seed: int = 11
    test_seed: int = 99

    def __post_init__(self) -> None:
        check_values(self, train_events=COUNT, test_events=COUNT, train_seed=SEED, test_seed=SEED)


@dataclass(frozen=True)
class NeutrinoConfig(AnalysisConfig):
    """The whole neutrino config (the shipped ``hepflow/neutrino/config.toml``)."""

    shipped = "neutrino"

    selection: NeutrinoSelection = field(default_factory=NeutrinoSelection)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
