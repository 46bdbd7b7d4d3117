"""The ``hepflow`` command line.

Each sub-command parses its options here and calls one library function; the physics lives in
the library. Errors that users can fix (:class:`hepflow.errors.HepflowError`) are printed on one
line with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from hepflow import __version__
from hepflow.errors import HepflowError, OutputError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other hepflow error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hepflow: error: {message} (see: {self.prog} --help)\n")


def _integer(text: str) -> int | None:
    """``text`` as an integer (``50000``, ``5e4``), or None when it is none (``1.5``, ``1e999``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _count(text: str) -> int:
    value = _integer(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
    if value is None or not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed, an integer in [0, 2^32), got {text!r}")
    return value


def _check_output(path: Path, *, directory: bool) -> None:
    """Refuse an output that cannot be written before any work starts: an output directory that
    is a file, a path under a file, or a parent the user cannot write to."""
    if path.exists():
        if directory and not path.is_dir():
            raise OutputError(f"output {path} exists and is not a directory")
        if not directory and path.is_dir():
            raise OutputError(f"output {path} is a directory, expected a file")
    base = path if directory and path.is_dir() else path.parent
    while not base.exists() and not base.is_symlink() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"cannot write {path}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {base} is not writable")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a processor over files."""
    p.add_argument("--executor", choices=["iterative", "futures", "dask"], default="iterative")
    p.add_argument("--chunksize", type=_positive_int, default=50_000, help="events per chunk")
    p.add_argument("--workers", type=_positive_int, default=1, help="local worker processes")
    p.add_argument("--scheduler", default=None, help="dask scheduler address (with --executor dask)")
    p.add_argument(
        "--cluster",
        type=Path,
        default=None,
        metavar="FILE.toml",
        help="HTCondor workers through dask-jobqueue, as configured in FILE (with --executor dask)",
    )
    p.add_argument(
        "--maxchunks", type=_positive_int, default=None, help="stop after this many chunks per file"
    )
    p.add_argument(
        "--skip-bad-files", action="store_true", help="skip unreadable files and list them in run.json"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every chunk, replacing the outputs of another run in --output (only files a run wrote)",
    )
    p.add_argument("--format", dest="formats", action="append", choices=["parquet", "root"], default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _run_config(args: argparse.Namespace):
    from hepflow.processing import RunConfig

    return RunConfig(
        executor=args.executor,
        chunksize=args.chunksize,
        workers=args.workers,
        scheduler=args.scheduler,
        cluster=args.cluster,
        maxchunks=args.maxchunks,
        skip_bad_files=args.skip_bad_files,
        overwrite=args.overwrite,
        formats=tuple(args.formats or ["parquet"]),
        progress=args.progress,
    )


# --- handlers ------------------------------------------------------------------------------


def _generate_ttbar(args: argparse.Namespace) -> int:
    from hepflow.generate.pileup import PileupProfile
    from hepflow.generate.ttbar import generate_ttbar

    stats = generate_ttbar(
        args.output,
        events=args.events,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=args.progress,
        overwrite=args.overwrite,
        pileup=PileupProfile(mean=args.pileup, spread=args.pileup_spread),
        jobs=args.jobs,
    )
    print(stats.summary())
    return 0


def _generate_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.generate import generate_cosmic

    stats = generate_cosmic(
        args.output,
        n=args.n,
        seed=args.seed,
        config=args.config,
        batch_size=args.batch_size,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    print(stats.summary())
    return 0


def _process_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.processor import process_cosmic

    result = process_cosmic(
        args.input,
        args.output,
        run_config=_run_config(args),
        dataset=args.dataset,
        mode=args.mode,
        config=args.config,
    )
    print(result.summary())
    return 0


def _mcmc_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.mcmc import mcmc_cosmic

    result = mcmc_cosmic(
        args.observation,
        args.output,
        config=args.config,
        seed=args.seed,
        entry=args.entry,
        n_steps=args.n_steps,
        chain=args.chain,
        progress=args.progress,
        overwrite=args.overwrite,
        systematics=args.systematics,
    )
    print(result)
    _print_checks(result.summary())
    if str(args.observation) == "auger" and result.settings.get("systematics") is None:
        print(AUGER_WITHOUT_SYSTEMATICS)
    return 0


#: printed after an MCMC of the Auger data without the nuisances (docs/cosmic_model.md)
AUGER_WITHOUT_SYSTEMATICS = (
    "note: this posterior has no energy-scale or Xmax-scale nuisances; Auger's own fits include "
    "them, and with them the posterior moves to the soft-spectrum mode (docs/cosmic_model.md, "
    "'How the Auger posterior moves with the nuisances'): rerun with --systematics for the Auger result"
)


def _unfold_ttbar(args: argparse.Namespace) -> int:
    from hepflow.unfolding.study import UnfoldingConfig, make_report, run_study, study_summary

    results = run_study(
        args.train,
        args.test,
        args.output,
        config=UnfoldingConfig.from_file(args.config),
        run_config=_run_config(args),
        retrain=args.retrain,
        progress=args.progress,
    )
    print(study_summary(results, make_report(args.output), args.output))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from hepflow.processing import merge_chunks

    rows = merge_chunks(args.directory, args.target, overwrite=args.overwrite)
    print(f"merged {rows} rows of the complete chunks in {args.directory} into {args.target}")
    return 0


def _process_neutrino(args: argparse.Namespace) -> int:
    from hepflow.neutrino import pipeline

    result = pipeline.process(
        args.input, args.output, config=args.config, dataset=args.dataset, run_config=_run_config(args)
    )
    print(result.summary())
    return 0


def _train_neutrino(args: argparse.Namespace) -> int:
    from hepflow.neutrino import pipeline
    from hepflow.neutrino.config import NeutrinoConfig

    summary = pipeline.train(
        args.data,
        args.output,
        config=NeutrinoConfig.from_file(args.config),
        progress=args.progress,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    print(pipeline.train_summary(summary, args.output))
    return 0


def _infer_neutrino(args: argparse.Namespace) -> int:
    from hepflow.neutrino import pipeline
    from hepflow.neutrino.pretrained import card_line, is_pretrained
    from hepflow.posterior.shift import DomainShiftWarning

    if is_pretrained(args.model):
        print(card_line())  # refuses, in one line, an installation without a (verified) model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainShiftWarning)  # the summary prints the verdict
        result = pipeline.infer(
            args.model,
            args.input,
            args.output,
            samples=args.samples,
            config=args.config,
            dataset=args.dataset,
            run_config=_run_config(args),
            friend=args.friend,
            on_shift=args.on_shift,
        )
    print(result.summary())  # with the domain-shift verdict, printed once here
    return 0


def _report_neutrino(args: argparse.Namespace) -> int:
    from hepflow.neutrino import pipeline

    print(pipeline.report_summary(pipeline.report(args.input, args.output), args.output))
    return 0


def _train_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.pipeline import train

    summary = train(
        args.data,
        args.output,
        config=args.config,
        progress=args.progress,
        resume=args.resume,
        init=args.init,
        overwrite=args.overwrite,
    )
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict | list)}, indent=1))
    print(f"model in {args.output}")
    return 0


def _ensemble_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.network import make_ensemble

    out = make_ensemble(args.models, args.output, config=args.config, overwrite=args.overwrite)
    print(f"ensemble of {len(args.models)} models in {out}")
    return 0


def _infer_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.pipeline import infer
    from hepflow.cosmic.pretrained import card_line, is_pretrained

    if is_pretrained(args.model):
        print(card_line())
    summary = infer(
        args.model,
        args.observation,
        output_dir=args.output,
        samples=args.samples,
        config=args.config,
        entry=args.entry,
        seed=args.seed,
        importance=args.importance,
        mcmc=args.mcmc,
        overwrite=args.overwrite,
    )
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict | list)}, indent=1))
    if "importance" in summary:
        imp = summary["importance"]
        print(
            f"importance weights: ESS {imp['ess']:.0f} of {summary['samples']} "
            f"(efficiency {imp['efficiency']:.3f})"
        )
    _print_checks(summary)
    print(f"posterior samples in {args.output}")
    return 0


def _print_checks(result: dict) -> None:
    """The model check per method, its warnings and the cINN-vs-MCMC verdict (infer, report)."""
    from hepflow.cosmic.ppc import summary_lines

    for method, check in result.get("model_check", {}).items():
        name = "cINN" if method == "cinn" else "MCMC"
        print(f"model check ({name} posterior, posterior predictive deviance):")
        for line in summary_lines(check):
            print(f"  {line}")
        for line in result.get("model_check_warnings", {}).get(method, []):
            print(f"WARNING ({name} posterior): {line}")
    if "verdict" in result:
        print(f"verdict: {result['verdict']['line']}")
    if "verdict_importance" in result:
        print(f"verdict: {result['verdict_importance']['line']}")


def _refine_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.refine import refine_model

    summary = refine_model(
        args.model,
        args.observation,
        output_dir=args.output,
        config=args.config,
        entry=args.entry,
        rounds=args.rounds,
        simulations=args.simulations,
        epochs=args.epochs,
        lr=args.lr,
        fine_tune=args.fine_tune,
        temperature=args.temperature,
        seed_radius=args.seed_radius,
        seed_share=args.seed_share,
        min_acceptance=args.min_acceptance,
        reweight=args.reweight,
        regions=args.regions,
        correct=args.correct,
        distill_steps=args.distill,
        distill_samples=args.distill_samples,
        distill_epochs=args.distill_epochs,
        distill_proposal=args.distill_proposal,
        seed=args.seed,
        seeds=args.seeds,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    print(
        f"refined for {summary['observation']}: {len(summary['rounds'])} rounds, {summary['simulations']} "
        f"simulations, training {summary['train_seconds']:.0f} s, wall time {summary['wall_seconds']:.0f} s"
    )
    observation = summary["observation"]
    print(f"model in {args.output} (hepflow infer cosmic --model {args.output} --observation {observation})")
    return 0


def _float(text: str) -> float:
    """``text`` as a number, NaN when it is none (every range check below then fails)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _positive_float(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
    return value


def _share(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _compare_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.compare import compare

    compare(
        args.model,
        args.output,
        config=args.config,
        n_mocks=args.mocks,
        n_calibration=args.calibration,
        mcmc_from=args.mcmc_from,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    print(f"comparison in {args.output}")
    return 0


def _report_cosmic(args: argparse.Namespace) -> int:
    from hepflow.cosmic.report import make_report

    report = make_report(
        args.model, args.output, config=args.config, mcmc_auger=args.mcmc, comparison=args.comparison
    )
    _print_checks(report)
    print(f"report and plots in {args.output}")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from hepflow.config import shipped_config

    path = shipped_config(args.analysis, args.file)
    print(path if args.path else path.read_text(), end="\n" if args.path else "")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hepflow.demo import run_demo

    run_demo(
        args.output,
        events=args.events,
        seed=args.seed,
        pseudo_experiments=args.pseudo_experiments,
        analyses=[args.only] if args.only else ["neutrino", "cosmic"],
        progress=args.progress,
    )
    return 0


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hepflow", description="cINN posteriors for HEP analyses on the scikit-hep stack.")
    parser.add_argument("--version", action="version", version=f"hepflow {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # generate
    gen = sub.add_parser("generate", help="generate events or pseudo-experiments")
    gen_sub = gen.add_subparsers(dest="what", required=True, metavar="WHAT")
    ttbar = gen_sub.add_parser(
        "ttbar", help="semileptonic ttbar (Pythia 8) with a fast CMS-like detector, as NanoAOD"
    )
    ttbar.add_argument("--events", type=_positive_int, required=True)
    ttbar.add_argument("--seed", type=_seed, default=1)
    ttbar.add_argument("--output", type=Path, required=True, help="output ROOT file")
    ttbar.add_argument("--batch-size", type=_positive_int, default=1000, help="events per written basket")
    ttbar.add_argument(
        "--pileup",
        type=float,
        default=36.0,
        metavar="MEAN",
        help="mean number of overlaid minimum-bias interactions (default 36, as the CMS NanoAODv12 "
        "ttbar simulation; 0: none)",
    )
    ttbar.add_argument(
        "--pileup-spread", type=float, default=9.0, metavar="SD", help="its standard deviation (default 9)"
    )
    ttbar.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes (default 1); with N > 1 the sample is written as N files "
        "OUTPUT_STEM_000.root ... with seeds spawned from --seed and continuous event numbers",
    )
    ttbar.add_argument("--overwrite", action="store_true")
    ttbar.add_argument("--no-progress", dest="progress", action="store_false")
    ttbar.set_defaults(handler=_generate_ttbar)
    cosmic = gen_sub.add_parser("cosmic", help="cosmic-ray pseudo-experiments (spectrum and Xmax histograms)")
    cosmic.add_argument("--n", type=_positive_int, default=None, help="pseudo-experiments (default: config)")
    cosmic.add_argument("--seed", type=_seed, default=None)
    cosmic.add_argument("--output", type=Path, required=True, help="output ROOT file")
    cosmic.add_argument(
        "--config",
        type=Path,
        default=None,
        help="analysis config (default: the shipped one)",
    )
    cosmic.add_argument("--batch-size", type=_positive_int, default=None)
    cosmic.add_argument("--overwrite", action="store_true")
    cosmic.add_argument("--no-progress", dest="progress", action="store_false")
    cosmic.set_defaults(handler=_generate_cosmic)

    # process
    proc = sub.add_parser("process", help="run a feature processor over NanoAOD files")
    proc_sub = proc.add_subparsers(dest="what", required=True, metavar="WHAT")
    nu = proc_sub.add_parser("neutrino", help="neutrino-regression features and truth")
    nu.add_argument("--input", nargs="+", required=True, help="ROOT files, or one coffea fileset JSON")
    nu.add_argument("--output", type=Path, required=True, help="output directory")
    nu.add_argument("--dataset", default="ttbar", help="dataset name for plain file lists")
    nu.add_argument("--config", type=Path, default=None, help="selection config (TOML)")
    _add_run_options(nu)
    nu.set_defaults(handler=_process_neutrino)
    pco = proc_sub.add_parser("cosmic", help="pseudo-experiment features, or shower-list histograms")
    pco.add_argument("--input", nargs="+", required=True, help="ROOT files, or one coffea fileset JSON")
    pco.add_argument("--output", type=Path, required=True)
    pco.add_argument("--dataset", default="cosmic")
    pco.add_argument("--mode", choices=["auto", "features", "histogram"], default="auto")
    pco.add_argument("--config", type=Path, default=None)
    _add_run_options(pco)
    pco.set_defaults(handler=_process_cosmic)

    # train
    train = sub.add_parser("train", help="train the cINN (and baselines) of an analysis")
    train_sub = train.add_subparsers(dest="what", required=True, metavar="WHAT")
    tnu = train_sub.add_parser("neutrino", help="cINN + regression for the neutrino momentum")
    tnu.add_argument("--data", type=Path, required=True, help="directory of processed feature chunks")
    tnu.add_argument("--output", type=Path, required=True, help="model directory")
    tnu.add_argument(
        "--config",
        type=Path,
        default=None,
        help="analysis config (default: the shipped one)",
    )
    tnu.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    tnu.add_argument("--overwrite", action="store_true", help="replace the trained models in --output")
    tnu.add_argument("--no-progress", dest="progress", action="store_false")
    tnu.set_defaults(handler=_train_neutrino)
    tco = train_sub.add_parser("cosmic", help="cINN for the cosmic-ray source parameters")
    tco.add_argument("--data", type=Path, required=True, help="PseudoExperiments file or feature directory")
    tco.add_argument("--output", type=Path, required=True, help="model directory")
    tco.add_argument(
        "--config",
        type=Path,
        default=None,
        help="analysis config (default: the shipped one)",
    )
    tco.add_argument("--resume", action="store_true")
    tco.add_argument("--overwrite", action="store_true", help="replace the trained model in --output")
    tco.add_argument(
        "--init", type=Path, default=None, help="start from this trained cosmic model (same [flow] layout)"
    )
    tco.add_argument("--no-progress", dest="progress", action="store_false")
    tco.set_defaults(handler=_train_cosmic)

    # infer
    ens = sub.add_parser("ensemble", help="one model directory of an equal-weight mixture of trained cINNs")
    ens_sub = ens.add_subparsers(dest="what", required=True, metavar="WHAT")
    eco = ens_sub.add_parser("cosmic", help="ensemble of cosmic cINNs (same prior, features, forward model)")
    eco.add_argument("--models", type=Path, nargs="+", required=True, help="two or more trained models")
    eco.add_argument("--output", type=Path, required=True, help="the ensemble's model directory")
    eco.add_argument("--config", type=Path, default=None, help="refuse members trained under another config")
    eco.add_argument("--overwrite", action="store_true")
    eco.set_defaults(handler=_ensemble_cosmic)

    infer = sub.add_parser("infer", help="posterior samples and summaries as columns")
    infer_sub = infer.add_subparsers(dest="what", required=True, metavar="WHAT")
    inu = infer_sub.add_parser("neutrino", help="neutrino posteriors next to the quadratic solution")
    inu.add_argument(
        "--model",
        default="pretrained",
        help="model directory from `hepflow train neutrino`, or `pretrained` (default): the model "
        "shipped with hepflow, checked against its model card (README 'The pretrained neutrino model'; "
        "a folder named pretrained: ./pretrained)",
    )
    inu.add_argument("--input", nargs="+", required=True, help="NanoAOD files, or one coffea fileset JSON")
    inu.add_argument("--output", type=Path, required=True)
    inu.add_argument("--samples", type=_positive_int, default=None, help="posterior samples per event (256)")
    inu.add_argument("--dataset", default="ttbar")
    inu.add_argument("--config", type=Path, default=None)
    inu.add_argument(
        "--friend",
        action="store_true",
        help="also write per input file <dataset>__<file>-<hash>_friend.root: TTree Friend, one entry "
        "per input event (NaN and selected=0 for events not selected), to attach to its Events tree",
    )
    inu.add_argument(
        "--on-shift",
        choices=("warn", "error"),
        default="warn",
        help="when the input differs from the model's training data (docs/domain_shift.md): print "
        "the verdict (warn, default) or also exit with status 2 (error); outputs are written either way",
    )
    _add_run_options(inu)
    inu.set_defaults(handler=_infer_neutrino)
    ico = infer_sub.add_parser("cosmic", help="posterior of the source parameters for an observation")
    ico.add_argument(
        "--model",
        default="pretrained",
        help="a trained cosmic model directory, or `pretrained` (default): the model shipped with "
        "hepflow (trained with the energy- and Xmax-scale nuisances; its config unless --config is "
        "given; docs/cosmic_model.md)",
    )
    ico.add_argument(
        "--observation", default="auger", help="'auger' or an observation/shower/pseudo-experiment file"
    )
    ico.add_argument("--output", type=Path, required=True)
    ico.add_argument("--samples", type=_positive_int, default=None)
    ico.add_argument("--config", type=Path, default=None)
    ico.add_argument("--entry", type=int, default=0)
    ico.add_argument("--seed", type=_seed, default=None)
    ico.add_argument(
        "--importance",
        action="store_true",
        help="weight the samples by likelihood x prior / cINN density (column weight, ESS in the summary)",
    )
    ico.add_argument(
        "--mcmc",
        type=Path,
        default=None,
        help="output directory of `hepflow mcmc cosmic` on the same observation: model check of its "
        "samples and the cINN-vs-MCMC verdict",
    )
    ico.add_argument("--overwrite", action="store_true")
    ico.set_defaults(handler=_infer_cosmic)

    # compare
    compare = sub.add_parser("compare", help="cINN against the MCMC baseline on held-out mocks")
    compare_sub = compare.add_subparsers(dest="what", required=True, metavar="WHAT")
    cco = compare_sub.add_parser("cosmic", help="cINN vs MCMC and cINN calibration")
    cco.add_argument(
        "--model",
        required=True,
        help="a trained cosmic model directory, or `pretrained`: the model shipped with hepflow",
    )
    cco.add_argument("--output", type=Path, required=True)
    cco.add_argument("--config", type=Path, default=None)
    cco.add_argument("--mocks", type=_positive_int, default=None, help="mock observations for cINN vs MCMC")
    cco.add_argument("--calibration", type=_positive_int, default=None, help="mocks for the calibration")
    cco.add_argument(
        "--mcmc-from",
        type=Path,
        default=None,
        help="reuse the MCMC runs of an earlier comparison output (same mocks and [mcmc] settings)",
    )
    cco.add_argument("--overwrite", action="store_true")
    cco.add_argument("--no-progress", dest="progress", action="store_false")
    cco.set_defaults(handler=_compare_cosmic)

    # report
    report = sub.add_parser("report", help="comparison report with plots")
    report_sub = report.add_subparsers(dest="what", required=True, metavar="WHAT")
    rnu = report_sub.add_parser("neutrino", help="cINN vs quadratic vs regression")
    rnu.add_argument("--input", type=Path, required=True, help="directory of inference outputs")
    rnu.add_argument("--output", type=Path, required=True)
    rnu.set_defaults(handler=_report_neutrino)
    rco = report_sub.add_parser("cosmic", help="Auger posterior from cINN and MCMC, corner plots")
    rco.add_argument(
        "--model",
        required=True,
        help="a trained cosmic model directory, or `pretrained`: the model shipped with hepflow",
    )
    rco.add_argument("--output", type=Path, required=True)
    rco.add_argument("--config", type=Path, default=None)
    rco.add_argument(
        "--mcmc",
        type=Path,
        default=None,
        help="output directory of `hepflow mcmc cosmic --observation auger`",
    )
    rco.add_argument(
        "--comparison", type=Path, default=None, help="output directory of `hepflow compare cosmic`"
    )
    rco.set_defaults(handler=_report_cosmic)

    # refine
    refine = sub.add_parser("refine", help="refine a trained cINN for one observation (sequential NPE)")
    refine_sub = refine.add_subparsers(dest="what", required=True, metavar="WHAT")
    rfc = refine_sub.add_parser(
        "cosmic", help="truncated sequential NPE of a cosmic cINN for one observation (docs/refine.md)"
    )
    rfc.add_argument(
        "--model",
        required=True,
        help="trained (amortized) cosmic model directory, or `pretrained`: the model shipped with hepflow",
    )
    rfc.add_argument(
        "--observation", default="auger", help="'auger' or an observation/shower/pseudo-experiment file"
    )
    rfc.add_argument("--output", type=Path, required=True, help="the refined model directory")
    rfc.add_argument("--config", type=Path, default=None)
    rfc.add_argument("--entry", type=int, default=0, help="entry of a pseudo-experiment file")
    rfc.add_argument("--rounds", type=_positive_int, default=3)
    rfc.add_argument("--simulations", type=_positive_int, default=10_000, help="simulations per round")
    rfc.add_argument("--epochs", type=_positive_int, default=30, help="training epochs per round")
    rfc.add_argument(
        "--lr", type=_positive_float, default=None, help="learning rate (default: [training] lr)"
    )
    rfc.add_argument(
        "--fine-tune",
        action="store_true",
        help="continue training the amortized network (default: a fresh network each round)",
    )
    rfc.add_argument(
        "--temperature", type=_positive_float, default=1.0, help="widen the proposal regions (base width)"
    )
    rfc.add_argument(
        "--seed-radius",
        type=_positive_float,
        default=1.0,
        help="radius of the balls around the seed points (unconstrained units of the prior spread)",
    )
    rfc.add_argument(
        "--seed-share",
        type=_fraction,
        default=0.5,
        help="share of each round's simulations drawn around the seed points (0 < f < 1)",
    )
    rfc.add_argument(
        "--min-acceptance",
        type=_fraction,
        default=1e-3,
        help="draw a proposal by rejection from the prior down to this acceptance, below it by SIR "
        "(few distinct draws; docs/refine.md)",
    )
    rfc.add_argument(
        "--reweight",
        action="store_true",
        help="train with weights 1/W instead of the plain NPE loss (docs/refine.md)",
    )
    rfc.add_argument(
        "--regions",
        choices=("union", "estimate", "corrected"),
        default=None,
        help="each later round's region: the HPR of the estimate, of the estimate corrected by 1/W, "
        "or their union (default: union with seeds, so that a seeded mode stays and so does the mode "
        "the seeds' W suppresses; estimate without; docs/refine.md)",
    )
    rfc.add_argument(
        "--no-correct",
        dest="correct",
        action="store_false",
        help="with seeds, skip the fine-tuning on all simulations weighted by 1/W after the rounds "
        "(docs/refine.md)",
    )
    rfc.add_argument(
        "--distill",
        type=_count,
        default=2,
        metavar="STEPS",
        help="after the rounds, tune the refined cINN to the exact posterior of the likelihood in "
        "STEPS steps of likelihood-weighted draws (default 2; 0: none; each step costs "
        "--distill-samples likelihood evaluations; docs/refine.md)",
    )
    rfc.add_argument(
        "--distill-samples", type=_positive_int, default=4000, help="likelihood-weighted draws per step"
    )
    rfc.add_argument("--distill-epochs", type=_positive_int, default=20, help="training epochs per step")
    rfc.add_argument(
        "--distill-proposal",
        type=_share,
        default=0.5,
        metavar="SHARE",
        help="with the modes searched (not with --no-seeds), the share of every distillation step's draws "
        "taken from the mode weighing's proposal, which covers every mode the weighing ran, the ones the "
        "refined cINN misses included (0 <= f < 1; 0: none; default 0.5; docs/refine.md)",
    )
    rfc.add_argument(
        "--no-seeds",
        dest="seeds",
        action="store_false",
        help="first region: the cINN's alone, without the modes of the exact posterior that it misses "
        "(found and weighed as by the MCMC)",
    )
    rfc.add_argument("--seed", type=_seed, default=1)
    rfc.add_argument("--overwrite", action="store_true")
    rfc.add_argument("--no-progress", dest="progress", action="store_false")
    rfc.set_defaults(handler=_refine_cosmic)

    # mcmc
    mcmc = sub.add_parser("mcmc", help="MCMC baseline on the same likelihood")
    mcmc_sub = mcmc.add_subparsers(dest="what", required=True, metavar="WHAT")
    mco = mcmc_sub.add_parser("cosmic", help="emcee posterior of the cosmic-ray source parameters")
    mco.add_argument(
        "--observation", required=True, help="'auger' or an observation/shower/pseudo-experiment file"
    )
    mco.add_argument("--output", type=Path, required=True)
    mco.add_argument("--config", type=Path, default=None)
    mco.add_argument("--seed", type=_seed, default=None)
    mco.add_argument("--entry", type=int, default=0, help="entry of a pseudo-experiment file")
    mco.add_argument("--n-steps", type=_positive_int, default=None)
    mco.add_argument("--chain", action="store_true", help="also write the full chain")
    mco.add_argument(
        "--systematics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample the energy- and Xmax-scale nuisances nu_E, nu_X (default: [systematics] enabled)",
    )
    mco.add_argument("--overwrite", action="store_true")
    mco.add_argument("--no-progress", dest="progress", action="store_false")
    mco.set_defaults(handler=_mcmc_cosmic)

    # merge
    merge = sub.add_parser("merge", help="concatenate the complete chunks of a run into one file (optional)")
    merge.add_argument("directory", type=Path, help="chunk directory of a process/infer run")
    merge.add_argument("target", type=Path, help="output file, .parquet or .root (outside the directory)")
    merge.add_argument("--overwrite", action="store_true")
    merge.set_defaults(handler=_merge)

    # unfolding
    unfold = sub.add_parser("unfold", help="unfolding studies: cINN against iterative Bayesian unfolding")
    unfold_sub = unfold.add_subparsers(dest="what", required=True, metavar="WHAT")
    unf = unfold_sub.add_parser("ttbar", help="unfold top pT and m_ttbar of semileptonic ttbar")
    unf.add_argument(
        "--train", nargs="+", required=True, help="simulation: NanoAOD file(s) or a fileset JSON"
    )
    unf.add_argument(
        "--test", nargs="+", required=True, help="pseudo-data: NanoAOD file(s) or a fileset JSON"
    )
    unf.add_argument("--output", type=Path, required=True)
    unf.add_argument(
        "--config",
        type=Path,
        default=None,
        help="analysis config (default: the shipped one)",
    )
    unf.add_argument(
        "--retrain", action="store_true", help="train the cINN ensemble even if trained models exist"
    )
    _add_run_options(unf)
    unf.set_defaults(handler=_unfold_ttbar)

    # config
    config = sub.add_parser("config", help="the analysis configs shipped with hepflow")
    config_sub = config.add_subparsers(dest="what", required=True, metavar="WHAT")
    show = config_sub.add_parser(
        "show", help="print a shipped config (TOML): copy it, edit it, pass it with --config"
    )
    show.add_argument("analysis", choices=["neutrino", "cosmic", "unfolding"])
    show.add_argument(
        "--file",
        default="config.toml",
        help="another shipped file of the analysis (cosmic: config_stick_breaking.toml)",
    )
    show.add_argument("--path", action="store_true", help="print the file's path instead")
    show.set_defaults(handler=_config_show)

    # demo
    from hepflow.demo import DEMO_PSEUDO_EXPERIMENTS

    demo = sub.add_parser("demo", help="the main job on the embedded default data")
    demo.add_argument("--output", type=Path, default=Path("hepflow-demo"))
    demo.add_argument(
        "--only", choices=["neutrino", "cosmic"], default=None, help="run one analysis (default: both)"
    )
    demo.add_argument(
        "--events", type=_positive_int, default=4000, help="ttbar training events (held-out: half)"
    )
    demo.add_argument(
        "--pseudo-experiments",
        type=_positive_int,
        default=DEMO_PSEUDO_EXPERIMENTS,
        help="cosmic training pseudo-experiments",
    )
    demo.add_argument("--seed", type=_seed, default=1)
    demo.add_argument("--no-progress", dest="progress", action="store_false")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler

    def checked(args: argparse.Namespace) -> int:
        if hasattr(args, "executor"):
            _run_config(args)  # refuse inconsistent run options before any work starts
        if getattr(args, "output", None) is not None:
            _check_output(args.output, directory=args.command != "generate")
        if getattr(args, "target", None) is not None:
            _check_output(args.target, directory=False)
        return handler(args)

    return guarded(checked, args)


class Terminated(Exception):
    """Raised by the SIGTERM handler of :func:`guarded`, so that cleanups run (a batch system
    ends a job with SIGTERM; without a handler the process dies without them)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def guarded(handler: Handler, args: argparse.Namespace) -> int:
    """Run ``handler(args)``: a :class:`HepflowError` becomes one line and exit 2, Ctrl-C exit
    130, SIGTERM exit 143, both after the ``finally`` blocks of the running code (the temporary
    files of :func:`hepflow.outputs.atomic.atomic_write` among them) have run."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return handler(args)
    except HepflowError as err:
        if getattr(args, "debug", False):
            raise
        print(f"hepflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hepflow: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("hepflow: terminated (SIGTERM); outputs being written were removed", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
