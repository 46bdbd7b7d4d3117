"""``hepflow demo``: the main job on the embedded default data, end to end, in minutes on a CPU.

Each step is a library call that the command line also exposes.

**Neutrino** (``hepflow.neutrino``, README ``analyses/ttbar_neutrino``; needs the ``[generate]`` extra):

1. generate a small semileptonic ttbar training sample and a held-out test sample with Pythia 8
   and the fast CMS-like detector, written as NanoAOD (``hepflow generate ttbar``);
2. run the neutrino feature processor over them (``hepflow process neutrino``);
3. train a small cINN and the regression baseline (``hepflow train neutrino``);
4. write posterior columns for the held-out sample and for the real CMS NanoAOD ttbar sample
   shipped with the tests (``hepflow infer neutrino``), with the small model and, when hepflow
   ships one (:mod:`hepflow.neutrino.pretrained`), with the pretrained model (in ``pretrained/``);
5. write the comparison report with its plots for each (``hepflow report neutrino``), and print
   the verdict per metric (:func:`hepflow.neutrino.verdicts.report_verdicts`): the pretrained
   model's first, as the result, then the small model's, labelled as a demonstration; without a
   pretrained model one line says so.

**Cosmic rays** (``hepflow.cosmic``; needs the ``[cosmic]`` extra), into ``cosmic/``:

0. draw the posterior of the pretrained cosmic model (:mod:`hepflow.cosmic.pretrained`, trained
   with the energy- and Xmax-scale nuisances) for the published Auger data, with its model check
   (``hepflow infer cosmic --observation auger``), and print it first, with the verdict its card
   records against the MCMC with the same nuisances and what to run for a result
   (:func:`pretrained_cosmic_lines`);
6. generate pseudo-experiments of the forward model with parameters from the prior
   (``hepflow generate cosmic``);
7. build their features with the cosmic processor, in chunks (``hepflow process cosmic``);
8. train the analysis cINN briefly (``hepflow train cosmic``);
9. draw the posterior for the published Auger data (``hepflow infer cosmic --observation auger``);
10. a short MCMC on the same data (``hepflow mcmc cosmic``);
11. the report with both posteriors and the corner plots (``hepflow report cosmic``).

A summary at the end says where every output is. The samples are small and the trainings
short, so the numbers show the workflow, not the physics reach: the analysis configs and the
README give the full-size commands. A rerun reuses the generated samples (when their size and
seed match) and the processed chunks, and redoes the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hepflow.errors import ConfigError, HepflowError
from hepflow.neutrino.verdicts import report_verdicts

#: training settings of the neutrino demo: the analysis model, trained briefly
DEMO_TRAINING = {"epochs": 20, "patience": 5, "batch_size": 128}
DEMO_SAMPLES = 64
#: cosmic demo: pseudo-experiments, chunk size of their processing, and the analysis cINN
#: trained briefly (stopped after the epoch that would end past ``time_limit_s`` on a slow CPU)
DEMO_PSEUDO_EXPERIMENTS = 20_000
DEMO_COSMIC_CHUNKSIZE = 5_000
DEMO_COSMIC_TRAINING: dict[str, Any] = {"epochs": 6, "patience": 3, "time_limit_s": 60.0}
#: a short MCMC: fewer steps and a smaller multi-start mode search than ``[mcmc]``
DEMO_MCMC = {"n_steps": 1500, "n_candidates": 1024, "n_starts": 4}
DEMO_COSMIC_SAMPLES = 4000
ANALYSES = ("neutrino", "cosmic")


@dataclass
class DemoReport:
    """What the demo wrote, step by step."""

    output: Path
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    progress: bool = False
    planned: int = 0
    #: what the results mean, printed after the steps (the neutrino verdicts)
    notes: list[str] = field(default_factory=list)
    #: the cosmic verdict (cINN against MCMC) and model check on the Auger data
    cosmic_notes: list[str] = field(default_factory=list)

    def add(self, name: str, seconds: float, where: str) -> None:
        self.steps.append((name, seconds, where))

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time one step; the caller appends where its outputs are to the yielded list."""
        if self.progress:
            print(f"[{len(self.steps) + 1}/{self.planned}] {name}", file=sys.stderr, flush=True)
        where: list[str] = []
        t0 = time.perf_counter()
        yield where
        self.add(name, time.perf_counter() - t0, ", ".join(where))

    def summary(self) -> str:
        width = max((len(s[0]) for s in self.steps), default=0)
        total = sum(s[1] for s in self.steps)
        lines = [f"hepflow demo: outputs in {self.output.resolve()}"]
        lines += [f"  {name:<{width}}  {sec:7.1f} s  {where}" for name, sec, where in self.steps]
        lines.append(f"  {'total':<{width}}  {total:7.1f} s")
        if self.notes:
            lines += [
                "",
                "neutrino results: per metric, which direction is better, which method wins and by how much",
            ]
            lines += self.notes
        if self.cosmic_notes:
            lines += [
                "",
                "cosmic results on the Auger data: cINN against MCMC, which to use, the model check",
            ]
            lines += self.cosmic_notes
        return "\n".join(lines)


