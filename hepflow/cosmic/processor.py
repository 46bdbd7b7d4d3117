"""Coffea processors for the cosmic-ray ntuples (:mod:`hepflow.cosmic.generate`).

* :class:`ShowerHistogramProcessor`: a ``Showers`` tree (one entry per air shower, ``lg_e`` and
  ``xmax``) -> the lg E x Xmax histogram of the published Auger binning
  (:func:`hepflow.cosmic.features.shower_histogram`), accumulated over chunks and files;
* :class:`PseudoExperimentFeatureProcessor`: a ``PseudoExperiments`` tree -> columns: the 7 true
  parameters and the conditioning features (:func:`hepflow.cosmic.features.observation_features`).

The ntuples are flat trees, read with coffea's ``BaseSchema``. :func:`process_cosmic` runs either
over files (the tree is recognised by name) and writes the outputs::

    from hepflow.cosmic.processor import process_cosmic
    process_cosmic(["pe.root"], "features/")        # chunk parquet files + run.json
    process_cosmic(["showers.root"], "observation/")  # observation.root (TH2D), features.parquet

or use the processors in your own coffea workflow::

    from coffea import processor
    from coffea.nanoevents import BaseSchema
    runner = processor.Runner(processor.IterativeExecutor(), schema=BaseSchema)
    out = runner({"data": {"files": {"showers.root": "Showers"}}}, ShowerHistogramProcessor(),
                 treename="Showers")
    observation = histogram_observation(out["histogram"])

or in coffea's dask mode (``apply_to_fileset(processor, steps, schemaclass=BaseSchema)``, or
:func:`cosmic_dask`, which checks the files first; docs/dask.md)::

    lazy = cosmic_dask(["showers_1.root", "showers_2.root"])  # a task graph, nothing read yet
    out = lazy.compute()  # what the Runner gives: out["histogram"], out["by_dataset"], ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
from coffea import processor
from coffea.nanoevents import BaseSchema

from hepflow.cosmic import PARAMETER_NAMES, Binning, Observation
from hepflow.cosmic.config import load_config
from hepflow.cosmic.features import (
    feature_columns,
    feature_names,
    histogram_observation,
    observation_features,
    shower_histogram,
    valid_rows,
)
from hepflow.cosmic.generate import HISTOGRAM_NAME, PSEUDO_EXPERIMENT_TREE, SHOWER_TREE
from hepflow.errors import ConfigError, HepflowError, InputError, OutputError
from hepflow.inputs import Kind, check_branches
from hepflow.outputs.atomic import atomic_write, clean_stale_temporaries, write_json
from hepflow.outputs.columnar import write_parquet
from hepflow.outputs.lock import output_lock
from hepflow.processing import (
    ChunkColumns,
    ColumnProcessor,
    Cutflow,
    RunConfig,
    build_fileset,
    execute,
    explain_failure,
    is_dask,
    make_output_dir,
    per_partition,
    run_processor,
    source_file,
)

__all__ = [
    "CosmicDask",
    "CosmicProcessingResult",
    "PseudoExperimentFeatureProcessor",
    "ShowerHistogramProcessor",
    "cosmic_dask",
    "process_cosmic",
]

Mode = Literal["auto", "features", "histogram"]


#: Branches of a ``Showers`` tree that :class:`ShowerHistogramProcessor` reads.
SHOWER_BRANCHES: dict[str, Kind] = {"lg_e": "float", "xmax": "float"}
#: Branches of a ``PseudoExperiments`` tree that :class:`PseudoExperimentFeatureProcessor` reads.
PSEUDO_EXPERIMENT_BRANCHES: dict[str, Kind] = {
    **dict.fromkeys(PARAMETER_NAMES, "float"),
    "spectrum": "number",
    "xmax": "number",
}


class ShowerHistogramProcessor(processor.ProcessorABC):
    """Fill the lg E x Xmax histogram from a ``Showers`` tree (branches ``lg_e``, ``xmax``).

    ``process`` returns ``{"histogram": hist.Hist, "by_dataset": {dataset: hist.Hist},
    "showers_by_dataset": {dataset: int}, "excluded_showers_by_dataset": {dataset: int},
    "showers": {filename: int}, "excluded_showers": {filename: int}}``; coffea adds the
    results of all chunks. Showers without an Xmax (NaN) fill the Xmax overflow bin, so the
    histogram holds both the spectrum and the Xmax distributions
    (:func:`hepflow.cosmic.features.histogram_counts`). Showers whose ``lg_e`` is NaN or
    infinite, or whose ``xmax`` is infinite, are excluded and counted.

    In coffea's dask mode (``apply_to_fileset(..., schemaclass=BaseSchema)``, or
    :func:`cosmic_dask`) nothing is computed in ``process``: the histograms are ``hist.dask``
    histograms (filled per partition, summed by dask; needs ``dask-histogram``) and the counts
    lazy scalars. A dask-mode partition does not know its file, so the per-file ``showers`` and
    ``excluded_showers`` are left out; the rest, computed, merged over the datasets with
    ``coffea.processor.accumulate`` and passed to :meth:`postprocess`, equals the Runner's output.
    """

    def __init__(self, binning: Binning | None = None) -> None:
        self.binning = binning if binning is not None else Binning.auger()
        shower_histogram(self.binning)  # checks that the binning fits one histogram

    def process(self, events: Any) -> dict[str, Any]:
        _check_tree(events, SHOWER_BRANCHES, SHOWER_TREE)
        lg_e = ak.values_astype(events.lg_e, np.float64)
        xmax = ak.values_astype(events.xmax, np.float64)
        good = np.isfinite(lg_e) & ~np.isinf(xmax)  # NaN xmax: a shower without Xmax, kept
        dataset = str((getattr(events, "metadata", None) or {}).get("dataset", "dataset"))
        kept, excluded = ak.sum(good), ak.sum(~good)
        if is_dask(good):
            h = _lazy_histogram(self.binning)
            h.fill(lg_e=lg_e[good], xmax=xmax[good])
            return {
                "histogram": h,
                "by_dataset": {dataset: h},  # one graph: computed once
                "showers_by_dataset": {dataset: kept},
                "excluded_showers_by_dataset": {dataset: excluded},
            }
        h = shower_histogram(self.binning)
        h.fill(lg_e=ak.to_numpy(lg_e[good]), xmax=ak.to_numpy(xmax[good]))
        return {
            "histogram": h,
            "by_dataset": {dataset: h.copy()},
            "showers_by_dataset": {dataset: int(kept)},
            "excluded_showers_by_dataset": {dataset: int(excluded)},
            "showers": {source_file(events): int(kept)},
            "excluded_showers": {source_file(events): int(excluded)},
        }

    def postprocess(self, accumulator: Any) -> Any:
        """The accumulated output, with plain ``int`` counts (dask gives numpy scalars) and no
        histogram shared between ``histogram`` and ``by_dataset`` (one dataset in dask mode)."""
        out = dict(accumulator)
        if isinstance(out.get("by_dataset"), Mapping):
            total = out.get("histogram")
            out["by_dataset"] = {k: (h.copy() if h is total else h) for k, h in out["by_dataset"].items()}
        for key in ("showers", "excluded_showers", "showers_by_dataset", "excluded_showers_by_dataset"):
            if isinstance(out.get(key), Mapping):
                out[key] = {k: int(n) for k, n in out[key].items()}
        return out


def _lazy_histogram(binning: Binning) -> Any:
    """An empty ``hist.dask`` histogram with the axes of :func:`shower_histogram`."""
    try:
        import hist.dask
    except ImportError as err:
        raise ConfigError(
            "the shower histogram in coffea's dask mode needs dask-histogram: "
            "pip install 'hepflow[distributed]'"
        ) from err
    return hist.dask.Hist(*shower_histogram(binning).axes, storage=hist.storage.Double())


class PseudoExperimentFeatureProcessor(ColumnProcessor):
    """Turn a ``PseudoExperiments`` tree into truth and feature columns.

    :meth:`columns` builds one chunk: columns ``index``, the 7 parameters and the features of
    :func:`hepflow.cosmic.features.feature_names`, one row per pseudo-experiment; in a coffea
    ``Runner`` the output is per dataset, the chunks concatenated in order
    (:class:`~hepflow.processing.ColumnProcessor`).
    The cutflow has the steps ``"all"`` and ``"valid inputs"``: pseudo-experiments with a NaN,
    infinite or negative count, or a non-finite parameter, are dropped and counted (the
    difference of the two). Pseudo-experiments carry no event weights: there is no weighted
    cutflow.

    In coffea's dask mode the validity mask and the features (numpy) are computed per partition
    (:func:`hepflow.processing.per_partition`) and the cutflow is lazy; the branch types and the
    spectrum/Xmax shapes are checked on the form, before anything is read.
    """

    def __init__(self, binning: Binning | None = None) -> None:
        self.binning = binning if binning is not None else Binning.auger()

    def columns(self, events: Any) -> ChunkColumns:
        _check_tree(events, PSEUDO_EXPERIMENT_BRANCHES, PSEUDO_EXPERIMENT_TREE, optional={"index": "integer"})
        n_e, n_m, n_x = self.binning.shape
        spectrum, xmax = _inner_shape(events.spectrum), _inner_shape(events.xmax)
        if spectrum != (n_e,) or xmax not in ((n_m, n_x), (n_m * n_x,)):
            shapes = "/".join("(var)" if s is None else str(s) for s in (spectrum, xmax))
            raise InputError(
                f"{source_file(events)}: spectrum/xmax have shapes {shapes}, "
                f"the binning needs ({n_e},)/({n_m}, {n_x}): was it generated with another lg_e_min?"
            )
        names = [*PSEUDO_EXPERIMENT_BRANCHES, *(["index"] if "index" in events.fields else [])]
        record = ak.zip({name: events[name] for name in names}, depth_limit=1)
        valid = per_partition(_valid_inputs, record, label="cosmic-valid-inputs")
        cutflow = Cutflow(weighted=False)
        cutflow.add("all", valid)
        selected = record[valid]
        cutflow.add("valid inputs", valid[valid])
        columns = per_partition(
            partial(_feature_columns, binning=self.binning), selected, label="cosmic-features"
        )
        return cutflow.chunk(columns)


def _check_tree(
    events: Any, branches: Mapping[str, Kind], tree: str, *, optional: Mapping[str, Kind] | None = None
) -> None:
    """:func:`~hepflow.inputs.check_branches`, naming the processor that fits the other cosmic
    tree when the events are that tree (a fileset with the wrong tree name)."""
    other = {SHOWER_TREE: PSEUDO_EXPERIMENT_BRANCHES, PSEUDO_EXPERIMENT_TREE: SHOWER_BRANCHES}[tree]
    fields = set(events.fields)
    if not set(branches) <= fields and set(other) <= fields:
        name, fits = (
            (PSEUDO_EXPERIMENT_TREE, "PseudoExperimentFeatureProcessor")
            if tree == SHOWER_TREE
            else (SHOWER_TREE, "ShowerHistogramProcessor")
        )
        missing = ", ".join(b for b in branches if b not in fields)
        raise InputError(
            f"{source_file(events)}: missing branches {missing}: these are the branches of a {name} "
            f"tree, not of a {tree} tree; use {fits} for them"
        )
    check_branches(events, branches, optional=optional)


def _inner_shape(array: Any) -> tuple[int, ...] | None:
    """The fixed dimensions after the first of ``array`` (from its form), None if one is jagged."""
    form = array.layout.form if isinstance(array, ak.Array) else array.form
    shape: list[int] = []
    while True:
        if isinstance(form, ak.forms.RegularForm):
            shape.append(form.size)
            form = form.content
        elif isinstance(form, ak.forms.NumpyForm):
            return (*shape, *form.inner_shape)
        elif isinstance(form, ak.forms.IndexedForm | ak.forms.UnmaskedForm):
            form = form.content
        else:
            return None


def _valid_inputs(record: ak.Array) -> ak.Array:
    """Per pseudo-experiment: finite, non-negative counts and finite parameters."""
    truth = np.stack([ak.to_numpy(record[name]).astype(float) for name in PARAMETER_NAMES], axis=1)
    spectrum, xmax = ak.to_numpy(record.spectrum), ak.to_numpy(record.xmax)
    return ak.Array(valid_rows(spectrum, xmax) & valid_rows(truth, nonnegative=False))


def _feature_columns(record: ak.Array, *, binning: Binning) -> ak.Array:
    """The truth, feature (and ``index``) columns of valid pseudo-experiments."""
    truth = np.stack([ak.to_numpy(record[name]).astype(float) for name in PARAMETER_NAMES], axis=1)
    features = observation_features(ak.to_numpy(record.spectrum), ak.to_numpy(record.xmax), binning=binning)
    columns = feature_columns(features, truth=truth, binning=binning)
    if "index" in record.fields:
        columns = ak.with_field(columns, ak.to_numpy(record.index).astype(np.int64), "index")
    return columns


@dataclass
class CosmicProcessingResult:
    """What :func:`process_cosmic` did: the mode, the files written and the number of entries."""

    mode: Literal["features", "histogram"]
    output_dir: Path
    entries: int
    files: list[Path] = field(default_factory=list)
    observations: dict[str, Observation] = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        what = "pseudo-experiments -> feature chunks" if self.mode == "features" else "showers -> histogram"
        return f"{what}: {self.entries} entries, wrote {len(self.files)} file(s) to {self.output_dir}"


def process_cosmic(
    inputs: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    run_config: RunConfig | None = None,
    dataset: str = "cosmic",
    mode: Mode = "auto",
    config: Any = None,
    binning: Binning | None = None,
) -> CosmicProcessingResult:
    """Run the cosmic processors over ROOT files (or a coffea fileset JSON) into ``output_dir``.

    ``mode="auto"`` looks at the first input file: a ``PseudoExperiments`` tree selects
    ``"features"``, a ``Showers`` tree ``"histogram"``.

    * ``"features"``: per chunk ``<dataset>__<file>__<start>-<stop>.parquet`` (and ``.root`` with
      ``run_config.formats``) with the columns of :class:`PseudoExperimentFeatureProcessor`,
      written atomically and resumably by :class:`hepflow.processing.ChunkWriter`;
      ``cutflow.json`` and ``run.json``.
    * ``"histogram"``: per dataset the lg E x Xmax histogram, written to ``observation.root``
      (TH2D ``showers``, or ``showers_<dataset>`` for several datasets; readable by
      :func:`hepflow.cosmic.generate.load_observation`), the binned counts and feature vector to
      ``observation.json`` and ``features.parquet`` (one row per dataset, columns ``dataset`` and
      the features).

    The binning is ``binning``, else that of ``config`` (a
    :class:`hepflow.cosmic.generate.CosmicConfig` or TOML file: ``[model] lg_e_min``), else the
    Auger binning above 10^18.7 eV. The flat cosmic ntuples are read with coffea's ``BaseSchema``.
    """
    cfg = run_config if run_config is not None else RunConfig()
    b = _binning_of(binning, config)
    fileset = build_fileset(inputs, dataset=dataset)
    chosen = _mode(fileset, mode)
    treename = PSEUDO_EXPERIMENT_TREE if chosen == "features" else SHOWER_TREE
    _retarget(fileset, treename)
    if not cfg.skip_bad_files:
        _check_trees(fileset)
    out = Path(output_dir)
    if chosen == "features":
        result = run_processor(
            PseudoExperimentFeatureProcessor(b), fileset, out, cfg, schema=BaseSchema, treename=treename
        )
        chunks = result["chunks"]
        rows = sum(info["rows"] for info in chunks.values())
        files = sorted(out / f for info in chunks.values() for f in info["files"])
        return CosmicProcessingResult(chosen, out, rows, files=files, skipped_files=result["skipped_files"])

    make_output_dir(out)
    with output_lock(out):
        clean_stale_temporaries(out)
        return _write_histograms(fileset, out, b, cfg, treename)


@dataclass
class CosmicDask:
    """The lazy outputs of :func:`cosmic_dask`: a dask task graph, nothing read yet.

    Attributes:
        mode: ``"features"`` or ``"histogram"``.
        processor: the processor that built the graph.
        outputs: ``{dataset: processor.process(events)}`` as ``apply_to_fileset`` returns it:
            dask-awkward columns (write them with ``dask_awkward.to_parquet``) and lazy cutflow
            sums, or ``hist.dask`` histograms and lazy counts.
        partitions: the number of partitions (steps) of each dataset.
    """

    mode: Literal["features", "histogram"]
    processor: ShowerHistogramProcessor | PseudoExperimentFeatureProcessor
    outputs: dict[str, Any]
    partitions: dict[str, int] = field(default_factory=dict)

    def compute(self, **options: Any) -> dict[str, Any]:
        """Compute :attr:`outputs` in one ``dask.compute`` (``options`` go to it, e.g.
        ``scheduler="sync"``) and merge the datasets as coffea's ``Runner`` does: the result
        equals the ``Runner``'s output on the same files (except the shower counts per file)."""
        import dask

        try:
            (computed,) = dask.compute(self.outputs, **options)
        except HepflowError:
            raise
        except Exception as err:
            explained = explain_failure(err)
            raise explained from (None if explained is err else err)
        return self.processor.postprocess(processor.accumulate(computed.values()) or {})


