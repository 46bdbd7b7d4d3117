"""Build the pretrained neutrino model: generate, process, train, test on a held-out sample,
write the model card, install. ``tools/build_pretrained.py`` is its command line.

Stages (:func:`build`), each recorded in ``<work>/stages.json`` with the settings it ran with and
skipped on a rerun when its output exists and those settings match (so an interrupted build
resumes at the stage it stopped in; changing the config retrains and retests):

1. ``generate train_<k>.root``: ``jobs`` training files in parallel processes, seeds
   ``train_seed + k``, and ``generate test.root``: the held-out sample, seed ``test_seed`` (never
   one of the training seeds), all with the detector's pileup profile;
2. ``process train``: the feature processor over the training files;
3. ``train``: the cINN and the regression with the config;
4. ``infer test`` and ``report test``: the model on the held-out sample, and its report;
5. ``install``: the model files, ``card.json`` and ``card.md`` into the target (by default the
   package-data folder :data:`hepflow.neutrino.pretrained.LOCATION`), refused when the model is
   larger than :data:`~hepflow.neutrino.pretrained.card.MAX_BYTES`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hepflow import __version__
from hepflow.config import json_plain, to_dict
from hepflow.errors import ConfigError
from hepflow.generate.pileup import PileupProfile
from hepflow.generate.ttbar import ttbar_matches
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.pretrained import LOCATION
from hepflow.neutrino.pretrained.card import CARD_JSON, MODEL_FILES, install_model, sha256_file
from hepflow.neutrino.verdicts import report_verdicts

__all__ = ["BuildPlan", "build"]

log = logging.getLogger(__name__)
STAGES_FILE = "stages.json"


@dataclass(frozen=True)
class BuildPlan:
    """What to build: samples, config, where to work and where to install.

    ``train_events`` default to the config's ``[generation] train_events``, split over ``jobs``
    files (one process each); the held-out sample has ``test_events`` (``[generation]``) with
    ``test_seed``.
    """

    work: Path
    config: NeutrinoConfig = field(default_factory=NeutrinoConfig)
    train_events: int | None = None
    test_events: int | None = None
    jobs: int = 1
    pileup: PileupProfile = field(default_factory=PileupProfile)
    target: Path = LOCATION
    progress: bool = False

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {self.jobs}")
        if self.n_train < self.jobs:
            raise ConfigError(f"{self.n_train} training events cannot be split over {self.jobs} jobs")
        if self.config.generation.test_seed in self.seeds:
            raise ConfigError(
                f"[generation] test_seed = {self.config.generation.test_seed} is one of the training "
                f"seeds {self.seeds}: the held-out sample must use another seed"
            )

    @property
    def n_train(self) -> int:
        return self.train_events or self.config.generation.train_events

    @property
    def n_test(self) -> int:
        return self.test_events or self.config.generation.test_events

    @property
    def seeds(self) -> list[int]:
        return [self.config.generation.train_seed + k for k in range(self.jobs)]

    def train_files(self) -> list[tuple[Path, int, int]]:
        """(path, events, seed) of each training file: the events split evenly over the jobs."""
        base, extra = divmod(self.n_train, self.jobs)
        return [
            (self.work / f"train_{k}.root", base + (k < extra), seed) for k, seed in enumerate(self.seeds)
        ]

    def test_file(self) -> tuple[Path, int, int]:
        return self.work / "test.root", self.n_test, self.config.generation.test_seed


def _stamps(work: Path) -> dict[str, Any]:
    path = work / STAGES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _stage(work: Path, name: str, key: Mapping[str, Any], done: bool, run: Callable[[], Any]) -> bool:
    """Run stage ``name`` unless its output exists (``done``) and its recorded settings equal
    ``key``; record ``key`` when it ran. Returns whether it ran."""
    from hepflow.outputs import write_json

    plain = json.loads(json.dumps(json_plain(dict(key)), sort_keys=True))
    if done and _stamps(work).get(name) == plain:
        log.info("stage %s: done, skipped", name)
        return False
    log.info("stage %s", name)
    run()
    write_json(work / STAGES_FILE, {**_stamps(work), name: plain})
    return True


def _generate(path: Path, events: int, seed: int, pileup: PileupProfile) -> None:
    from hepflow.generate.ttbar import generate_ttbar

    generate_ttbar(path, events=events, seed=seed, pileup=pileup, progress=False, overwrite=True)


def _model_sums(model_dir: Path) -> dict[str, str]:
    return {name: sha256_file(model_dir / name) for name in MODEL_FILES if (model_dir / name).is_file()}


def build(plan: BuildPlan) -> dict[str, Any]:
    """Run the stages of ``plan`` (skipping those done with the same settings); returns the card."""
    from hepflow.neutrino import pipeline
    from hepflow.processing import RunConfig

    work, cfg = plan.work, plan.config
    work.mkdir(parents=True, exist_ok=True)
    pileup = dataclasses.asdict(plan.pileup)
    files = [*plan.train_files(), plan.test_file()]
    todo = []
    for path, n, seed in files:
        key = {"events": n, "seed": seed, "pileup": pileup, "hepflow": __version__}
        todo.append((path, n, seed, key))
    pending = [
        t
        for t in todo
        if not (
            ttbar_matches(t[0], t[1], t[2])
            and _stamps(work).get(f"generate {t[0].name}") == json.loads(json.dumps(t[3], sort_keys=True))
        )
    ]
    if pending:
        log.info("generating %s in %d processes", ", ".join(t[0].name for t in pending), plan.jobs)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(plan.jobs, len(pending)), mp_context=ctx) as pool:
            futures = [pool.submit(_generate, p, n, s, plan.pileup) for p, n, s, _ in pending]
            for f in futures:
                f.result()
    for path, n, seed, key in todo:  # record what was generated (and what was already there)
        _stage(work, f"generate {path.name}", key, True, lambda: None)
        if not ttbar_matches(path, n, seed):  # pragma: no cover - generate_ttbar writes it whole
            raise ConfigError(f"{path} was not generated with {n} events and seed {seed}")
    generated = {path.name: key for path, _, _, key in todo}

    run = RunConfig(progress=plan.progress, overwrite=True)
    train_names = [p.name for p, _, _ in plan.train_files()]
    process_key = {"files": {n: generated[n] for n in train_names}, "selection": to_dict(cfg.selection)}
    features, models = work / "features_train", work / "models"
    _stage(
        work,
        "process train",
        process_key,
        (features / "run.json").is_file(),
        lambda: pipeline.process([p for p, _, _ in plan.train_files()], features, config=cfg, run_config=run),
    )
    train_key = {"data": process_key, "config": to_dict(cfg)}
    _stage(
        work,
        "train",
        train_key,
        (models / "training.json").is_file(),
        lambda: pipeline.train(features, models, config=cfg, progress=plan.progress, overwrite=True),
    )
    test_path = plan.test_file()[0]
    infer_key = {"model": _model_sums(models), "test": generated[test_path.name], "config": to_dict(cfg)}
    inference, report_dir = work / "inference_test", work / "report_test"
    _stage(
        work,
        "infer test",
        infer_key,
        (inference / "run.json").is_file(),
        lambda: pipeline.infer(models, [test_path], inference, config=cfg, run_config=run),
    )
    _stage(
        work,
        "report test",
        infer_key,
        (report_dir / "report.json").is_file(),
        lambda: pipeline.report(inference, report_dir),
    )
    card = model_card(plan, json.loads((report_dir / "report.json").read_text()))
    install_key = {"model": _model_sums(models), "report": sha256_file(report_dir / "report.json")}

    def installed() -> bool:
        try:
            shipped = json.loads((plan.target / CARD_JSON).read_text())["files"]
        except (OSError, ValueError, KeyError):
            return False
        return {k: v["sha256"] for k, v in shipped.items()} == install_key["model"]

    _stage(work, "install", install_key, installed(), lambda: install_model(models, plan.target, card=card))
    return json.loads((plan.target / CARD_JSON).read_text())


#: what the card says the model is for (README "Which model")
INTENDED_USE = (
    "Neutrino momentum posteriors for semileptonic ttbar events (one isolated electron or muon, at "
    "least four jets, one b tag) selected as in the shipped config, trained on Pythia 8 events "
    "through hepflow's fast CMS-like detector with pileup. For a full-simulation or other-detector "
    "analysis, train your own model on your simulation (README: 'Which model: pretrained fast "
    "simulation or your own full simulation')."
)


def model_card(plan: BuildPlan, report: Mapping[str, Any]) -> dict[str, Any]:
    """The card of the model ``plan`` builds (without ``files``, added when installed): its
    training data and seeds, detector (pileup), config, and held-out metrics from ``report``."""
    training = json.loads((plan.work / "models" / "training.json").read_text())
    try:
        from importlib.metadata import version

        pythia = version("pythia8mc")
    except Exception:  # pragma: no cover - generation needs it
        pythia = "unknown"
    components = ("px", "py", "pz")
    resolution = {
        method: {c: {k: comps[c][k] for k in ("bias", "rms", "iqr_width")} for c in components}
        for method, comps in report["resolution"]["all"].items()
    }
    metrics: dict[str, Any] = {
        "verdicts": report_verdicts(report),
        "resolution": resolution,
        "coverage": report["calibration"]["coverage"],
        "sbc_ks_pvalue": report["calibration"]["sbc"]["ks_pvalue"],
    }
    for key in ("crps", "energy_score", "downstream", "spectra"):  # newer reports
        if key in report:
            metrics[key] = report[key]
    return {
        "model": "ttbar_neutrino cINN (p(nu px, py, eta | event)) + regression baseline",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "hepflow_version": __version__,
        "intended_use": INTENDED_USE,
        "training_data": {
            "generator": f"Pythia 8 (pythia8mc {pythia}), semileptonic ttbar at 13 TeV",
            "generated_events": plan.n_train,
            "files": [p.name for p, _, _ in plan.train_files()],
            "seeds": plan.seeds,
            "events_used": training["events_used"],
            "training_seed": plan.config.training.seed,
        },
        "held_out": {
            "generated_events": plan.n_test,
            "seed": plan.config.generation.test_seed,
            "events_with_truth": report["events"],
        },
        "detector": {
            "simulation": "hepflow.generate.detector: fast CMS-like response, NanoAOD branches",
            "pileup_mean": plan.pileup.mean,
            "pileup_spread": plan.pileup.spread,
        },
        "config": to_dict(plan.config),
        "metrics": metrics,
    }


def default_jobs() -> int:
    """Every core: the generation jobs of a build."""
    return max(1, os.cpu_count() or 1)