def run_demo(
    output: str | os.PathLike[str],
    *,
    events: int = 4000,
    seed: int = 1,
    pseudo_experiments: int = DEMO_PSEUDO_EXPERIMENTS,
    cosmic_epochs: int = DEMO_COSMIC_TRAINING["epochs"],
    mcmc: Mapping[str, Any] | None = None,
    posterior_samples: int = DEMO_COSMIC_SAMPLES,
    analyses: Sequence[str] = ANALYSES,
    progress: bool = True,
) -> DemoReport:
    """Run the demo steps of ``analyses`` into ``output``, print the summary; returns the report.

    Args:
        output: the demo directory (neutrino outputs at its top, cosmic ones in ``cosmic/``).
        events: ttbar training events (the held-out sample has half as many).
        seed: seed of the generated samples.
        pseudo_experiments: cosmic training pseudo-experiments (at least 100).
        cosmic_epochs: epochs of the cosmic cINN training.
        mcmc: ``[mcmc]`` settings of the cosmic MCMC over :data:`DEMO_MCMC` (e.g. ``n_steps``).
        posterior_samples: cINN samples of the Auger posterior.
        analyses: ``"neutrino"`` and/or ``"cosmic"``.
        progress: progress bars and step headers on stderr.
    """
    unknown = sorted(set(analyses) - set(ANALYSES))
    if unknown or not analyses:
        raise ConfigError(f"unknown demo analysis {unknown[0] if unknown else None!r}; choose {ANALYSES}")
    if "cosmic" in analyses and pseudo_experiments < 100:
        raise ConfigError(f"the cosmic demo needs at least 100 pseudo-experiments, got {pseudo_experiments}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out, progress=progress)
    report.planned = 5 * ("neutrino" in analyses) + 7 * ("cosmic" in analyses)
    if "neutrino" in analyses:
        _neutrino(out, report, events=events, seed=seed, progress=progress)
    if "cosmic" in analyses:
        _cosmic(
            out / "cosmic",
            report,
            n=pseudo_experiments,
            seed=seed,
            epochs=cosmic_epochs,
            mcmc={**DEMO_MCMC, **(mcmc or {})},
            samples=posterior_samples,
            progress=progress,
        )
    print(report.summary())
    return report


# ------------------------------------------------------------------------------ neutrino
def _neutrino(out: Path, report: DemoReport, *, events: int, seed: int, progress: bool) -> None:
    from hepflow.neutrino import pipeline
    from hepflow.neutrino.config import NeutrinoConfig
    from hepflow.processing import RunConfig

    try:
        from hepflow.generate.ttbar import generate_ttbar, ttbar_matches
    except ImportError as err:  # pythia8mc / fastjet missing
        raise HepflowError(
            f"the neutrino demo needs the [generate] extra: pip install 'hepflow[generate]', "
            f"or run `hepflow demo --only cosmic` ({err})"
        ) from err

    samples = {
        "train": (out / "ttbar_train.root", events, seed),
        "test": (out / "ttbar_test.root", events // 2, seed + 1),
    }
    with report.step("generate ttbar") as where:
        for name, (path, n, s) in samples.items():
            if not ttbar_matches(path, n, s):
                generate_ttbar(path, events=n, seed=s, progress=progress, overwrite=True)
                _clear_chunks(out / f"features_{name}")
            where.append(f"{path.name} ({n})")

    # one chunk per file; the chunks are named after the dataset "dataset" (reused by a rerun)
    run = RunConfig(chunksize=max(events, 1), formats=("parquet", "root"), progress=progress)
    with report.step("process neutrino") as where:
        for name, (path, _, _) in samples.items():
            result = pipeline.process([path], out / f"features_{name}", dataset="dataset", run_config=run)
            flow = result.cutflow
            where.append(f"features_{name} ({flow['finite inputs']}/{flow['all']} selected)")

    with report.step("train neutrino") as where:
        cfg = NeutrinoConfig.from_file()
        cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **DEMO_TRAINING))
        summary = pipeline.train(
            out / "features_train", out / "models", config=cfg, progress=progress, overwrite=True
        )
        where.append(f"models ({summary['events_used']} events, flow + regression)")

    from hepflow.neutrino import pretrained
    from hepflow.posterior.shift import DomainShiftWarning

    cms = _cms_sample()
    runs = {"small": out}  # the small model's outputs at the top, as before
    if pretrained.available():
        runs["pretrained"] = out / "pretrained"
    shift: dict[tuple[str, str], Any] = {}
    with report.step("infer neutrino") as where:
        inputs = {"test": samples["test"][0], **({"cms_nanoaodv12": cms} if cms is not None else {})}
        for model, base in runs.items():
            model_dir = pretrained.PRETRAINED if model == "pretrained" else out / "models"
            for name, path in inputs.items():
                with warnings.catch_warnings():  # the verdict is printed with the results below
                    warnings.simplefilter("ignore", DomainShiftWarning)
                    inferred = pipeline.infer(
                        model_dir,
                        [path],
                        base / f"inference_{name}",
                        samples=DEMO_SAMPLES,
                        dataset="dataset",
                        run_config=run,
                    )
                shift[(model, name)] = inferred.shift
                where.append(str((base / f"inference_{name}").relative_to(out)))

    with report.step("report neutrino") as where:
        n_test = samples["test"][1]
        held_out = f"the held-out sample ({n_test} events generated by this demo with seed {seed + 1}"
        cms_text = f"the real CMS NanoAODv12 ttbar sample {cms}" if cms is not None else ""
        small = (
            f"the small demonstration model trained by this demo ({summary['events_used']} events, "
            f"{summary['flow']['epochs']} epochs: it shows the training path, it is not the result)"
        )
        notes: dict[str, list[str]] = {}
        for model, base in runs.items():
            notes[model] = []
            if model == "pretrained":
                notes[model].append(f"the result: the {pretrained.card_line()}")
                trained_on = pretrained.verify_model(pretrained.pretrained_dir())["training_data"]["seeds"]
                unseen = (
                    ", not one of this model's training seeds"
                    if seed + 1 not in trained_on
                    else ", BUT one of this model's training seeds"
                )
            else:
                notes[model].append(small)
                unseen = ", used in no training"
            for name in inputs:
                report_dir = base / ("report" if name == "test" else f"report_{name}")
                rep = pipeline.report(base / f"inference_{name}", report_dir)
                where.append(f"{report_dir.relative_to(out)} ({rep['events']} events)")
                on = f"{held_out}{unseen})" if name == "test" else cms_text
                events = f"{rep['events']} events with a truth neutrino"
                notes[model].append(f" on {on}: {events}, report in {report_dir}")
                if shift[(model, name)] is not None:  # does the input look like the training data?
                    notes[model].append(f"   domain-shift check: {shift[(model, name)].verdict()}")
                notes[model] += [f"   {line}" for line in report_verdicts(rep)]
        if "pretrained" not in runs:
            report.notes.append(NO_PRETRAINED)
        for model in ("pretrained", "small"):
            report.notes += notes.get(model, [])