def cosmic_dask(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    step_size: int = 50_000,
    dataset: str = "cosmic",
    mode: Mode = "auto",
    config: Any = None,
    binning: Binning | None = None,
    scheduler: Any = None,
) -> CosmicDask:
    """The cosmic processors in coffea's dask mode over ROOT files (or a coffea fileset JSON).

    The inputs, ``mode``, ``config`` and ``binning`` are read as by :func:`process_cosmic`. Every
    local file is checked first: a file without the mode's tree (a fileset naming another tree)
    or without one of its branches is refused with one line naming the file and what it holds.
    Then coffea's ``preprocess`` splits each file into steps of ``step_size`` entries (run with
    ``scheduler``, default dask's) and ``apply_to_fileset`` builds the task graph with
    ``BaseSchema``; nothing else is read until it is computed.

    Example::

        lazy = cosmic_dask(["pe_1.root", "pe_2.root"], step_size=10_000)
        dask_awkward.to_parquet(lazy.outputs["cosmic"]["cosmic"]["columns"], "features/")
        out = lazy.compute()  # {"cosmic": {"columns", "cutflow"}}, as processor.Runner gives
    """
    from coffea.dataset_tools import DataGroupSpec, apply_to_fileset, preprocess

    if step_size < 1:
        raise ConfigError(f"step_size must be positive, got {step_size}")
    b = _binning_of(binning, config)
    fileset = build_fileset(inputs, dataset=dataset)
    chosen = _mode(fileset, mode)
    treename = PSEUDO_EXPERIMENT_TREE if chosen == "features" else SHOWER_TREE
    _retarget(fileset, treename)
    _check_trees(fileset, branches=PSEUDO_EXPERIMENT_BRANCHES if chosen == "features" else SHOWER_BRANCHES)
    proc: ShowerHistogramProcessor | PseudoExperimentFeatureProcessor = (
        PseudoExperimentFeatureProcessor(b) if chosen == "features" else ShowerHistogramProcessor(b)
    )
    if chosen == "histogram":
        _lazy_histogram(b)  # dask-histogram is there
    try:
        steps, _ = preprocess(
            DataGroupSpec.model_validate(fileset),
            step_size=step_size,
            align_clusters=False,
            scheduler=scheduler,
        )
        outputs = apply_to_fileset(proc, steps, schemaclass=BaseSchema)
    except HepflowError:
        raise
    except Exception as err:
        explained = explain_failure(err)
        raise explained from (None if explained is err else err)
    partitions = {
        name: sum(len(f.steps or []) for f in spec.files.root.values()) for name, spec in steps.items()
    }
    return CosmicDask(chosen, proc, dict(outputs), partitions)


