"""The cosmic analysis configuration: every section of the shipped ``config.toml``.

:class:`CosmicConfig` holds the sections ``[prior]``, ``[proposal]``, ``[model]`` (forward model),
``[systematics]`` (nuisance parameters), ``[generation]``, ``[mcmc]``, ``[flow]``, ``[training]``,
``[inference]``, ``[comparison]``, ``[check]`` (posterior predictive check) and ``[verdict]`` (cINN
against MCMC);
unknown sections and keys are refused, naming the file. :func:`load_config` reads it: ``None``
means the config shipped with the package (``hepflow config show cosmic`` prints it), the same for
every cosmic command and function.

Example:
    >>> cfg = load_config()
    >>> cfg.generation.n, cfg.flow.summary
    (800000, 'cnn')
    >>> load_config(cfg) is cfg
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hepflow.config import (
    COUNT,
    POSITIVE,
    SAMPLES,
    SEED,
    SIZE,
    AnalysisConfig,
    Bound,
    check_values,
    from_dict,
    to_dict,
)
from hepflow.cosmic.model import ForwardModel
from hepflow.cosmic.observation import Binning, Observation
from hepflow.cosmic.priors import Prior, Proposal
from hepflow.cosmic.source import PARAMETER_NAMES
from hepflow.cosmic.systematics import XMAX_SCALE_PUBLISHED, Systematics
from hepflow.errors import ConfigError
from hepflow.flows.config import FlowArchitecture
from hepflow.training.config import FitConfig

__all__ = [
    "ANALYSIS",
    "PARAMETERS",
    "AugerConfig",
    "CheckConfig",
    "ComparisonConfig",
    "CosmicConfig",
    "FlowConfig",
    "GenerationConfig",
    "InferenceConfig",
    "McmcConfig",
    "ModelConfig",
    "PriorConfig",
    "ProposalConfig",
    "SystematicsConfig",
    "TrainingConfig",
    "VerdictConfig",
    "check_mcmc_settings",
    "load_config",
]

#: the analysis name models and outputs record
ANALYSIS = "auger_sources"
#: the 7 source parameters, in order
PARAMETERS: tuple[str, ...] = tuple(PARAMETER_NAMES)
_NDIM = len(PARAMETER_NAMES) - 1
Initial = Literal["optimum", "prior"]


@dataclass(frozen=True)
class PriorConfig:
    """``[prior]``: uniform ``gamma`` and ``lg_rcut`` ranges, symmetric Dirichlet on the fractions."""

    gamma: tuple[float, float] = (-3.0, 3.0)
    lg_rcut: tuple[float, float] = (17.5, 19.5)
    concentration: float = 1.0

    def __post_init__(self) -> None:
        for name in ("gamma", "lg_rcut"):
            if len(getattr(self, name)) != 2:
                raise ConfigError(f"prior.{name} must be [low, high], got {getattr(self, name)!r}")
        self.build()  # validates the ranges and the concentration

    def build(self) -> Prior:
        return Prior(gamma=self.gamma, lg_rcut=self.lg_rcut, concentration=self.concentration)


@dataclass(frozen=True)
class ProposalConfig:
    """``[proposal]``: where the training parameters come from (:class:`hepflow.cosmic.Proposal`).

    ``prior_weight = 1`` (default): the prior. Below 1, the rest of the pseudo-experiments take
    their fractions from a sparse Dirichlet (``concentration``), so the cINN also sees the faces
    of the simplex; its posterior draws are corrected back to the prior by rejection.
    """

    prior_weight: float = 1.0
    concentration: float = 0.3

    def build(self, prior: Prior) -> Proposal:
        return Proposal(prior, prior_weight=self.prior_weight, concentration=self.concentration)

    def metadata(self) -> dict[str, float] | None:
        """What a file or model records: None for the prior itself."""
        return None if self.prior_weight == 1.0 else to_dict(self)

    def __post_init__(self) -> None:
        self.build(Prior())  # validates


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the forward model (:class:`hepflow.cosmic.ForwardModel`) and the energy threshold.

    ``distance`` is ``"homogeneous"`` (sources between ``d_min`` and ``d_max`` Mpc, default the
    table range 1 .. 1500) or one distance in Mpc; leave ``d_min``/``d_max`` out for the defaults.
    """

    lg_e_min: float = 18.7
    hadronic_model: Literal["EPOS-LHC", "QGSJetII-04"] = "EPOS-LHC"
    irb: Literal["Gilmore12", "Dominguez11", "Kneiske04"] = "Gilmore12"
    distance: str | float = "homogeneous"
    d_min: float | None = None
    d_max: float | None = None
    unfolding: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.distance, str) and self.distance != "homogeneous":
            raise ConfigError(
                f'model.distance must be "homogeneous" or a distance in Mpc, got {self.distance!r}'
            )
        self.binning()  # validates lg_e_min

    def binning(self) -> Binning:
        return Binning.auger(lg_e_min=self.lg_e_min)

    def observation(self) -> Observation:
        """The published Auger data above ``lg_e_min``."""
        return Observation.from_auger(lg_e_min=self.lg_e_min)

    def build(
        self, reference: Observation | None = None, *, systematics: Systematics | None = None
    ) -> ForwardModel:
        """The forward model; ``reference`` (default: the Auger data) sets binning and event numbers;
        ``systematics`` (``[systematics]``, :meth:`SystematicsConfig.build`) adds the nuisances."""
        return ForwardModel(
            reference if reference is not None else self.observation(),
            hadronic_model=self.hadronic_model,
            irb=self.irb,
            distance=self.distance,
            d_min=self.d_min,
            d_max=self.d_max,
            unfolding=self.unfolding,
            systematics=systematics,
        )