#: what the demo says when no pretrained model ships
NO_PRETRAINED = (
    "no pretrained neutrino model ships with this installation: the verdicts below are those of the small "
    "demonstration model, not the result (build the pretrained one: docs/training.md)"
)


# ------------------------------------------------------------------------------ cosmic
def _cosmic(
    out: Path,
    report: DemoReport,
    *,
    n: int,
    seed: int,
    epochs: int,
    mcmc: Mapping[str, Any],
    samples: int,
    progress: bool,
) -> None:
    try:
        import emcee  # noqa: F401

        from hepflow.cosmic.config import load_config
        from hepflow.cosmic.generate import generate_cosmic
        from hepflow.cosmic.mcmc import mcmc_cosmic
        from hepflow.cosmic.pipeline import infer, train
        from hepflow.cosmic.processor import process_cosmic
        from hepflow.cosmic.report import make_report
    except ImportError as err:  # astrotools / emcee missing
        raise HepflowError(
            f"the cosmic demo needs the [cosmic] extra: pip install 'hepflow[cosmic]', "
            f"or run `hepflow demo --only neutrino` ({err})"
        ) from err
    from hepflow.processing import RunConfig

    base = load_config()
    try:
        cfg = dataclasses.replace(
            base,
            training=dataclasses.replace(base.training, **{**DEMO_COSMIC_TRAINING, "epochs": epochs}),
            mcmc=dataclasses.replace(base.mcmc, **mcmc),
        )
    except TypeError as err:  # an unknown [mcmc] key
        raise ConfigError(f"demo mcmc settings {dict(mcmc)}: {err}") from err
    rel = out.name
    pe, features, model = out / "pseudo_experiments.root", out / "features", out / "model"

    from hepflow.cosmic import pretrained

    with report.step("infer cosmic (pretrained)") as where:
        if pretrained.available():
            shipped = infer(
                pretrained.PRETRAINED,
                "auger",
                output_dir=out / "pretrained_auger",
                samples=samples,
                overwrite=True,
            )
            report.cosmic_notes += pretrained_cosmic_lines(shipped, pretrained.verified_card())
            where.append(f"{rel}/pretrained_auger ({samples} samples of the Auger posterior)")
        else:
            report.cosmic_notes.append(NO_PRETRAINED_COSMIC)
            where.append("no pretrained cosmic model ships with this installation")

    with report.step("generate cosmic") as where:
        if not _pseudo_experiments_match(pe, n, seed):
            generate_cosmic(pe, n=n, seed=seed, config=cfg, progress=progress, overwrite=True)
            _clear_chunks(features)
        where.append(f"{rel}/{pe.name} ({n})")

    with report.step("process cosmic") as where:
        run = RunConfig(chunksize=min(DEMO_COSMIC_CHUNKSIZE, n), progress=progress)
        result = process_cosmic([pe], features, run_config=run, config=cfg)
        chunks = len([f for f in result.files if f.suffix == ".parquet"])
        where.append(f"{rel}/{features.name} ({result.entries} pseudo-experiments, {chunks} chunks)")

    with report.step("train cosmic") as where:
        summary = train(features, model, config=cfg, progress=progress, overwrite=True)
        where.append(
            f"{rel}/{model.name} ({summary['pseudo_experiments']} pseudo-experiments, "
            f"{summary['epochs']} epochs, stopped by {summary['stopped_by']})"
        )

    with report.step("infer cosmic") as where:
        summary = infer(
            model,
            "auger",
            output_dir=out / "infer_auger",
            samples=samples,
            config=cfg,
            importance=True,
            overwrite=True,
        )
        ess = summary["importance"]["ess"]
        where.append(
            f"{rel}/infer_auger ({samples} samples of the Auger posterior, importance ESS {ess:.0f})"
        )

    with report.step("mcmc cosmic") as where:
        res = mcmc_cosmic("auger", out / "mcmc_auger", config=cfg, progress=progress, overwrite=True)
        state = "converged" if res.converged else "short chain: not converged"
        where.append(f"{rel}/mcmc_auger ({res.n_steps} steps, {state})")

    with report.step("report cosmic") as where:
        rep = make_report(model, out / "report", config=cfg, mcmc_auger=out / "mcmc_auger", samples=samples)
        plots = ", ".join(Path(p).name for p in rep["plots"])
        where.append(f"{rel}/report (report.json, {plots})")
    report.cosmic_notes.append(
        f"the small demonstration model trained by this demo ({n} pseudo-experiments, {epochs} epochs, "
        "without nuisances): it shows the training path, it is not the result"
    )
    report.cosmic_notes += cosmic_verdict_lines(rep)


