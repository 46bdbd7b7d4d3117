"""The ttbar unfolding study: cINN unfolding against iterative Bayesian unfolding.

:func:`run_study` processes a training (simulation) and a test (pseudo-data) sample with
:class:`hepflow.unfolding.processor.UnfoldingProcessor`, builds the response, efficiency and fake
rates from the training sample, trains an ensemble of cINNs for p(particle-level top pT, m_ttbar
| detector-level event) on the training events that pass both levels, and unfolds the
pseudo-data scenarios ``[[scenarios]]`` of the test sample with both methods
(:class:`ScenarioConfig`, :func:`scenario_weights`; both methods keep the nominal simulation as
their prior, so the scenarios measure their prior dependence). The shipped ones:

* ``nominal``: the test sample as generated (same spectrum as the training sample);
* ``reweighted``: weighted by ``exp(-0.004/GeV x particle-level top pT)``, normalised;
* ``mtt_reweighted``: weighted by ``exp(+0.002/GeV x particle-level m_ttbar)``, normalised (a
  harder m_ttbar spectrum);
* ``mtt_bump``: a resonance-like excess of 3 % of the events, a Gaussian bump in particle-level
  m_ttbar at 750 GeV with a width of 30 GeV, made by reweighting the test events.

It writes ``results.json`` (every histogram, unfolded spectrum and uncertainty);
:func:`make_report` (:mod:`hepflow.unfolding.report`) turns it into plots and
``report.json``. The flow and its set summary over the jets are built with the neutrino
analysis's builders; training goes through :func:`hepflow.fit`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from hepflow.config import COUNT, SAMPLES, SEED, AnalysisConfig, check_values, to_dict
from hepflow.errors import InputError, ModelError, OutputError
from hepflow.flows.config import FlowArchitecture
from hepflow.neutrino.config import SummaryConfig
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES, context_arrays
from hepflow.neutrino.model import build_flow as build_neutrino_flow
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.training.config import FitConfig
from hepflow.unfolding.binning import check_edges, histogram
from hepflow.unfolding.icinn import ICINNConfig
from hepflow.unfolding.neutrino_flow import NeutrinoFlowConfig
from hepflow.unfolding.observables import OBSERVABLES
from hepflow.unfolding.processor import ParticleSelection

log = logging.getLogger(__name__)

ANALYSIS = "ttbar_unfolding"
FEATURE_SPEC = {"flat": list(FLAT_FEATURES), "jets": list(JET_FEATURES), "targets": list(OBSERVABLES)}


@dataclass(frozen=True)
class BinningConfig:
    """Bin edges [GeV] per observable, shared by the particle and detector level (tails in the
    edge bins)."""

    top_pt: tuple[float, ...] = (0.0, 40.0, 80.0, 120.0, 160.0, 220.0, 300.0, 500.0)
    mtt: tuple[float, ...] = (300.0, 400.0, 450.0, 500.0, 575.0, 675.0, 850.0, 1200.0)

    def __post_init__(self) -> None:
        for name in OBSERVABLES:
            check_edges(getattr(self, name), name)

    def edges(self, name: str) -> np.ndarray:
        return check_edges(getattr(self, name), name)


@dataclass(frozen=True)
class IBUConfig:
    """Iterative Bayesian unfolding: iterations (the regularisation) and uncertainty toys."""

    iterations: int = 4
    toys: int = 200
    seed: int = 3

    def __post_init__(self) -> None:
        check_values(self, iterations=COUNT, toys=SAMPLES, seed=SEED)


@dataclass(frozen=True)
class FlowConfig(FlowArchitecture):
    """The cINN for p(log top pT, log m_ttbar | event): spline couplings, small for a CPU."""

    depth: int = 5
    width: int = 64
    bins: int = 8
    bound: float = 4.0


@dataclass(frozen=True)
class TrainingConfig(FitConfig):
    """``[training]``: :func:`hepflow.fit` options of every ensemble member."""

    epochs: int = 12
    batch_size: int = 512
    patience: int = 4
    max_events: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_values(self, max_events=COUNT)


@dataclass(frozen=True)
class CINNConfig:
    """Ensemble, posterior sampling and uncertainty replicas of the cINN unfolding."""

    ensemble: int = 3
    bootstrap_training: bool = True
    samples: int = 64
    batch_events: int = 4096
    bootstrap: int = 100
    sim_toys: int = 100
    seed: int = 7

    def __post_init__(self) -> None:
        check_values(
            self,
            ensemble=COUNT,
            samples=SAMPLES,
            batch_events=COUNT,
            bootstrap=SAMPLES,
            sim_toys=SAMPLES,
            seed=SEED,
        )


#: what a scenario does to the test events (see :class:`ScenarioConfig`)
SCENARIO_KINDS = ("nominal", "exponential", "bump")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class ScenarioConfig:
    """One pseudo-data scenario (a ``[[scenarios]]`` table): how the test events are weighted at
    particle level before both methods unfold them (:func:`scenario_weights`).

    * ``kind = "nominal"``: the test events as generated (no other key);
    * ``kind = "exponential"``: weight ``exp(slope * x)`` of the particle-level ``observable`` x
      [slope per GeV], normalised so that the sum of weights stays the event count (a change of
      the spectrum's shape);
    * ``kind = "bump"``: a localized excess, weight ``1 + c exp(-(x - centre)^2 / (2 width^2))``,
      with ``c`` such that the excess is ``fraction`` of the sum of weights of all test events;
      not normalised (the spectrum away from the bump stays the nominal one). The excess has the
      shape of the simulated spectrum times the Gaussian (its peak moves below ``centre`` by
      ``width^2`` times the spectrum's logarithmic slope, a few GeV) and the detector response of
      the reweighted events themselves.

    Events without a particle-level value keep their weight. ``name`` (lower case, digits,
    underscores) names the scenario in ``results.json``, ``report.json`` and the figures.

    Example:
        >>> ScenarioConfig(name="bump", kind="bump", observable="mtt", centre=750.0, width=30.0,
        ...                fraction=0.03).kind
        'bump'
        >>> ScenarioConfig(name="x", kind="bump", observable="mtt", centre=750.0)
        Traceback (most recent call last):
        ...
        ValueError: scenario 'x' (bump) needs width, fraction
    """

    name: str
    kind: Literal["nominal", "exponential", "bump"]
    observable: Literal["top_pt", "mtt"] | None = None
    slope: float | None = None  # per GeV (exponential)
    centre: float | None = None  # GeV (bump)
    width: float | None = None  # GeV (bump)
    fraction: float | None = None  # of the sum of weights (bump)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"scenario name {self.name!r} must be lower case letters, digits and underscores "
                "(starting with a letter, at most 40 characters)"
            )
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"scenario {self.name!r}: kind {self.kind!r} is not one of {SCENARIO_KINDS}")
        keys = {
            "nominal": (),
            "exponential": ("observable", "slope"),
            "bump": ("observable", "centre", "width", "fraction"),
        }[self.kind]
        given = [
            k for k in ("observable", "slope", "centre", "width", "fraction") if getattr(self, k) is not None
        ]
        if missing := [k for k in keys if getattr(self, k) is None]:
            raise ValueError(f"scenario {self.name!r} ({self.kind}) needs {', '.join(missing)}")
        if extra := [k for k in given if k not in keys]:
            raise ValueError(f"scenario {self.name!r} ({self.kind}) takes no {', '.join(extra)}")
        for key in ("slope", "centre", "width", "fraction"):
            value = getattr(self, key)
            if value is not None and not np.isfinite(value):
                raise ValueError(f"scenario {self.name!r}: {key} must be finite, got {value}")
        if self.kind == "exponential" and abs(self.slope) > 0.05:  # type: ignore[arg-type]
            raise ValueError(
                f"scenario {self.name!r}: |slope| {abs(self.slope)} per GeV > 0.05 would leave a "  # type: ignore[arg-type]
                "few events with all the weight"
            )
        if self.kind == "bump":
            if self.width <= 0:  # type: ignore[operator]
                raise ValueError(f"scenario {self.name!r}: width must be > 0 GeV, got {self.width}")
            if not 0 < self.fraction <= 0.5:  # type: ignore[operator]
                raise ValueError(f"scenario {self.name!r}: fraction must be in (0, 0.5], got {self.fraction}")

    def describe(self) -> str:
        """One line: what the scenario does to the test events.

        Example:
            >>> ScenarioConfig(name="soft", kind="exponential", observable="top_pt", slope=-0.004).describe()
            'test events weighted by exp(-0.004/GeV x top_pt), normalised'
        """
        if self.kind == "nominal":
            return "test events as generated"
        if self.kind == "exponential":
            return f"test events weighted by exp({self.slope:g}/GeV x {self.observable}), normalised"
        return (
            f"excess of {100 * self.fraction:g}% of the events: Gaussian bump in {self.observable} "  # type: ignore[operator]
            f"at {self.centre:g} GeV, width {self.width:g} GeV (reweighting)"
        )


def _default_scenarios() -> tuple[ScenarioConfig, ...]:
    return (
        ScenarioConfig(name="nominal", kind="nominal"),
        ScenarioConfig(name="reweighted", kind="exponential", observable="top_pt", slope=-0.004),
        ScenarioConfig(name="mtt_reweighted", kind="exponential", observable="mtt", slope=0.002),
        ScenarioConfig(
            name="mtt_bump", kind="bump", observable="mtt", centre=750.0, width=30.0, fraction=0.03
        ),
    )


@dataclass(frozen=True)
class UnfoldingConfig(AnalysisConfig):
    """The whole unfolding config (the shipped ``hepflow/unfolding/config.toml``)."""

    shipped = "unfolding"

    selection: NeutrinoSelection = field(default_factory=NeutrinoSelection)
    particle: ParticleSelection = field(default_factory=ParticleSelection)
    binning: BinningConfig = field(default_factory=BinningConfig)
    ibu: IBUConfig = field(default_factory=IBUConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    cinn: CINNConfig = field(default_factory=CINNConfig)
    scenarios: tuple[ScenarioConfig, ...] = field(default_factory=_default_scenarios)
    neutrino_flow: NeutrinoFlowConfig = field(default_factory=NeutrinoFlowConfig)
    icinn: ICINNConfig = field(default_factory=ICINNConfig)

    def __post_init__(self) -> None:
        names = [s.name for s in self.scenarios]
        if not names:
            raise ValueError("scenarios: give at least one [[scenarios]] table")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"scenarios: the name {dupes[0]!r} is used more than once")


# --- data ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """Both levels of every event of a processed sample (numpy; NaN where a level fails)."""

    weight: np.ndarray
    fiducial: np.ndarray
    selected: np.ndarray
    gen: dict[str, np.ndarray]
    reco: dict[str, np.ndarray]
    features: ak.Array  # feature columns of the selected events (plain types)

    @property
    def n(self) -> int:
        return len(self.weight)


def _float(column: ak.Array) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.fill_none(column, np.nan)), dtype=np.float64)


def load_sample(directory: str | os.PathLike[str]) -> Sample:
    """Read the processed chunks of :class:`hepflow.unfolding.processor.UnfoldingProcessor`."""
    from hepflow.outputs import read_parquet_dir

    columns = read_parquet_dir(directory)
    needed = {"run", "luminosityBlock", "event", "weight", "gen_fiducial", "reco_selected"} | {
        f"{p}_{o}" for p in ("gen", "reco") for o in OBSERVABLES
    }
    if missing := needed - set(columns.fields):
        raise InputError(f"{directory}: not unfolding columns, missing {sorted(missing)}")
    ids = np.empty(len(columns), dtype=[("run", np.uint64), ("lumi", np.uint64), ("event", np.uint64)])
    for key, name in (("run", "run"), ("lumi", "luminosityBlock"), ("event", "event")):
        ids[key] = ak.to_numpy(columns[name])
    if len(np.unique(ids)) != len(ids):
        raise InputError(
            f"{directory}: the same events appear in several chunks (outputs of runs over different "
            "datasets?); process into an empty directory"
        )
    selected = np.asarray(ak.to_numpy(columns.reco_selected), dtype=bool)
    sub = columns[selected]
    # the lepton's momentum (for hepflow.neutrino.downstream) and the truth neutrino (for the flow
    # neutrino of hepflow.unfolding.neutrino_flow) when written
    feature_names = [*FLAT_FEATURES, *JET_FEATURES]
    extra = ("lep_pz", "lep_e", "nu_px_true", "nu_py_true", "nu_eta_true")
    feature_names += [k for k in extra if k in columns.fields and k not in feature_names]
    features = ak.zip(
        {k: ak.drop_none(sub[k]) if sub[k].ndim == 1 else sub[k] for k in feature_names}, depth_limit=1
    )
    sample = Sample(
        weight=np.asarray(ak.to_numpy(columns.weight), dtype=np.float64),
        fiducial=np.asarray(ak.to_numpy(columns.gen_fiducial), dtype=bool),
        selected=selected,
        gen={o: _float(columns[f"gen_{o}"]) for o in OBSERVABLES},
        reco={o: _float(columns[f"reco_{o}"]) for o in OBSERVABLES},
        features=features,
    )
    for level, values, passes in (("gen", sample.gen, sample.fiducial), ("reco", sample.reco, selected)):
        for name, v in values.items():
            if not np.isfinite(v[passes]).all():
                raise InputError(f"{directory}: non-finite {level}_{name} in events passing that level")
    return sample


def scenario_weights(sample: Sample, scenario: ScenarioConfig) -> np.ndarray:
    """Event weights of a scenario's pseudo-data (see :class:`ScenarioConfig`); events without a
    particle-level value keep their weight.

    Example:
        >>> s = Sample(np.ones(4), np.ones(4, bool), np.ones(4, bool),
        ...            {"mtt": np.array([400.0, 750.0, 750.0, 1000.0]), "top_pt": np.zeros(4)}, {}, None)
        >>> bump = ScenarioConfig(name="b", kind="bump", observable="mtt", centre=750.0, width=10.0,
        ...                       fraction=0.5)
        >>> scenario_weights(s, bump).round(6).tolist()  # 2 more events, all at 750 GeV
        [1.0, 2.0, 2.0, 1.0]
    """
    w = sample.weight
    if scenario.kind == "nominal":
        return w.copy()
    x = sample.gen[scenario.observable]  # type: ignore[index]
    valid = np.isfinite(x)
    x0 = np.nan_to_num(x)
    if scenario.kind == "exponential":
        factor = np.where(valid, np.exp(scenario.slope * x0), 1.0)  # type: ignore[operator]
        out = w * factor
        return out * w.sum() / out.sum()
    gauss = np.where(valid, np.exp(-0.5 * ((x0 - scenario.centre) / scenario.width) ** 2), 0.0)  # type: ignore[operator]
    overlap = float((w * gauss).sum())
    if overlap <= 0:
        raise InputError(
            f"scenario {scenario.name!r}: no test event has {scenario.observable} near "
            f"{scenario.centre:g} GeV (width {scenario.width:g}); the bump cannot be made by reweighting"
        )
    return w * (1.0 + scenario.fraction * w.sum() / overlap * gauss)  # type: ignore[operator]


# --- models --------------------------------------------------------------------------------


def build_flow(cfg: UnfoldingConfig, *, seed: int | None = None) -> Any:
    """The cINN for p(log top pT, log m_ttbar | detector-level event): the neutrino analysis's
    flow and summary network (flat features + attention over the jets) with these targets."""
    return build_neutrino_flow(cfg.flow, cfg.summary, theta_dim=len(OBSERVABLES), seed=seed)


def to_theta(gen: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The flow's target: log of each observable (positive by construction), (n, 2) float32."""
    return np.stack([np.log(np.maximum(gen[o][rows], 1e-3)) for o in OBSERVABLES], axis=1).astype(np.float32)


def from_theta(samples: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_theta` on samples of any shape (..., 2), float64."""
    return np.exp(np.clip(samples.astype(np.float64), -50.0, 50.0))


def check_samples(samples: np.ndarray, models: str | os.PathLike[str]) -> np.ndarray:
    """``samples`` (events first), refused (:class:`~hepflow.errors.ModelError`) when any event's
    samples hold NaN or inf (a broken model), so that no unfolded spectrum is built from them.

    Example:
        >>> check_samples(np.array([[[1.0, 2.0]], [[np.nan, 1.0]]]), "m")
        Traceback (most recent call last):
        ...
        hepflow.errors.ModelError: m: the cINN gives NaN or infinite samples for 1 of 2 events; ...
    """
    finite = np.isfinite(samples).reshape(len(samples), -1).all(axis=1)
    if not finite.all():
        raise ModelError(
            f"{models}: the cINN gives NaN or infinite samples for {int((~finite).sum())} of "
            f"{len(samples)} events; nothing written"
        )
    return samples


def _model_metadata(cfg: UnfoldingConfig, n_train: int) -> dict[str, Any]:
    return {
        "analysis": ANALYSIS,
        "features": FEATURE_SPEC,
        "training_events": n_train,
        "config": {
            k: to_dict(getattr(cfg, k)) for k in ("selection", "particle", "summary", "flow", "training")
        },
        "ensemble": {"bootstrap_training": cfg.cinn.bootstrap_training},
    }


def training_rows(train: Sample, cfg: UnfoldingConfig) -> tuple[np.ndarray, np.ndarray]:
    """The cINN's training events: their rows among the selected events (``train.features``)
    and among all events; refused with fewer than 100."""
    # the selected events (rows of train.features) that also pass the particle level
    both = np.flatnonzero(train.fiducial[train.selected])
    if cfg.training.max_events is not None:
        both = both[: cfg.training.max_events]
    if len(both) < 100:
        raise InputError(f"only {len(both)} training events pass both levels; need at least 100")
    return both, np.flatnonzero(train.selected)[both]  # the same events among all events


def train_or_load(
    train: Sample, cfg: UnfoldingConfig, model_dir: Path, *, retrain: bool = False, progress: bool = True
) -> tuple[list[Any], dict[str, Any]]:
    """The ensemble: loaded from ``model_dir`` when it was trained with the same settings on as
    many events, trained (and saved) there when ``model_dir`` holds no model, or with
    ``retrain``; models of other settings (or an incomplete ensemble) are refused
    (:class:`~hepflow.errors.OutputError`) without ``retrain``, before any training."""
    import hepflow
    from hepflow.flows.serialization import read_config
    from hepflow.outputs import write_json
    from hepflow.unfolding.cinn import train_ensemble

    both, rows = training_rows(train, cfg)
    meta = _model_metadata(cfg, len(rows))
    paths = [model_dir / f"member_{m}" for m in range(cfg.cinn.ensemble)]
    existing = [p for p in paths if (p / "config.json").is_file()]
    if existing and not retrain:
        # the saved settings are compared before any weights are read
        same = all((read_config(p).get("metadata", {}) or {}).get("study") == meta for p in existing)
        if same and len(existing) == len(paths):
            log.info("using the trained ensemble in %s", model_dir)
            models = [hepflow.load_model(p) for p in paths]
            return models, json.loads((model_dir / "training.json").read_text())
        raise OutputError(
            f"{model_dir} holds {'an incomplete ensemble' if same else 'models of other settings'}: "
            "pass --retrain to replace them, or choose another --output"
        )
    context = {k: v[both] for k, v in context_arrays(train.features).items()}
    theta = to_theta(train.gen, rows)
    models, members = train_ensemble(
        lambda seed: build_flow(cfg, seed=seed),
        theta,
        context,
        fit=cfg.training,
        members=cfg.cinn.ensemble,
        bootstrap=cfg.cinn.bootstrap_training,
        output_dir=model_dir,
        progress=progress,
    )
    for model, path in zip(models, paths, strict=True):
        hepflow.save_model(
            model,
            path,
            metadata={"analysis": ANALYSIS, "features": FEATURE_SPEC, "study": meta},
            overwrite=retrain,
        )
    summary = {"events": len(rows), "members": members, "seconds": sum(m["seconds"] for m in members)}
    write_json(model_dir / "training.json", summary)
    return models, summary


# --- the study -----------------------------------------------------------------------------


def process(
    files: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    config: UnfoldingConfig | None = None,
    run_config: Any = None,
    dataset: str = "ttbar",
) -> dict[str, Any]:
    """Run :class:`hepflow.unfolding.processor.UnfoldingProcessor` over ``files`` (resumable chunks)."""
    from hepflow.processing import RunConfig, build_fileset, run_processor
    from hepflow.unfolding.processor import UnfoldingProcessor

    cfg = UnfoldingConfig.load(config)
    return run_processor(
        UnfoldingProcessor(cfg.selection, cfg.particle),
        build_fileset(list(files), dataset=dataset),
        output_dir,
        run_config or RunConfig(progress=False),
    )


def _scenario(
    name: str,
    data: Sample,
    weights: np.ndarray,
    *,
    responses: dict[str, Any],
    fakes: Any,
    samples: np.ndarray,
    cfg: UnfoldingConfig,
    flow: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None,
    icinn: tuple[list[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    from hepflow.unfolding.cinn import unfold_cinn
    from hepflow.unfolding.ibu import unfold_ibu

    sel = data.selected
    reco_values = [data.reco[o][sel] for o in OBSERVABLES]
    cinn = unfold_cinn(
        samples,
        responses=[responses[o] for o in OBSERVABLES],
        fake_rate=fakes,
        reco_values=reco_values,
        weights=weights[sel],
        bootstrap=cfg.cinn.bootstrap,
        sim_toys=cfg.cinn.sim_toys,
        seed=cfg.cinn.seed,
    )
    out: dict[str, Any] = {"events": int(data.n), "sum_weights": float(weights.sum())}
    for i, obs in enumerate(OBSERVABLES):
        response = responses[obs]
        edges = cfg.binning.edges(obs)
        truth, truth_var = histogram(data.gen[obs][data.fiducial], edges, weights=weights[data.fiducial])
        reco, reco_var = histogram(data.reco[obs][sel], edges, weights=weights[sel])
        ibu, steps = unfold_ibu(
            reco, reco_var, response, iterations=cfg.ibu.iterations, toys=cfg.ibu.toys, seed=cfg.ibu.seed
        )
        out[obs] = {
            "edges": edges.tolist(),
            "truth": truth.tolist(),
            "truth_var": truth_var.tolist(),
            "reco": reco.tolist(),
            "reco_var": reco_var.tolist(),
            "prior": response.truth.tolist(),
            "efficiency": response.efficiency.tolist(),
            "fake_fraction": response.fake_fraction.tolist(),
            "ibu": ibu.to_dict(),
            "ibu_iterates": steps.tolist(),
            "cinn": cinn[i].to_dict(),
        }
        if flow is not None:  # IBU with the flow neutrino's detector-level values
            flow_responses, flow_reco = flow
            d, dv = histogram(flow_reco[obs][sel], edges, weights=weights[sel])
            ibu_flow, _ = unfold_ibu(
                d,
                dv,
                flow_responses[obs],
                iterations=cfg.ibu.iterations,
                toys=cfg.ibu.toys,
                seed=cfg.ibu.seed,
            )
            out[obs]["reco_flow"] = d.tolist()
            out[obs]["ibu_flow"] = ibu_flow.to_dict()
        if icinn is not None:
            out[obs]["icinn"] = icinn[0][i].to_dict()
            out[obs]["icinn_iterates"] = [c[i] for c in icinn[1]["centrals"]]
    if icinn is not None:
        out["icinn"] = {k: v for k, v in icinn[1].items() if k != "centrals"}
    log.info("unfolded scenario %s", name)
    return out


def _icinn(
    scenario: ScenarioConfig,
    test: Sample,
    weights: np.ndarray,
    *,
    train: Sample,
    models: list[Any],
    cfg: UnfoldingConfig,
) -> tuple[list[Any], dict[str, Any]]:
    """Iterative cINN unfolding of one scenario (:func:`hepflow.unfolding.icinn.unfold_icinn`)."""
    from hepflow.unfolding.cinn import sample_ensemble, unfold_cinn
    from hepflow.unfolding.icinn import make_finetune, unfold_icinn
    from hepflow.unfolding.response import build_response, fake_rate

    t0 = time.perf_counter()
    sel = test.selected
    reco_values = [test.reco[o][sel] for o in OBSERVABLES]
    edges = [cfg.binning.edges(o) for o in OBSERVABLES]
    context_test = context_arrays(test.features)
    both, rows = training_rows(train, cfg)
    context_train = {k: v[both] for k, v in context_arrays(train.features).items()}

    def sample(current: Any) -> np.ndarray:
        draws = sample_ensemble(
            current,
            context_test,
            samples=cfg.cinn.samples,
            batch_events=cfg.cinn.batch_events,
            seed=cfg.cinn.seed,
        )
        return check_samples(from_theta(draws), f"icinn {scenario.name}")

    def rebuild(factor: np.ndarray) -> tuple[list[Any], Any]:
        w = train.weight * factor
        kw = {"passes_truth": train.fiducial, "passes_reco": train.selected, "weights": w}
        responses = [
            build_response(train.gen[o], train.reco[o], truth_edges=e, reco_edges=e, **kw)
            for o, e in zip(OBSERVABLES, edges, strict=True)
        ]
        return responses, fake_rate([train.reco[o] for o in OBSERVABLES], edges, **kw)

    def unfold(samples: np.ndarray, responses: Any, fakes: Any) -> list[Any]:
        return unfold_cinn(
            samples,
            responses=responses,
            fake_rate=fakes,
            reco_values=reco_values,
            weights=weights[sel],
            bootstrap=cfg.cinn.bootstrap,
            sim_toys=cfg.cinn.sim_toys,
            seed=cfg.cinn.seed,
        )

    result, summary = unfold_icinn(
        models,
        sample=sample,
        unfold=unfold,
        rebuild=rebuild,
        finetune=make_finetune(
            to_theta(train.gen, rows),
            context_train,
            rows,
            fit=cfg.training,
            epochs=cfg.icinn.epochs,
            bootstrap=cfg.cinn.bootstrap_training,
            build=(lambda seed: build_flow(cfg, seed=seed)) if cfg.icinn.training == "retrain" else None,
            lr_scale=cfg.icinn.lr_scale,
        ),
        train_gen=[train.gen[o] for o in OBSERVABLES],
        train_fiducial=train.fiducial,
        train_selected=train.selected,
        train_weights=train.weight,
        edges=edges,
        fake_lookup=lambda fakes: fakes.lookup(reco_values),
        data_weights=weights[sel],
        cfg=cfg.icinn,
    )
    summary["seconds"] = time.perf_counter() - t0
    log.info("IcINN %s: %s", scenario.name, summary["stopped"])
    return result, summary


def _responses(train: Sample, reco: Mapping[str, np.ndarray], cfg: UnfoldingConfig) -> dict[str, Any]:
    """The response of every observable from the training sample's truth to ``reco`` (its
    detector-level values: with the quadratic or the flow neutrino)."""
    from hepflow.unfolding.response import build_response

    return {
        o: build_response(
            train.gen[o],
            reco[o],
            truth_edges=cfg.binning.edges(o),
            reco_edges=cfg.binning.edges(o),
            passes_truth=train.fiducial,
            passes_reco=train.selected,
            weights=train.weight,
        )
        for o in OBSERVABLES
    }


def run_study(
    train_files: Sequence[str | os.PathLike[str]],
    test_files: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    config: UnfoldingConfig | None = None,
    run_config: Any = None,
    retrain: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole study; writes ``output_dir/results.json`` and returns its content.

    ``output_dir`` receives the processed columns (``columns/train``, ``columns/test``: reused,
    chunk by chunk, when present), the ensemble (``models/``: reused when trained with the same
    settings unless ``retrain``; other models are replaced only with ``retrain``) and
    ``results.json``. ``run_config`` is a
    :class:`hepflow.processing.RunConfig` for the processing step.
    """
    from hepflow.outputs import write_json
    from hepflow.processing import cutflow_to_dict
    from hepflow.unfolding.cinn import sample_ensemble
    from hepflow.unfolding.response import fake_rate

    cfg = UnfoldingConfig.load(config)
    out = Path(output_dir)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cutflows = {}
    for name, files in (("train", train_files), ("test", test_files)):
        result = process(files, out / "columns" / name, config=cfg, run_config=run_config, dataset=name)
        cutflows[name] = cutflow_to_dict(result["cutflow"])
    train, test = load_sample(out / "columns" / "train"), load_sample(out / "columns" / "test")
    timings["processing"] = time.perf_counter() - t0

    responses = _responses(train, train.reco, cfg)
    fakes = fake_rate(
        [train.reco[o] for o in OBSERVABLES],
        [cfg.binning.edges(o) for o in OBSERVABLES],
        passes_truth=train.fiducial,
        passes_reco=train.selected,
        weights=train.weight,
    )

    t0 = time.perf_counter()
    models, training = train_or_load(train, cfg, out / "models", retrain=retrain, progress=progress)
    timings["training"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    samples = check_samples(
        from_theta(
            sample_ensemble(
                models,
                context_arrays(test.features),
                samples=cfg.cinn.samples,
                batch_events=cfg.cinn.batch_events,
                seed=cfg.cinn.seed,
            )
        ),
        out / "models",
    )
    timings["sampling"] = time.perf_counter() - t0

    flow = None
    if cfg.neutrino_flow.enabled:
        from hepflow.unfolding.neutrino_flow import flow_observables

        t0 = time.perf_counter()
        train_flow, test_flow, flow_summary = flow_observables(
            train, test, cfg, out / "neutrino_models", retrain=retrain, progress=progress
        )
        flow_responses = _responses(train, train_flow, cfg)
        flow = (flow_responses, test_flow)
        timings["neutrino_flow"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scenarios = {
        sc.name: {
            "description": sc.describe(),
            **_scenario(
                sc.name,
                test,
                scenario_weights(test, sc),
                responses=responses,
                fakes=fakes,
                samples=samples,
                cfg=cfg,
                flow=flow,
                icinn=_icinn(sc, test, scenario_weights(test, sc), train=train, models=models, cfg=cfg)
                if cfg.icinn.enabled
                else None,
            ),
        }
        for sc in cfg.scenarios
    }
    timings["unfolding"] = time.perf_counter() - t0
    results = {
        "analysis": ANALYSIS,
        "config": to_dict(cfg),
        "inputs": {"train": [str(f) for f in train_files], "test": [str(f) for f in test_files]},
        "cutflow": cutflows,
        "counts": {
            name: {
                "events": s.n,
                "fiducial": int(s.fiducial.sum()),
                "selected": int(s.selected.sum()),
                "both": int((s.fiducial & s.selected).sum()),
                "fakes": int((s.selected & ~s.fiducial).sum()),
            }
            for name, s in (("train", train), ("test", test))
        },
        "training": training,
        "neutrino_flow": flow_summary if flow is not None else None,
        "timings_s": timings,
        "scenarios": scenarios,
    }
    write_json(out / "results.json", results)
    return results


def make_report(
    study_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Plots and ``report.json`` from ``study_dir/results.json`` (into ``output_dir``, default
    ``study_dir/report``); see :mod:`hepflow.unfolding.report`."""
    from hepflow.unfolding.report import make_report as _make_report

    return _make_report(study_dir, output_dir)


def study_summary(results: dict[str, Any], report: dict[str, Any], study_dir: str | os.PathLike[str]) -> str:
    """What ``hepflow unfold ttbar`` prints: chi2/ndf of both methods per scenario and
    observable, the verdict line of every scenario, the timings and where the report is."""
    lines = []
    for scenario, entry in report["scenarios"].items():
        for name, table in entry["observables"].items():
            chis = ", ".join(
                f"{m} chi2/ndf {table[m]['chi2']:.1f}/{table[m]['ndf']}"
                for m in ("ibu", "ibu_flow", "cinn", "icinn")
                if m in table
            )
            lines.append(f"{scenario:>14} {name:>6}: {chis}")
    lines += [f"verdict {line}" for line in report["verdicts"]]
    lines += [f"WARNING: {line}" for line in report.get("warnings", [])]
    lines.append(f"timings [s]: {results['timings_s']}")
    lines.append(f"report in {Path(study_dir) / 'report'}")
    return "\n".join(lines)