@dataclass(frozen=True)
class SystematicsConfig:
    """``[systematics]``: the energy-scale and Xmax-scale nuisance parameters
    (:mod:`hepflow.cosmic.systematics`, docs/cosmic_model.md).

    ``enabled = false`` (default): the forward model has no nuisances. Enabled, the MCMC samples
    ``nu_E`` and ``nu_X`` with the source parameters, and the generator draws them from their
    priors per pseudo-experiment, so that a cINN trained on it learns the posterior marginalised
    over them. ``energy_scale``: ``E_rec = E_true (1 + energy_scale nu_E)``; ``xmax_scale``:
    ``"auger2014"`` (published energy-dependent band) or a constant ``sigma_X`` in g/cm^2;
    ``nu_max``: truncation of the standard-normal priors.

    Example:
        >>> SystematicsConfig().build() is None
        True
        >>> SystematicsConfig(enabled=True).build().energy_scale
        0.14
    """

    enabled: bool = False
    energy_scale: float = 0.14
    xmax_scale: str | float = XMAX_SCALE_PUBLISHED
    nu_max: float = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"systematics.enabled must be true or false, got {self.enabled!r}")
        self._systematics()  # validates the sizes even when disabled

    def _systematics(self) -> Systematics:
        return Systematics(energy_scale=self.energy_scale, xmax_scale=self.xmax_scale, nu_max=self.nu_max)

    def build(self) -> Systematics | None:
        """The :class:`~hepflow.cosmic.systematics.Systematics`, or None when disabled."""
        return self._systematics() if self.enabled else None

    def metadata(self) -> dict[str, Any] | None:
        """What a file or model records: None when disabled."""
        return self._systematics().metadata() if self.enabled else None


@dataclass(frozen=True)
class GenerationConfig:
    """``[generation]``: the training set of pseudo-experiments."""

    n: int = 200_000
    seed: int = 1
    batch_size: int = 10_000

    def __post_init__(self) -> None:
        check_values(self, n=COUNT, seed=SEED, batch_size=COUNT)