#: what the demo says when no pretrained cosmic model ships
NO_PRETRAINED_COSMIC = (
    "no pretrained cosmic model ships with this installation: the lines below are those of the small "
    "demonstration model, not the result (build the pretrained one: docs/cosmic_model.md)"
)


def pretrained_cosmic_lines(summary: Mapping[str, Any], card: Mapping[str, Any]) -> list[str]:
    """What the demo says about the pretrained cosmic model on the Auger data: its posterior
    (``summary``, from :func:`hepflow.cosmic.pipeline.infer`) with the model check, then what
    its ``card`` measured against the MCMC with the same nuisances (a verdict takes that MCMC
    and the importance weights, minutes each, so the demo reports the card's) and what to run
    for a result.

    Example:
        >>> from hepflow.cosmic.config import PARAMETERS
        >>> post = {p: {"median": 0.5, "q0.16": 0.4, "q0.84": 0.7} for p in PARAMETERS}
        >>> check = {"n_replicas": 200, **{part: {"p_value": 0.0, "observed_mean": 195.0,
        ...          "replica_mean": 124.0, "replica_std": 15.0} for part in ("total", "spectrum", "xmax")}}
        >>> summary = {"posterior": post, "model_check": {"cinn": check}, "model_check_warnings": {}}
        >>> card = {"training_data": {"pseudo_experiments": 400000, "seed": 7},
        ...         "config": {"systematics": {"enabled": True}},
        ...         "auger": {"lines": ["cINN and MCMC disagree: use the MCMC (ESS 90 of 4000)"]}}
        >>> print("\\n".join(pretrained_cosmic_lines(summary, card)))  # doctest: +NORMALIZE_WHITESPACE
        the pretrained cosmic model shipped with hepflow (400000 pseudo-experiments, seed 7, marginalised
          over the energy- and Xmax-scale nuisances)
          its posterior: gamma = 0.50 +0.20 -0.10, lg_rcut = 0.50 +0.20 -0.10
          model check (its posterior): total p < 0.005, spectrum part p < 0.005, Xmax part p < 0.005
          its card, against the MCMC with the same nuisances: cINN and MCMC disagree: use the MCMC
          (ESS 90 of 4000)
          for a physics result use the MCMC (`hepflow mcmc cosmic --observation auger --systematics`) or the
          cINN refined for the data (`hepflow refine cosmic --model pretrained --observation auger
          --fine-tune`: within 0.07 MCMC sd of the MCMC there, docs/refine.md) or
          importance-weighted (`hepflow infer cosmic --observation auger --importance --mcmc DIR`)
        >>> summary["model_check_warnings"] = {"cinn": ["the model does not describe the data (total)"]}
        >>> card["auger"]["model_check"] = {"mcmc": {"p_value": 0.017, "p_value_below": None}}
        >>> [line[:60] for line in pretrained_cosmic_lines(summary, card) if "passes the same" in line]
        ["  the MCMC's posterior passes the same check (p 0.017, its c"]
        >>> card["auger"]["lines"] = ["cINN and MCMC agree: use the cINN (ESS 3000 of 4000)"]
        >>> any("for a physics result" in line for line in pretrained_cosmic_lines(summary, card))
        False
    """
    from hepflow.cosmic.ppc import PARTS, format_p

    data, post = card.get("training_data", {}), summary["posterior"]
    syst = (card.get("config") or {}).get("systematics", {}).get("enabled", False)
    lines = [
        f"the pretrained cosmic model shipped with hepflow ({data.get('pseudo_experiments', '?')} "
        f"pseudo-experiments, seed {data.get('seed', '?')}, "
        + ("marginalised over the energy- and Xmax-scale nuisances)" if syst else "without nuisances)"),
        f"  its posterior: {_estimate(post, 'gamma')}, {_estimate(post, 'lg_rcut')}",
    ]
    for check in summary.get("model_check", {}).values():
        ps = ", ".join(
            f"{label} {format_p(check[p]['p_value'], check['n_replicas'])}" for p, label in PARTS.items()
        )
        lines.append(f"  model check (its posterior): {ps}")
    for warnings_ in summary.get("model_check_warnings", {}).values():
        lines += [f"    WARNING: {w}" for w in warnings_]
    recorded = card.get("auger", {}).get("lines", [])
    if recorded:
        lines.append(f"  its card, against the MCMC with the same nuisances: {recorded[0]}")
        lines += [f"  its card: {line}" for line in recorded[1:]]
    else:
        lines.append("  its card records no comparison with the MCMC on this observation")
    mcmc_check = card.get("auger", {}).get("model_check", {}).get("mcmc")
    threshold = ((card.get("config") or {}).get("check") or {}).get("threshold", 0.01)
    mcmc_passes = (
        bool(mcmc_check) and not mcmc_check.get("p_value_below") and mcmc_check["p_value"] >= threshold
    )
    if summary.get("model_check_warnings", {}).get("cinn") and mcmc_passes:
        lines.append(
            f"  the MCMC's posterior passes the same check (p {mcmc_check['p_value']:.3f}, its card): "
            "what fails here is this cINN's posterior, not the model"
        )
    if not recorded or "use the MCMC" in recorded[0]:  # the verdict's words (hepflow.cosmic.verdict)
        lines.append(
            "  for a physics result use the MCMC (`hepflow mcmc cosmic --observation auger --systematics`) "
            "or the cINN refined for the data (`hepflow refine cosmic --model pretrained --observation "
            "auger --fine-tune`: within 0.07 MCMC sd of the MCMC there, docs/refine.md) or "
            "importance-weighted (`hepflow infer cosmic --observation auger --importance --mcmc DIR`)"
        )
    return lines


