"""The neutrino analysis step by step: one function per ``hepflow ... neutrino`` command.

* :func:`process`: the feature processor over NanoAOD files, chunk by chunk
  (``hepflow process neutrino``);
* :func:`train`: the cINN and the regression baseline on the processed features
  (``hepflow train neutrino``);
* :func:`infer`: posterior and baseline columns for every selected event
  (``hepflow infer neutrino``);
* :func:`report`: the comparison of the estimates with their plots (``hepflow report neutrino``).

The command line and ``hepflow demo`` call these functions and print their summaries; the
physics is in :mod:`~hepflow.neutrino.processor`, :mod:`~hepflow.neutrino.model`,
:mod:`~hepflow.neutrino.inference` and :mod:`~hepflow.neutrino.report`.

Example:
    >>> result = ProcessResult(output=Path("features"), cutflow={"all": 10, "one lepton": 4},
    ...                        by_dataset={"ttbar": {"all": 10, "one lepton": 4}}, chunks={"c": {}})
    >>> print(result.summary())
    cutflow:       ttbar
      all                 10
      one lepton           4
    wrote 1 chunk(s) to features
    >>> result.truth = {"ttbar": {"events": 3, "sumw": 1011.14}}  # simulation: GenPart, genWeight
    >>> print(result.summary())
    cutflow:       ttbar
      all                     10
      one lepton               4
    of these rows, with a truth neutrino (W -> e nu, mu nu; `train` refuses the others):
      truth neutrino           3
      sum of weights     1011.14
    wrote 1 chunk(s) to features
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hepflow.config import shipped_config, to_dict
from hepflow.errors import ConfigError, InputError
from hepflow.neutrino.config import NeutrinoConfig, SupportConfig
from hepflow.neutrino.data import load_training_data
from hepflow.neutrino.model import ANALYSIS, FEATURE_SPEC, build_flow, build_regression, check_selection
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.neutrino.shift import NO_SUMMARY, check_on_shift, input_shift, training_summary

__all__ = [
    "TRUTH_STEP",
    "InferResult",
    "ProcessResult",
    "infer",
    "process",
    "report",
    "report_summary",
    "train",
    "train_summary",
    "truth_counts",
]

if TYPE_CHECKING:
    from hepflow.posterior.shift import ShiftResult

Source = str | os.PathLike[str]
log = logging.getLogger(__name__)


def _run_config(run_config: Any) -> Any:
    from hepflow.processing import RunConfig

    return run_config if run_config is not None else RunConfig(progress=False)


def _files(inputs: Source | Sequence[Source]) -> list[Source]:
    return [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)


#: The line of :meth:`ProcessResult.summary` that counts the rows with a truth neutrino.
TRUTH_STEP = "truth neutrino"


@dataclass
class ProcessResult:
    """What :func:`process` wrote: the cutflow (in total and per dataset), the chunks and, for
    simulation (``GenPart``), ``truth``: per dataset the rows with a truth neutrino (the events
    ``hepflow train`` can use) and the sum of their generator weights."""

    output: Path
    cutflow: dict[str, int]
    by_dataset: dict[str, dict[str, int]]
    chunks: dict[str, Any]
    skipped_files: list[Any] = field(default_factory=list)
    truth: dict[str, dict[str, float]] | None = None

    def summary(self) -> str:
        """The cutflow table per dataset (with the rows with a truth neutrino for simulation), the
        chunks written and the files skipped."""
        steps = list(self.cutflow)
        width = max(
            map(len, [*steps, *([TRUTH_STEP, "sum of weights"] if self.truth is not None else [])]), default=0
        )
        names = sorted(self.by_dataset)
        lines = ["cutflow:" + "".join(f"  {name:>{max(len(name), 10)}}" for name in names)]
        for step in steps:
            row = "".join(f"  {self.by_dataset[n].get(step, 0):>{max(len(n), 10)}d}" for n in names)
            lines.append(f"  {step:<{width}}{row}")
        if self.truth is not None:
            lines.append(
                "of these rows, with a truth neutrino (W -> e nu, mu nu; `train` refuses the others):"
            )
            row = "".join(
                f"  {int(self.truth.get(n, {}).get('events', 0)):>{max(len(n), 10)}d}" for n in names
            )
            lines.append(f"  {TRUTH_STEP:<{width}}{row}")
            row = "".join(f"  {self.truth.get(n, {}).get('sumw', 0.0):>{max(len(n), 10)}.6g}" for n in names)
            lines.append(f"  {'sum of weights':<{width}}{row}")
        lines.append(f"wrote {len(self.chunks)} chunk(s) to {self.output}")
        if self.skipped_files:
            lines.append(f"skipped {len(self.skipped_files)} bad file(s): see {self.output / 'run.json'}")
        return "\n".join(lines)


def process(
    inputs: Source | Sequence[Source],
    output: Source,
    *,
    config: NeutrinoSelection | NeutrinoConfig | Source | None = None,
    dataset: str = "ttbar",
    run_config: Any = None,
) -> ProcessResult:
    """Select events and write their feature columns, in resumable chunks, to ``output``.

    Args:
        inputs: NanoAOD files, or one coffea fileset JSON.
        output: the output directory.
        config: the selection, an analysis config, or a TOML file whose ``[selection]`` is read
            (default: the shipped config's ``[selection]``).
        dataset: the dataset name of a plain file list.
        run_config: a :class:`hepflow.processing.RunConfig` (default: no progress bar).
    """
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor
    from hepflow.processing import build_fileset, cutflow_to_dict, run_processor

    if isinstance(config, NeutrinoConfig):
        selection = config.selection
    elif isinstance(config, NeutrinoSelection):
        selection = config
    else:
        selection = NeutrinoSelection.from_file(shipped_config("neutrino") if config is None else config)
    fileset = build_fileset(_files(inputs), dataset=dataset)
    result = run_processor(NeutrinoFeatureProcessor(selection), fileset, output, _run_config(run_config))
    return ProcessResult(
        output=Path(output),
        cutflow=cutflow_to_dict(result["cutflow"]),
        by_dataset={name: cutflow_to_dict(h) for name, h in result["cutflow_by_dataset"].items()},
        chunks=result["chunks"],
        skipped_files=list(result["skipped_files"]),
        truth=truth_counts(output, result["chunks"]),
    )


def truth_counts(output: Source, chunks: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """Per dataset, the rows of the written parquet chunks that have a truth neutrino
    (``events``) and the sum of their ``weight`` (``sumw``); None when the chunks carry no truth
    columns (data, or files without ``GenPart``) or no parquet files were written. Reads only the
    two columns."""
    import numpy as np
    import pyarrow.parquet as pq

    counts: dict[str, dict[str, float]] = {}
    for info in chunks.values():
        parquet = [f for f in info.get("files", []) if str(f).endswith(".parquet")]
        if not parquet:
            return None
        path = Path(output) / parquet[0]
        if "nu_px_true" not in pq.read_schema(path).names:
            return None
        table = pq.read_table(path, columns=["nu_px_true", "weight"])
        has_truth = table.column("nu_px_true").is_valid().to_numpy(zero_copy_only=False)
        weight = table.column("weight").to_numpy()
        entry = counts.setdefault(info["dataset"], {"events": 0, "sumw": 0.0})
        entry["events"] += int(has_truth.sum())
        entry["sumw"] += float(np.sum(weight[has_truth], dtype=np.float64))
    return counts


def train(
    data_dir: Source,
    output_dir: Source,
    *,
    config: NeutrinoConfig | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the cINN and the regression baseline on processed features; save both.

    An ``output_dir`` that holds trained models already is refused before anything is read,
    unless ``overwrite`` (replace them) or ``resume`` (continue their training).

    Writes ``output_dir/flow`` and ``output_dir/regression`` (safetensors + JSON config with the
    feature specification), their training histories and loss plots, and ``training.json``,
    whose content is returned. ``config=None`` means the shipped config.

    Rows without a truth neutrino (``nu_*_true`` None: W -> tau nu or no leptonic W, see
    :func:`hepflow.neutrino.processor.leptonic_w_neutrino`) and rows with a non-finite value are
    refused; ``training.json`` records their counts, the ``cutflow`` (rows, with a truth
    neutrino, finite: events and sums of weights, :func:`hepflow.neutrino.data.load_training_data`)
    and the ``data`` it was trained on (the feature directory and its run's input files).
    Fewer usable events than ``[training] min_events`` (default 100) are refused. The flow's
    samples are bounded by ``[support]`` (:class:`~hepflow.neutrino.config.SupportConfig`, recorded
    in its metadata); events whose true neutrino lies outside it are dropped, counted in
    ``dropped_outside_support`` and logged (none in 30 000 generated events with the shipped
    bounds, docs/training.md).

    When the feature chunks carry a ``weight`` column (the generator weight), both models are
    trained with these per-event weights (:func:`hepflow.fit`'s ``weights``, negative ones
    included) and ``training.json`` records ``weights``: ``used``, and their ``sum``,
    ``sum_squares`` and number ``negative``; without the column training is unweighted, as
    before, and ``weights`` is ``{"used": false}``.
    """
    import hepflow
    from hepflow.flows.serialization import check_model_target
    from hepflow.outputs import write_json

    cfg = NeutrinoConfig.load(config)
    tc = cfg.training
    out = Path(output_dir)
    for name in ("flow", "regression"):
        check_model_target(out / name, overwrite=overwrite or resume)
    data = load_training_data(data_dir, max_events=tc.max_events)
    data, outside = _inside_support(data, cfg.support, data_dir)
    if len(data.theta) < tc.min_events:
        raise InputError(
            f"{data_dir}: only {len(data.theta)} usable events with a truth neutrino "
            f"(of {data.n_read} rows, {data.n_missing_truth} without truth); "
            f"need at least {tc.min_events} (training.min_events)"
        )
    summary: dict[str, Any] = {
        "events_read": data.n_read,
        "events_used": len(data.theta),
        "dropped_missing_truth": data.n_missing_truth,
        "dropped_non_finite": data.n_non_finite,
        "dropped_outside_support": outside,
        "cutflow": data.cutflow,
        "data": _data_provenance(data_dir),
        "weights": {"used": False},
        "config": to_dict(cfg),
    }
    if data.weights is not None:
        summary["weights"] = {
            "used": True,
            "sum": float(data.weights.sum()),
            "sum_squares": float((data.weights**2).sum()),
            "negative": int((data.weights < 0).sum()),
        }
    models = {
        "flow": build_flow(cfg.flow, cfg.summary, support=cfg.support, seed=tc.seed),
        "regression": build_regression(cfg.regression, cfg.summary, seed=tc.seed),
    }
    metadata = {
        "analysis": ANALYSIS,
        "features": FEATURE_SPEC,
        "selection": to_dict(cfg.selection),
        # what `hepflow infer` compares its input with (hepflow.neutrino.shift)
        "training_summary": training_summary(models["flow"], data.context).to_dict(),
    }
    fit_options = {**tc.fit_options(), "progress": progress, "resume": resume}
    for name, model in models.items():
        t0 = time.perf_counter()
        history = hepflow.fit(
            model,
            data.theta,
            data.context,
            weights=data.weights,
            checkpoint_dir=out / "checkpoints" / name,
            output_dir=out / f"history_{name}",
            **fit_options,
        )
        meta = {**metadata, "model": name}
        if name == "flow":  # the flow's [support], checked against its constraints on loading
            meta["support"] = to_dict(cfg.support)
        hepflow.save_model(model.cpu(), out / name, metadata=meta, overwrite=True)
        summary[name] = {
            "seconds": time.perf_counter() - t0,
            "epochs": len(history.train_loss),
            "best_epoch": history.best_epoch,
            "best_val_loss": float(min(v for v in history.val_loss if v is not None)),
        }
    write_json(out / "training.json", summary)
    return summary


def _inside_support(data: Any, support: SupportConfig, data_dir: Source) -> tuple[Any, int]:
    """``data`` without the events whose true neutrino lies outside ``[support]`` (checked in
    float32, the flow's precision), and how many were dropped (logged)."""
    import torch

    constraint = support.constraint()
    if constraint is None or len(data.theta) == 0:
        return data, 0
    inside = constraint.contains(torch.as_tensor(data.theta, dtype=torch.float32)).numpy()
    outside = int((~inside).sum())
    if not outside:
        return data, 0
    log.warning(
        "%s: dropped %d of %d events whose true neutrino lies outside [support] "
        "(|px|, |py| < %g GeV, |pz| < %g GeV)",
        data_dir,
        outside,
        len(inside),
        support.pt_max,
        support.pz_max,
    )
    kept = dataclasses.replace(
        data,
        theta=data.theta[inside],
        context={k: v[inside] for k, v in data.context.items()},
        weights=None if data.weights is None else data.weights[inside],
    )
    return kept, outside


def _data_provenance(data_dir: Source) -> dict[str, Any]:
    """Which feature directory a model was trained on and, when a hepflow run wrote it, the
    input files of that run (dataset: path, size, tree) and the processor settings' checksum."""
    from hepflow.outputs.records import read_run

    run = read_run(data_dir) or {}
    provenance = run.get("provenance", {})
    return {
        "directory": str(Path(data_dir).resolve()),
        "fileset": provenance.get("fileset"),
        "producer_sha256": provenance.get("producer_sha256"),
    }


def train_summary(summary: Mapping[str, Any], output_dir: Source) -> str:
    """What ``hepflow train neutrino`` prints about a :func:`train` summary."""
    lines = [
        f"trained on {summary['events_used']} events "
        f"(dropped {summary['dropped_missing_truth']} without truth, "
        f"{summary['dropped_non_finite']} non-finite)"
    ]
    if cutflow := summary.get("cutflow"):
        width = max(map(len, cutflow))
        weights = "generator weights" if summary["weights"]["used"] else "no weight column: 1 each"
        lines.append(f"  {'':<{width}}  {'events':>8}  {'sum of weights':>16}  ({weights})")
        lines += [
            f"  {step:<{width}}  {row['events']:>8d}  {row['sumw']:>16.6g}" for step, row in cutflow.items()
        ]
    for name in ("flow", "regression"):
        info = summary[name]
        lines.append(
            f"  {name:<10} {info['epochs']:>4d} epochs  {info['seconds']:8.1f} s  "
            f"best val loss {info['best_val_loss']:.4f}"
        )
    lines.append(f"models in {output_dir}")
    return "\n".join(lines)


@dataclass
class InferResult:
    """What :func:`infer` wrote: the events with posteriors, the chunks and, with ``friend``, the
    friend tree of each input file (``{input file: friend file}``)."""

    output: Path
    rows: int
    chunks: dict[str, Any]
    friends: dict[str, Path] = field(default_factory=dict)
    shift: ShiftResult | None = None

    def summary(self) -> str:
        text = f"wrote posteriors for {self.rows} events in {len(self.chunks)} chunk(s) to {self.output}"
        for source, path in self.friends.items():
            text += f"\nfriend tree of {source}: {path}"
        text += "\n" + (NO_SUMMARY if self.shift is None else self.shift.summary())
        return text


def infer(
    model_dir: Source,
    inputs: Source | Sequence[Source],
    output: Source,
    *,
    samples: int | None = None,
    config: NeutrinoConfig | Source | None = None,
    dataset: str = "ttbar",
    run_config: Any = None,
    friend: bool = False,
    on_shift: str = "warn",
) -> InferResult:
    """Posterior samples, summaries and baselines as columns of every selected event.

    ``model_dir`` is a ``hepflow train neutrino`` output, or ``"pretrained"``: the model shipped
    with hepflow, checked against its model card (:mod:`hepflow.neutrino.pretrained`). The models
    are loaded (and a missing or foreign model refused) before any processing starts.
    ``samples`` per event default to the config's ``[inference] samples``; the selection, the
    event batches and the seed are the config's (default: the shipped config). With
    ``friend``, each input file also gets a friend tree of the posterior columns, one entry per
    input event (:func:`hepflow.outputs.friend.write_friends`).

    The selected events are then compared with the training summary the model records
    (:func:`hepflow.neutrino.shift.input_shift`); the verdict is the result's ``shift`` and is
    recorded in ``run.json`` (``domain_shift``). When the input differs from the training data,
    ``on_shift="warn"`` issues a :class:`~hepflow.posterior.shift.DomainShiftWarning` and
    ``"error"`` raises :class:`~hepflow.posterior.shift.DomainShiftError` (the outputs are
    written and recorded either way).
    """
    from hepflow.neutrino.inference import INFERENCE_COLUMNS
    from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor, cached_models
    from hepflow.neutrino.pretrained import resolve_model
    from hepflow.outputs import write_json
    from hepflow.outputs.friend import write_friends
    from hepflow.outputs.records import RUN_FILE, read_run
    from hepflow.posterior.shift import DomainShiftError, DomainShiftWarning
    from hepflow.processing import build_fileset, run_processor

    model_dir = resolve_model(model_dir)  # "pretrained": the shipped model, every file verified
    cfg = NeutrinoConfig.load(config)
    run = _run_config(run_config)
    check_on_shift(on_shift)
    if friend and run.maxchunks is not None:
        raise ConfigError(f"--friend needs every entry of each input file: drop --maxchunks {run.maxchunks}")
    if friend and "parquet" not in run.formats:
        raise ConfigError("--friend is built from the parquet chunks: add --format parquet")
    cached_models(model_dir)  # refuse a missing or foreign model before any processing starts
    check_selection(model_dir, cfg.selection)
    proc = NeutrinoInferenceProcessor(
        model_dir,
        samples=samples or cfg.inference.samples,
        batch_events=cfg.inference.batch_events,
        seed=cfg.inference.seed,
        selection=cfg.selection,
    )
    fileset = build_fileset(_files(inputs), dataset=dataset)
    result = run_processor(proc, fileset, output, run)
    rows = sum(info["rows"] for info in result["chunks"].values())
    friends = {}
    if friend:
        trees = {f: tree for spec in fileset.values() for f, tree in spec["files"].items()}
        friends = write_friends(result["chunks"], output, columns=INFERENCE_COLUMNS, trees=trees)
    shift = input_shift(model_dir, output, formats=run.formats)
    record = read_run(output)
    if record is not None:  # the verdict with the run's provenance
        record["domain_shift"] = {"verdict": NO_SUMMARY} if shift is None else shift.to_dict()
        write_json(Path(output) / RUN_FILE, record)
    inferred = InferResult(
        output=Path(output), rows=rows, chunks=result["chunks"], friends=friends, shift=shift
    )
    if shift is not None and shift.shifted:
        if on_shift == "error":
            raise DomainShiftError(
                f"{shift.verdict()}; {shift.differing[0].describe()}; model {model_dir}, outputs and "
                f"verdict ({RUN_FILE}) in {output}: see docs/domain_shift.md"
            )
        warnings.warn(shift.summary(), DomainShiftWarning, stacklevel=2)
    return inferred


def report(inference_dir: Source, output_dir: Source, *, n_displays: int = 6) -> dict[str, Any]:
    """The comparison report of inference columns with its plots, written into ``output_dir``
    (:func:`hepflow.neutrino.report.make_report`)."""
    from hepflow.neutrino.report import make_report

    return make_report(inference_dir, output_dir, n_displays=n_displays)


def report_summary(rep: Mapping[str, Any], output: Source) -> str:
    """What ``hepflow report neutrino`` prints about a :func:`report`."""
    from hepflow.neutrino.report import METHODS

    without = rep.get("events_without_truth", 0)
    left_out = f" ({without} without one left out)" if without else ""
    lines = [
        f"{rep['events']} events with a truth neutrino{left_out}; "
        f"quadratic complex fraction {rep['quad_complex_fraction']:.3f}",
        f"{'method':<12} {'pz bias':>9} {'pz IQR width':>13} {'ratio to quad':>14}",
    ]
    quad = rep["resolution"]["all"]["quad"]["pz"]["iqr_width"]
    for m in METHODS:
        r = rep["resolution"]["all"][m]["pz"]
        lines.append(f"{m:<12} {r['bias']:>9.2f} {r['iqr_width']:>13.2f} {r['iqr_width'] / quad:>14.3f}")
    cov = rep["calibration"]["coverage"]
    lines.append("coverage 68%: " + ", ".join(f"{k} {v:.3f}" for k, v in cov["0.68"].items()))
    lines.append("coverage 95%: " + ", ".join(f"{k} {v:.3f}" for k, v in cov["0.95"].items()))
    roots = rep["root_choice"]
    right, width = roots["correct_root_fraction"], roots["pz_width_ratio_to_quadratic"]
    lines.append(
        f"real roots: the root nearer the truth is picked by the quadratic in {right['quad']:.3f}, "
        f"by the flow in {right['flow']:.3f} of {roots['events_with_real_roots']} events; pz width "
        f"ratio with the flow's root {width['flow_root']:.3f}, with the right root always "
        f"{width['oracle_root']:.3f} (the bound for estimates that return a root)"
    )
    if "verdicts" in rep:  # scores, downstream observables and verdicts
        from hepflow.neutrino.report import summary_lines

        lines += summary_lines(dict(rep))
    lines.append(f"report and plots in {output}")
    return "\n".join(lines)