@dataclass(frozen=True)
class FlowConfig(FlowArchitecture):
    """``[flow]``: the cINN of :mod:`hepflow.cosmic.analysis` (``hepflow train cosmic``).

    ``summary = "cnn"``: an MLP over the 43 scalar features (spectrum, Xmax moments, counts) next
    to a 1D CNN over the Xmax distributions (energy bins as channels); ``"mlp"``: one MLP over all
    the features. ``simplex``: the unconstrained coordinates of the five fractions
    (:class:`hepflow.flows.constraints.Simplex`): ``"log_ratio"`` against f_Fe, or
    ``"stick_breaking"`` in the order H, He, N, Si, Fe.
    """

    bins: int = 10
    simplex: Literal["log_ratio", "stick_breaking"] = "log_ratio"
    summary: Literal["cnn", "mlp"] = "cnn"
    summary_width: int = 128
    flat_embedding: int = 32
    xmax_embedding: int = 32
    cnn_channels: tuple[int, ...] = (16, 32)
    mlp_embedding: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_values(self, summary_width=SIZE, flat_embedding=SIZE, xmax_embedding=SIZE, mlp_embedding=SIZE)
        if not self.cnn_channels or not all(SIZE.test(c) for c in self.cnn_channels):
            raise ConfigError(f"flow.cnn_channels must be positive numbers, got {list(self.cnn_channels)}")


@dataclass(frozen=True)
class TrainingConfig(FitConfig):
    """``[training]``: options of :func:`hepflow.fit`; ``max_pseudo_experiments`` caps the set used,
    ``time_limit_s`` stops after the epoch that would otherwise end past the limit (best weights kept)."""

    epochs: int = 30
    batch_size: int = 512
    validation_split: float = 0.05
    patience: int = 6
    max_pseudo_experiments: int | None = None
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_values(self, time_limit_s=POSITIVE)
        if self.max_pseudo_experiments is not None and self.max_pseudo_experiments < 100:
            raise ConfigError(
                f"training.max_pseudo_experiments must be >= 100, got {self.max_pseudo_experiments}"
            )


@dataclass(frozen=True)
class InferenceConfig:
    """``[inference]``: posterior samples per observation (``hepflow infer cosmic``)."""

    samples: int = 4000
    seed: int = 7

    def __post_init__(self) -> None:
        check_values(self, samples=SAMPLES, seed=SEED)


@dataclass(frozen=True)
class ComparisonConfig:
    """``[comparison]``: cINN vs MCMC on held-out mock observations, cINN calibration.

    The mocks are simulated with parameters from the prior and the seed ``seed``, which must
    differ from ``[generation] seed`` (held out from the training set).
    """

    n_mocks: int = 20
    samples: int = 4000
    n_calibration: int = 500
    calibration_samples: int = 1000
    seed: int = 20170038

    def __post_init__(self) -> None:
        if self.n_mocks < 0 or self.n_calibration < 0:
            raise ConfigError(f"comparison: counts must be >= 0, got {self}")
        check_values(self, samples=SAMPLES, calibration_samples=SAMPLES, seed=SEED)


#: a probability threshold in (0, 1)
_PROBABILITY = Bound("a number in (0, 1)", lambda v: isinstance(v, int | float) and 0 < v < 1)
#: a number of replicas of the predictive check
_REPLICAS = Bound("an integer >= 10", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 10)


@dataclass(frozen=True)
class CheckConfig:
    """``[check]``: the posterior predictive check (:func:`hepflow.cosmic.ppc.predictive_check`).

    ``n_replicas`` pseudo-observations from posterior draws, ``seed``, and the ``threshold``
    below which a p-value prints "the model does not describe the data (...)".
    """

    n_replicas: int = 1000
    seed: int = 11
    threshold: float = 0.01

    def __post_init__(self) -> None:
        check_values(self, n_replicas=_REPLICAS, seed=SEED, threshold=_PROBABILITY)


@dataclass(frozen=True)
class VerdictConfig:
    """``[verdict]``: when the cINN and the MCMC agree (:func:`hepflow.cosmic.verdict.verdict`).

    They agree when every parameter's mean shift is within ``max_abs_shift`` MCMC sigma, every
    width ratio within ``1 +- max_width_deviation`` and the importance efficiency ESS / n is at
    least ``min_efficiency``.
    """

    max_abs_shift: float = 0.3
    max_width_deviation: float = 0.2
    min_efficiency: float = 0.2

    def __post_init__(self) -> None:
        check_values(
            self, max_abs_shift=POSITIVE, max_width_deviation=_PROBABILITY, min_efficiency=_PROBABILITY
        )