def cosmic_verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """What a cosmic ``report.json`` concludes, in lines: the verdict (cINN against MCMC, which
    to use), the posterior of the method to use, and the model check of each method.

    Example:
        >>> from hepflow.cosmic.config import PARAMETERS
        >>> post = {p: {"median": 0.5, "q0.16": 0.4, "q0.84": 0.7} for p in PARAMETERS}
        >>> check = {"n_replicas": 1000, **{part: {"p_value": 0.0, "observed_mean": 195.0,
        ...          "replica_mean": 124.0, "replica_std": 15.0} for part in ("total", "spectrum", "xmax")}}
        >>> rep = {"verdict": {"line": "cINN and MCMC disagree: use the MCMC (ESS 1 of 4000)", "use": "MCMC"},
        ...        "mcmc": {"posterior": post}, "model_check": {"mcmc": check}}
        >>> warning = "the model does not describe the data (Xmax part, p < 0.001)"
        >>> rep["model_check_warnings"] = {"mcmc": [warning]}
        >>> print("\\n".join(cosmic_verdict_lines(rep)))
          cINN and MCMC disagree: use the MCMC (ESS 1 of 4000)
          MCMC result: gamma = 0.50 +0.20 -0.10, lg_rcut = 0.50 +0.20 -0.10
          model check (MCMC posterior): total p < 0.001, spectrum part p < 0.001, Xmax part p < 0.001
            WARNING: the model does not describe the data (Xmax part, p < 0.001)
    """
    from hepflow.cosmic.ppc import PARTS, format_p

    v = report["verdict"]
    use = v["use"]
    post = report["cinn" if use == "cINN" else "mcmc"]["posterior"]
    lines = [f"  {v['line']}", f"  {use} result: {_estimate(post, 'gamma')}, {_estimate(post, 'lg_rcut')}"]
    for method, check in report.get("model_check", {}).items():
        name = "cINN" if method == "cinn" else "MCMC"
        ps = ", ".join(
            f"{label} {format_p(check[p]['p_value'], check['n_replicas'])}" for p, label in PARTS.items()
        )
        lines.append(f"  model check ({name} posterior): {ps}")
        lines += [f"    WARNING: {w}" for w in report.get("model_check_warnings", {}).get(method, [])]
    return lines