def _binning_of(binning: Binning | None, config: Any) -> Binning:
    """``binning``, else that of ``config``, else the Auger binning above 10^18.7 eV."""
    if binning is not None:
        return binning
    if config is not None:
        return load_config(config).model.binning()
    return Binning.auger()


def _write_histograms(
    fileset: dict[str, Any], out: Path, b: Binning, cfg: RunConfig, treename: str
) -> CosmicProcessingResult:
    target = out / "observation.root"
    if target.exists() and not cfg.overwrite:
        raise OutputError(f"{target} exists; pass --overwrite to replace it")
    result = execute(ShowerHistogramProcessor(b), fileset, cfg, schema=BaseSchema, treename=treename)
    histograms = result.get("by_dataset", {})
    showers = result.get("showers", {})
    observations = {name: histogram_observation(h, binning=b) for name, h in sorted(histograms.items())}
    import uproot

    with atomic_write(target, overwrite=True) as tmp, uproot.recreate(tmp) as fout:
        for name in observations:
            fout[HISTOGRAM_NAME if len(observations) == 1 else f"{HISTOGRAM_NAME}_{name}"] = histograms[name]
    names = list(observations)
    if names:
        features = observation_features(
            np.stack([o.spectrum for o in observations.values()]),
            np.stack([o.xmax for o in observations.values()]),
            binning=b,
        )
        table = ak.with_field(feature_columns(features, binning=b), names, "dataset")
        write_parquet(table, out / "features.parquet")
    write_json(
        out / "observation.json",
        {
            "feature_names": list(feature_names(b)),
            "spectrum_edges": b.spectrum_edges.tolist(),
            "xmax_energy_edges": b.xmax_energy_edges.tolist(),
            "datasets": {
                name: {
                    "n_spectrum": o.n_spectrum,
                    "n_xmax": o.n_xmax.tolist(),
                    "spectrum": o.spectrum.tolist(),
                }
                for name, o in observations.items()
            },
            "showers": showers,
            "excluded_showers": result.get("excluded_showers", {}),
        },
    )
    return CosmicProcessingResult(
        "histogram",
        out,
        int(sum(showers.values())),
        files=[target, out / "features.parquet", out / "observation.json"] if names else [target],
        observations=observations,
        skipped_files=_skipped(fileset, set(showers)),
    )