@dataclass(frozen=True)
class McmcConfig:
    """``[mcmc]`` of the analysis config: the arguments of :func:`run_mcmc` (see there)."""

    n_walkers: int = 32
    n_steps: int = 20_000
    initial: Initial = "optimum"
    check_every: int = 250
    tau_factor: float = 50.0
    tau_rtol: float = 0.01
    n_starts: int = 8
    n_candidates: int = 4096
    ball: float = 0.01
    mode_draws: int = 20_000
    min_mode_mass: float = 0.01
    seed: int = 1

    def __post_init__(self) -> None:
        check_mcmc_settings(
            n_walkers=self.n_walkers,
            n_steps=self.n_steps,
            check_every=self.check_every,
            tau_factor=self.tau_factor,
            tau_rtol=self.tau_rtol,
            n_starts=self.n_starts,
            n_candidates=self.n_candidates,
            ball=self.ball,
            mode_draws=self.mode_draws,
            min_mode_mass=self.min_mode_mass,
        )

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`run_mcmc` (everything but ``seed``)."""
        return {
            "n_walkers": self.n_walkers,
            "n_steps": self.n_steps,
            "initial": self.initial,
            "check_every": self.check_every,
            "tau_factor": self.tau_factor,
            "tau_rtol": self.tau_rtol,
            "n_starts": self.n_starts,
            "n_candidates": self.n_candidates,
            "ball": self.ball,
            "mode_draws": self.mode_draws,
            "min_mode_mass": self.min_mode_mass,
        }


def check_mcmc_settings(*, n_free: int = _NDIM, **s: Any) -> None:
    if s["n_walkers"] < 2 * n_free:
        raise ConfigError(
            f"n_walkers must be at least {2 * n_free} (twice the {n_free} free parameters), "
            f"got {s['n_walkers']}"
        )
    for name in ("n_steps", "check_every", "n_starts", "n_candidates"):
        if s[name] < 1:
            raise ConfigError(f"{name} must be positive, got {s[name]}")
    for name in ("tau_factor", "tau_rtol", "ball"):
        if not (np.isfinite(s[name]) and s[name] > 0):
            raise ConfigError(f"{name} must be a positive number, got {s[name]}")
    if s["mode_draws"] != 0 and s["mode_draws"] < 100:
        raise ConfigError(
            f"mode_draws must be 0 (do not weigh the modes) or at least 100, got {s['mode_draws']}"
        )
    if not 0 < s["min_mode_mass"] < 1:
        raise ConfigError(f"min_mode_mass must lie between 0 and 1, got {s['min_mode_mass']}")


@dataclass(frozen=True)
class CosmicConfig(AnalysisConfig):
    """The whole analysis configuration (the shipped ``hepflow/cosmic/config.toml``).

    ``CosmicConfig.from_file(None)`` and :func:`load_config` read the shipped file.

    Example:
        >>> cfg = CosmicConfig.from_dict({"prior": {"gamma": [-2, 2]}, "mcmc": {"n_walkers": 24}})
        >>> cfg.prior.gamma, cfg.mcmc.n_walkers, cfg.model.hadronic_model
        ((-2.0, 2.0), 24, 'EPOS-LHC')
    """

    shipped = "cosmic"

    prior: PriorConfig = field(default_factory=PriorConfig)
    proposal: ProposalConfig = field(default_factory=ProposalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    systematics: SystematicsConfig = field(default_factory=SystematicsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    mcmc: McmcConfig = field(default_factory=McmcConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    comparison: ComparisonConfig = field(default_factory=ComparisonConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)

    def __post_init__(self) -> None:
        if self.comparison.seed == self.generation.seed:
            raise ConfigError(
                f"comparison.seed ({self.comparison.seed}) must differ from generation.seed: the mock "
                "observations of the comparison are held out from the training set"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config") -> CosmicConfig:
        return from_dict(cls, data, where=where)


#: The analysis configuration (the name the cosmic modules use for it).
AugerConfig = CosmicConfig


def load_config(config: CosmicConfig | str | os.PathLike[str] | None = None) -> CosmicConfig:
    """A :class:`CosmicConfig` from itself, a TOML file (strict), or None: the shipped ``config.toml``."""
    return CosmicConfig.load(config)