def _estimate(posterior: dict[str, dict[str, float]], name: str) -> str:
    p = posterior[name]
    return f"{name} = {p['median']:.2f} +{p['q0.84'] - p['median']:.2f} -{p['median'] - p['q0.16']:.2f}"


def _pseudo_experiments_match(path: Path, n: int, seed: int) -> bool:
    """An existing pseudo-experiment file with this size and seed (from its metadata)."""
    if not path.is_file():
        return False
    import uproot

    try:
        with uproot.open(path) as f:
            meta = json.loads(f["metadata"])
    except Exception:  # unreadable or foreign: regenerate
        return False
    return meta.get("n") == n and meta.get("seed") == seed


def _clear_chunks(directory: Path) -> None:
    """Remove the chunk outputs of a processing run (its sample was regenerated)."""
    if not directory.is_dir():
        return
    for f in directory.iterdir():
        chunk = f.name.count("__") == 2 and f.suffix in (".parquet", ".root", ".json")
        if chunk or f.name in ("cutflow.json", "run.json"):
            f.unlink()


def _cms_sample() -> Path | None:
    """The real CMS NanoAODv12 ttbar sample from the source tree, when running from a checkout."""
    path = Path(__file__).resolve().parent.parent / "tests" / "samples" / "nano_tt_v12.root"
    return path if path.is_file() else None