def _mode(fileset: dict[str, Any], mode: Mode) -> Literal["features", "histogram"]:
    if mode in ("features", "histogram"):
        return mode
    if mode != "auto":
        raise ConfigError(f"unknown mode {mode!r}; choose auto, features or histogram")
    import uproot

    first = next(f for spec in fileset.values() for f in spec["files"])
    try:
        with uproot.open(first) as f:
            keys = set(f.keys(cycle=False, recursive=False))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {first} as a ROOT file: {err}") from err
    if PSEUDO_EXPERIMENT_TREE in keys:
        return "features"
    if SHOWER_TREE in keys:
        return "histogram"
    raise InputError(
        f"{first} holds neither a {PSEUDO_EXPERIMENT_TREE} nor a {SHOWER_TREE} tree "
        f"(found: {', '.join(sorted(keys)) or 'nothing'})"
    )


def _retarget(fileset: dict[str, Any], treename: str) -> None:
    """Plain file lists get the tree name ``Events`` from build_fileset: use the cosmic tree instead."""
    for spec in fileset.values():
        spec["files"] = {f: (treename if t == "Events" else t) for f, t in spec["files"].items()}


def _check_trees(fileset: dict[str, Any], *, branches: Sequence[str] = ()) -> None:
    """Fail before processing when a local file lacks its tree (or one of ``branches``), naming
    the file and what it holds."""
    import uproot

    for spec in fileset.values():
        for f, tree in spec["files"].items():
            if "://" in f:
                continue
            try:
                with uproot.open(f) as fin:
                    keys = fin.keys(cycle=False, recursive=False)
                    found = set(fin[tree].keys(recursive=False)) if tree in keys else set()
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read {f} as a ROOT file: {err}") from err
            if tree not in keys:
                raise InputError(f"{f} has no {tree} tree (found: {', '.join(sorted(keys)) or 'nothing'})")
            if missing := [b for b in branches if b not in found]:
                raise InputError(
                    f"{f}: the {tree} tree has no branch {', '.join(missing)} "
                    f"(found: {', '.join(sorted(found)) or 'nothing'})"
                )


def _skipped(fileset: dict[str, Any], done: set[str]) -> list[str]:
    return [f for spec in fileset.values() for f in spec["files"] if f not in done]
