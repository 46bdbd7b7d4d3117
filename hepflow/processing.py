"""Run hepflow's column processors: in your own coffea workflow, or chunk by chunk to files.

A physics processor (:class:`ColumnProcessor`: ``hepflow.neutrino.processor``,
``hepflow.cosmic.processor``, ...) selects events and builds columns for one chunk
(:meth:`ColumnProcessor.columns`: a flat awkward record array, the cutflow and, with generator
weights, the weighted cutflow). Its ``process`` returns them as coffea accumulators per dataset,
so it runs in any :class:`coffea.processor.Runner` with any executor and chunk size.

:func:`run_processor` (``hepflow process``) wraps it in :class:`ChunkWriter` instead, which does
the I/O: each chunk's columns go to ``<dataset>__<file>-<hash>__<start>-<stop>.parquet`` (and
``.root`` when asked), written atomically, then a ``.json`` sidecar with the chunk's cutflows and
provenance that marks the chunk complete. A rerun with the same provenance skips complete chunks
and re-reads their cutflows, so a killed run can be restarted without duplicated or missing rows;
a directory holding the chunks of another run (another processor setting, model, chunking,
dataset or input file) is refused unless ``overwrite`` (:mod:`hepflow.outputs.records`). One run
at a time writes into a directory (:func:`hepflow.outputs.lock.output_lock`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import awkward as ak
import hist
import numpy as np
from coffea import processor as coffea_processor

from hepflow.errors import ConfigError, HepflowError, InputError, OutputError
from hepflow.outputs.atomic import clean_stale_temporaries, write_json
from hepflow.outputs.chunks import chunk_id_from_metadata
from hepflow.outputs.columnar import read_chunks, write_parquet, write_root
from hepflow.outputs.lock import output_lock
from hepflow.outputs.provenance import describe, differences, file_identity, fingerprint
from hepflow.outputs.records import (
    CUTFLOW_FILE,
    RUN_FILE,
    check_directory,
    recorded_chunks,
    remove_replaced,
)

if TYPE_CHECKING:
    from hepflow.distributed import HTCondorConfig

log = logging.getLogger(__name__)

Executor = Literal["iterative", "futures", "dask"]
OutputFormat = Literal["parquet", "root"]


def new_cutflow(*, weighted: bool = False) -> hist.Hist:
    """An empty cutflow histogram: a growing string category ``step``; event counts, or with
    ``weighted`` the sum of the event weights and of their squares (``hist.storage.Weight``)."""
    axis = hist.axis.StrCategory([], growth=True, name="step", label="selection step")
    return hist.Hist(axis, storage=hist.storage.Weight()) if weighted else hist.Hist(axis)


class Cutflow:
    """The events passing each selection step: their number, and the sum of their weights and of
    the squared weights (generator weights: normalisation and its statistical uncertainty).

    On eager arrays the steps fill the histograms :attr:`counts` and :attr:`weighted`. On
    dask-awkward arrays (coffea's dask mode) nothing is computed: each step becomes the lazy
    scalars ``{"events", "sumw", "sumw2"}`` in :attr:`lazy` (computed with the columns in one
    ``dask.compute``; :func:`concatenate_columns` turns them into the same histograms).

    Example:
        >>> cut = Cutflow()
        >>> cut.add("all", np.array([1.0, -1.0, 2.0]))
        >>> cut.add("selected", np.array([2.0]))
        >>> cutflow_to_dict(cut.counts)
        {'all': 3, 'selected': 1}
        >>> weighted_cutflow_to_dict(cut.weighted)["all"]
        {'sumw': 2.0, 'sumw2': 6.0}
    """

    def __init__(self, start: ChunkColumns | None = None, *, weighted: bool = True) -> None:
        """An empty cutflow, or one that continues the cutflows of ``start``; without
        ``weighted`` (inputs that carry no event weights) only the counts are kept."""
        self.counts = new_cutflow()
        self.weighted: hist.Hist | None = new_cutflow(weighted=True) if weighted else None
        self.lazy: LazyCutflow = {}
        if start is not None and isinstance(start.cutflow, hist.Hist):
            self.counts = start.cutflow.copy()
            self.weighted = None if start.cutflow_weighted is None else start.cutflow_weighted.copy()
        elif start is not None:
            self.lazy = dict(start.cutflow)

    def add(self, step: str, weights: Any) -> None:
        """Record ``step`` passed by the events with these ``weights`` (one per event; without
        ``weighted`` any one-dimensional array with one entry per event)."""
        if is_dask(weights):
            if self.weighted is None:
                self.lazy[step] = {"events": ak.num(weights, axis=0)}
                return
            w = ak.values_astype(weights, np.float64)
            self.lazy[step] = {"events": ak.num(w, axis=0), "sumw": ak.sum(w), "sumw2": ak.sum(w * w)}
            return
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        self.counts.fill(step=[step], weight=[w.size])
        if self.weighted is not None:
            self.weighted.fill(step=np.full(max(w.size, 1), step), weight=w if w.size else [0.0])

    def chunk(self, columns: Any) -> ChunkColumns:
        """The chunk's result: ``columns`` (made :func:`plain`) with these cutflows."""
        if is_dask(columns):
            return ChunkColumns(plain(columns), self.lazy, None)
        return ChunkColumns(plain(columns), self.counts, self.weighted)


def is_dask(array: Any) -> bool:
    """Whether ``array`` is a dask collection (coffea's dask mode: dask-awkward arrays)."""
    from dask.base import is_dask_collection

    return is_dask_collection(array)


def weighted_cutflow_to_dict(cutflow: hist.Hist) -> dict[str, dict[str, float]]:
    """Ordered ``{step: {"sumw", "sumw2"}}`` of a weighted cutflow histogram."""
    axis = cutflow.axes["step"]
    view = cutflow.view()
    return {
        str(axis.value(i)): {"sumw": float(view.value[i]), "sumw2": float(view.variance[i])}
        for i in range(len(axis))
    }


def weighted_cutflow_from_dict(sums: Mapping[str, Mapping[str, float]]) -> hist.Hist:
    """Inverse of :func:`weighted_cutflow_to_dict`."""
    h = new_cutflow(weighted=True)
    for step, s in sums.items():
        h.fill(step=[step], weight=[0.0])
        h[step] = (s["sumw"], s["sumw2"])
    return h


def event_weights(events: Any) -> ak.Array:
    """The generator weight of every event (``genWeight``), or ones for data or when absent: a
    float64 awkward array (lazy, dask-awkward, in coffea's dask mode)."""
    if "genWeight" in events.fields:
        return ak.values_astype(events.genWeight, np.float64)
    return ak.ones_like(events.event, dtype=np.float64)


@dataclass
class ChunkColumns:
    """What a column processor builds from one chunk of events.

    Attributes:
        columns: one row per selected (or, for the unfolding, per input) event; plain awkward
            arrays without behaviours (dask-awkward arrays in coffea's dask mode).
        cutflow: events per selection step; in dask mode the lazy :attr:`Cutflow.lazy` sums.
        cutflow_weighted: sum of weights and of squared weights per step (None without weights,
            and in dask mode, where ``cutflow`` holds them).
    """

    columns: Any
    cutflow: hist.Hist | LazyCutflow
    cutflow_weighted: hist.Hist | None = None


#: Per cutflow step, the lazy (dask-awkward) scalars ``events``, ``sumw`` and ``sumw2``.
LazyCutflow = dict[str, dict[str, Any]]


def plain(columns: Any) -> Any:
    """A packed copy of ``columns`` without parameters or behaviours: it pickles (futures and dask
    executors) and merges with the columns of other chunks. Dask-awkward columns stay lazy (the
    parameters are dropped; packing happens when they are computed or written)."""
    if is_dask(columns):
        return ak.without_parameters(columns)
    return ak.Array(ak.to_packed(ak.without_parameters(columns)).layout)


class ColumnProcessor(coffea_processor.ProcessorABC):
    """Base of hepflow's coffea processors: stateless, columns in, accumulators out.

    Subclasses implement :meth:`columns` (select and build one chunk's columns, made
    :func:`plain` there, so that they pickle and merge). :meth:`process`
    returns them as coffea accumulators per dataset, ``{dataset: {"columns": [chunk],
    "cutflow": Hist, "cutflow_weighted": Hist}}``, which every executor merges and pickles;
    :meth:`postprocess` concatenates each dataset's columns in file and entry order, so a run with
    many small chunks gives the same rows as one chunk. ``hepflow process`` calls :meth:`columns`
    through :class:`ChunkWriter` and writes each chunk instead.

    In coffea's dask mode (events from ``NanoEventsFactory.from_root(..., mode="dask")`` or
    ``coffea.dataset_tools.apply_to_fileset``) the same :meth:`columns` builds a lazy task graph:
    :meth:`process` returns ``{dataset: {"columns": dask-awkward array, "cutflow": {step:
    {"events", "sumw", "sumw2"}}}}`` (lazy scalars); compute it with ``dask.compute`` (or write the
    columns with ``dask_awkward.to_parquet``), and :meth:`postprocess` of the computed output gives
    what the ``Runner`` gives (docs/dask.md).
    """

    def columns(self, events: Any) -> ChunkColumns:  # pragma: no cover - abstract
        raise NotImplementedError

    def process(self, events: Any) -> dict[str, Any]:
        meta = getattr(events, "metadata", None) or {}
        chunk = self.columns(events)
        dataset = str(meta.get("dataset", "dataset"))
        if is_dask(chunk.columns):  # one lazy result per dataset: no chunks to order
            return {dataset: {"columns": chunk.columns, "cutflow": chunk.cutflow}}
        key = (str(meta.get("filename", "")), int(meta.get("entrystart") or 0))
        out: dict[str, Any] = {
            "columns": [(key, chunk.columns)],  # lists add up (coffea's list_accumulator does not)
            "cutflow": chunk.cutflow,
        }
        if chunk.cutflow_weighted is not None:
            out["cutflow_weighted"] = chunk.cutflow_weighted
        return {dataset: out}

    def postprocess(self, accumulator: Any) -> Any:
        return concatenate_columns(accumulator)


def per_partition(
    function: Callable[..., ak.Array],
    *arrays: Any,
    label: str,
    meta: Callable[..., ak.Array] | None = None,
) -> Any:
    """``function(*arrays)``: directly for eager arrays, per partition for dask-awkward arrays.

    For numpy code that cannot build a task graph (a flow sampling its posterior, a sort and
    match of event ids): in coffea's dask mode it runs on each partition's materialised arrays
    (``dask_awkward.map_partitions``, all ``arrays`` partitioned alike, e.g. derived from the same
    events). The output type is found by calling ``meta`` (default ``function``) on empty
    stand-ins of the inputs (so ``function`` must handle zero rows); making them marks every input
    column as needed, so dask reads them. ``function`` returns one awkward array.
    """
    if not any(is_dask(a) for a in arrays):
        return function(*arrays)
    import dask_awkward as dak

    describe = function if meta is None else meta

    def typetracer_output(*inputs: Any) -> ak.Array:
        empty = [ak.typetracer.length_one_if_typetracer(a)[:0] for a in inputs]
        out = describe(*empty)
        return ak.Array(out.layout.to_typetracer(forget_length=True), behavior=out.behavior)

    def call(*parts: Any) -> ak.Array:
        if any(ak.backend(p) == "typetracer" for p in parts):  # dask's column optimisation
            return typetracer_output(*parts)
        return function(*parts)

    metas = [a._meta if is_dask(a) else a for a in arrays]
    return dak.map_partitions(call, *arrays, label=label, meta=typetracer_output(*metas))


def concatenate_columns(accumulator: Mapping[str, Any]) -> dict[str, Any]:
    """Per dataset: the chunks' columns concatenated in (file, entry) order, and, with weights,
    ``sumw`` / ``sumw2``: the sum of the generator weights of all processed events and of their
    squares (the normalisation of the dataset).

    The computed output of coffea's dask mode (``{"columns": array, "cutflow": {step: {"events",
    "sumw", "sumw2"}}}`` per dataset) becomes the same: its cutflow sums become the ``cutflow`` and
    ``cutflow_weighted`` histograms.
    """
    out: dict[str, Any] = {}
    for dataset, merged in accumulator.items():
        acc = dict(merged)
        if isinstance(acc.get("columns"), list):
            parts = [a for _, a in sorted(acc["columns"], key=lambda part: part[0])]
            acc["columns"] = (
                ak.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else ak.Array([]))
            )
        if isinstance(acc.get("cutflow"), Mapping):  # dask mode: computed sums per step
            sums = acc["cutflow"]
            acc["cutflow"] = cutflow_from_dict({step: int(s["events"]) for step, s in sums.items()})
            if all("sumw" in s for s in sums.values()):  # not for a Cutflow(weighted=False)
                acc["cutflow_weighted"] = weighted_cutflow_from_dict(sums)
        weighted = acc.get("cutflow_weighted")
        if weighted is not None and "all" in weighted.axes["step"]:
            acc["sumw"] = float(weighted["all"].value)
            acc["sumw2"] = float(weighted["all"].variance)
        out[dataset] = acc
    return out


def cutflow_to_dict(cutflow: hist.Hist) -> dict[str, int]:
    """Ordered ``{step: events}`` of a cutflow histogram."""
    axis = cutflow.axes["step"]
    values = cutflow.values()
    return {str(axis.value(i)): round(values[i]) for i in range(len(axis))}


def cutflow_from_dict(counts: Mapping[str, int]) -> hist.Hist:
    """Inverse of :func:`cutflow_to_dict`."""
    h = new_cutflow()
    for step, n in counts.items():
        h.fill(step=[step], weight=[n])
    return h


def source_file(events: Any) -> str:
    """The file a chunk of coffea events was read from (for error messages); in coffea's dask
    mode, where the events of a dataset span its files, ``"dataset <name>"``; else ``"input"``.

    Example:
        >>> class Chunk:
        ...     metadata = {"filename": "nano.root", "entrystart": 0}
        >>> class Lazy:
        ...     metadata = {"dataset": "ttbar"}
        >>> source_file(Chunk()), source_file(Lazy()), source_file(object())
        ('nano.root', 'dataset ttbar', 'input')
    """
    meta = getattr(events, "metadata", None) or {}
    if "filename" in meta:
        return str(meta["filename"])
    if "dataset" in meta:
        return f"dataset {meta['dataset']}"
    return "input"


#: Least wall time in seconds between two garbage collections of :class:`ChunkWriter` (see
#: :func:`collect_previous_chunks`).
GC_INTERVAL_S = 1.0
_last_gc = {"t": time.monotonic()}


def collect_previous_chunks(interval: float = GC_INTERVAL_S) -> bool:
    """Run a full garbage collection if ``interval`` seconds passed since the last one.

    coffea builds each chunk's events from a freshly opened file whose objects (the uproot file
    and tree models, the lazily loaded arrays and their buffers) form reference cycles. Python's
    generational collector frees those only at a full collection, which in a process with the
    10^5 to 10^6 long-lived objects of coffea and torch comes only every few tens of chunks: without
    it resident memory crept up by ~230 MB over 10^6 events at 50 000 events per chunk, with it
    it stays flat (``benchmarks/memory_stream.py``). A full collection costs 0.05-0.2 s, hence the
    interval: a few percent of the run time at most, and at most ``interval`` seconds of chunks
    pending. Returns whether it collected.
    """
    now = time.monotonic()
    if now - _last_gc["t"] < interval:
        return False
    gc.collect()
    _last_gc["t"] = time.monotonic()
    return True


class ChunkWriter(coffea_processor.ProcessorABC):
    """Wrap a column-building processor; write each chunk's columns atomically.

    Args:
        inner: the physics processor, a :class:`ColumnProcessor` (its ``columns(events)`` is
            called for each chunk).
        output_dir: where chunk files go.
        formats: ``("parquet",)``, ``("root",)`` or both.
        overwrite: redo chunks whose outputs already exist.
        provenance: what produces the chunks (:func:`run_processor` passes ``producer``,
            ``chunking`` and ``hepflow_version``); each marker records it with the chunk's input
            file (:func:`hepflow.outputs.provenance.file_identity`). A complete chunk is skipped
            only when its marker records the same; otherwise
            :class:`~hepflow.errors.OutputError` (unless ``overwrite``).
    """

    def __init__(
        self,
        inner: Any,
        output_dir: str | os.PathLike[str],
        *,
        formats: Sequence[OutputFormat] = ("parquet",),
        overwrite: bool = False,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.inner = inner
        self.output_dir = Path(output_dir)
        self.formats = tuple(formats)
        self.overwrite = overwrite
        self.provenance = dict(provenance) if provenance is not None else run_provenance(inner)

    def process(self, events: Any) -> dict[str, Any]:
        collect_previous_chunks()  # bounded memory over many chunks (reference cycles of files)
        cid = chunk_id_from_metadata(events.metadata)
        marker = self.output_dir / f"{cid.stem}.json"
        record = {
            **self.provenance,
            "input": file_identity(cid.filename, uuid=events.metadata.get("fileuuid")),
        }
        if marker.exists() and not self.overwrite:
            info = json.loads(marker.read_text())
            if why := differences(info.get("provenance"), record):
                raise OutputError(
                    f"{marker} was made with other settings ({'; '.join(why)}); pass --overwrite to "
                    "replace it or choose another --output"
                )
            wanted = {f"{cid.stem}.{fmt}" for fmt in self.formats}
            if missing := sorted(wanted - set(info.get("files", []))):
                raise OutputError(
                    f"{marker} was written as {', '.join(info.get('files', [])) or 'nothing'}, this run "
                    f"also asks for {', '.join(missing)}; pass --overwrite to rewrite the chunks in "
                    "every format or choose another --output"
                )
            weighted = info.get("cutflow_weighted")
            return _chunk_summary(
                cid.dataset,
                cid.stem,
                info,
                cutflow_from_dict(info["cutflow"]),
                None if weighted is None else weighted_cutflow_from_dict(weighted),
            )
        result = self.inner.columns(events)
        columns = result.columns
        files = []
        for fmt in self.formats:
            path = self.output_dir / f"{cid.stem}.{fmt}"
            (write_parquet if fmt == "parquet" else write_root)(columns, path)
            files.append(path.name)
        info = {
            "dataset": cid.dataset,
            "filename": cid.filename,
            "entrystart": cid.entrystart,
            "entrystop": cid.entrystop,
            "rows": len(columns),
            "files": files,
            "cutflow": cutflow_to_dict(result.cutflow),
            "provenance": record,
        }
        if result.cutflow_weighted is not None:
            info["cutflow_weighted"] = weighted_cutflow_to_dict(result.cutflow_weighted)
        write_json(marker, info)  # last: marks the chunk complete
        return _chunk_summary(cid.dataset, cid.stem, info, result.cutflow, result.cutflow_weighted)

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


def run_provenance(
    processor_instance: Any, *, chunksize: int | None = None, maxchunks: int | None = None
) -> dict[str, Any]:
    """What a processing run records about itself in every chunk marker and in ``run.json``:
    ``producer`` (:func:`hepflow.outputs.provenance.describe` of the processor: its class and
    settings; an inference processor's model checksum, samples and seed), ``producer_sha256``,
    ``chunking`` and ``hepflow_version``."""
    from hepflow import __version__

    producer = describe(processor_instance)
    return {
        "producer": producer,
        "producer_sha256": fingerprint(producer),
        "chunking": {"chunksize": chunksize, "maxchunks": maxchunks},
        "hepflow_version": __version__,
    }


def _chunk_summary(
    dataset: str, stem: str, info: dict[str, Any], cutflow: hist.Hist, weighted: hist.Hist | None
) -> dict[str, Any]:
    # run.json lists the chunks with their input; the run-wide provenance is recorded once there
    record = {**info, "provenance": {"input": (info.get("provenance") or {}).get("input")}}
    out: dict[str, Any] = {
        "cutflow": cutflow,
        "cutflow_by_dataset": {dataset: cutflow.copy()},
        "chunks": {stem: record},
    }
    if weighted is not None:
        out["cutflow_weighted"] = weighted
        out["cutflow_weighted_by_dataset"] = {dataset: weighted.copy()}
    return out


@dataclass
class RunConfig:
    """How to run a processor: executor, chunking, outputs."""

    executor: Executor = "iterative"
    chunksize: int = 50_000
    workers: int = 1
    maxchunks: int | None = None
    skip_bad_files: bool = False
    overwrite: bool = False
    formats: tuple[OutputFormat, ...] = ("parquet",)
    scheduler: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    #: HTCondor workers through dask-jobqueue (executor "dask"): a TOML file or an
    #: :class:`hepflow.distributed.HTCondorConfig`; ``workers`` is then unused
    cluster: str | os.PathLike[str] | HTCondorConfig | None = None

    def __post_init__(self) -> None:
        if self.executor not in ("iterative", "futures", "dask"):
            raise ConfigError(f"unknown executor {self.executor!r}; choose iterative, futures or dask")
        if self.chunksize < 1:
            raise ConfigError(f"chunksize must be positive, got {self.chunksize}")
        if self.workers < 1:
            raise ConfigError(f"workers must be positive, got {self.workers}")
        for fmt in self.formats:
            if fmt not in ("parquet", "root"):
                raise ConfigError(f"unknown output format {fmt!r}; choose parquet or root")
        if self.cluster is not None:
            name = self.cluster if isinstance(self.cluster, str | os.PathLike) else "(HTCondorConfig)"
            if self.executor != "dask":
                raise ConfigError(
                    f"--cluster {name} runs Dask workers as batch jobs: it needs --executor dask, "
                    f"not {self.executor!r}"
                )
            if self.scheduler:
                raise ConfigError(
                    f"--cluster {name} and --scheduler {self.scheduler}: give one of them "
                    "(--cluster starts its own scheduler)"
                )


def build_fileset(inputs: Sequence[str | os.PathLike[str]], *, dataset: str = "dataset") -> dict[str, Any]:
    """A coffea fileset from a list of ROOT files, or from one fileset JSON.

    A single ``.json`` input is read as a coffea fileset (``{dataset: {"files": {path: tree}}}``
    or ``{dataset: [paths]}``); otherwise every input is a ROOT file of ``dataset``. Local files
    are checked up front so that a typo fails before any processing starts.
    """
    if len(inputs) == 1 and str(inputs[0]).endswith(".json"):
        path = Path(inputs[0])
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise InputError(f"fileset {path} does not exist") from err
        except json.JSONDecodeError as err:
            raise InputError(f"fileset {path} is not valid JSON: {err}") from err
        if not isinstance(raw, dict):
            raise InputError(
                f'fileset {path}: expected an object {{dataset: {{"files": {{path: tree}}}}}} or '
                f"{{dataset: [paths]}}, got a JSON {type(raw).__name__}"
            )
        fileset = {}
        for name, spec in raw.items():
            files = spec.get("files", spec) if isinstance(spec, dict) else spec
            if isinstance(files, list) and all(isinstance(f, str) for f in files):
                files = dict.fromkeys(files, "Events")
            if not isinstance(files, dict) or not all(isinstance(t, str) for t in files.values()):
                raise InputError(
                    f"fileset {path}: dataset {name!r} has no file list (paths, or {{path: tree name}})"
                )
            fileset[name] = {"files": {str(_resolve(f, path.parent)): t for f, t in files.items()}}
    else:
        fileset = {dataset: {"files": {str(Path(f)): "Events" for f in inputs}}}
    for spec in fileset.values():
        for f in spec["files"]:
            if "://" in f:
                continue
            if not Path(f).is_file():
                raise InputError(f"input file {f} does not exist")
            if Path(f).stat().st_size == 0:
                raise InputError(f"input file {f} is empty (0 bytes), not a ROOT file")
    return fileset


def _resolve(f: str, base: Path) -> str | Path:
    return f if "://" in f or Path(f).is_absolute() else base / f


def execute(
    processor_instance: Any,
    fileset: dict[str, Any],
    config: RunConfig,
    *,
    schema: Any = None,
    treename: str = "Events",
) -> dict[str, Any]:
    r"""Run any coffea processor through :class:`coffea.processor.Runner` with ``config``.

    ``schema`` defaults to :class:`~coffea.nanoevents.NanoAODSchema`. The tree names of a fileset
    (``{dataset: {"files": {path: tree}}}``) are honoured; ``treename`` names the tree of file
    lists. Failures inside coffea or uproot come out as one-line
    :class:`~hepflow.errors.HepflowError`\ s naming the file.
    """
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    executor = _make_executor(config)
    # dask retries its tasks itself (coffea passes retries=0 there); a BaseException must not
    # reach its workers
    runner_class = processor.Runner if config.executor == "dask" else _FailFastRunner
    runner = runner_class(
        executor=executor,
        pre_executor=processor.IterativeExecutor(status=config.progress),
        schema=schema or NanoAODSchema,
        chunksize=config.chunksize,
        maxchunks=config.maxchunks,
        skipbadfiles=config.skip_bad_files,
    )
    # a fileset that names the tree of every file is read with those names (coffea uses them only
    # without a default tree name); ``treename`` is for file lists
    named = all(isinstance(s, Mapping) and isinstance(s.get("files"), Mapping) for s in fileset.values())
    try:
        with _quiet_coffea(not config.progress):
            return dict(runner(fileset, processor_instance, treename=None if named else treename))
    except HepflowError:
        raise
    except (Exception, _ChunkFailed) as err:
        failure = err.error if isinstance(err, _ChunkFailed) else err
        explained = explain_failure(failure)
        raise explained from (None if explained is failure else failure)
    finally:
        if config.executor == "dask":
            _close_dask(executor)


class _ChunkFailed(BaseException):
    """The final error of a chunk, carried out of coffea's executors to :func:`execute`.

    A ``BaseException``, because coffea retries, and its futures executor prints with a remote
    traceback before re-raising, only instances of ``Exception``.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _local_errors_first(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; a :class:`HepflowError` (a local, deterministic refusal of the input or the
    config, raised by a processor) ends the chunk at once instead of being retried."""
    try:
        return func(*args, **kwargs)
    except Exception as err:
        local = _hepflow_error(err)
        if local is None:
            raise
        raise _ChunkFailed(local) from None


def _retries_then_fail(retries: int, skipbadfiles: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
    """coffea's :meth:`~coffea.processor.Runner.automatic_retries` (retry a failing chunk, for
    files on flaky storage), except for a :class:`HepflowError`; the final error leaves as a
    :class:`_ChunkFailed`, which the futures executor neither retries nor prints."""
    try:
        return coffea_processor.Runner.automatic_retries(
            retries, skipbadfiles, partial(_local_errors_first, func), *args, **kwargs
        )
    except Exception as err:
        raise _ChunkFailed(err) from None


class _FailFastRunner(coffea_processor.Runner):
    """A :class:`coffea.processor.Runner` that does not retry hepflow's own errors and lets no
    executor print a traceback before :func:`execute` reports the failure on one line."""

    automatic_retries = staticmethod(_retries_then_fail)


@contextmanager
def _quiet_coffea(quiet: bool) -> Iterator[None]:
    """Silence coffea's rich progress bars (its iterative executor draws them even with
    ``status=False``) while ``quiet``."""
    from coffea import util

    console = getattr(util, "coffea_console", None)
    if not quiet or console is None:
        yield
        return
    old = console.quiet
    console.quiet = True
    try:
        yield
    finally:
        console.quiet = old


def run_processor(
    processor_instance: Any,
    fileset: dict[str, Any],
    output_dir: str | os.PathLike[str],
    config: RunConfig,
    *,
    schema: Any = None,
    treename: str = "Events",
) -> dict[str, Any]:
    """Run ``processor_instance`` over ``fileset`` with ``config``; write chunks to ``output_dir``.

    Returns the accumulated output: ``cutflow`` (hist, all datasets), ``cutflow_by_dataset``,
    with event weights ``cutflow_weighted`` and ``cutflow_weighted_by_dataset`` (sum of weights
    and of squared weights per step; the step ``all`` gives each dataset's normalisation),
    ``chunks`` (per-chunk info) and ``skipped_files``. ``cutflow.json`` (``{"total": ...,
    "by_dataset": ..., "weighted": {"total": ..., "by_dataset": ...}}``) and ``run.json`` are
    written atomically into ``output_dir``.

    Every local file is read once, under its resolved path (:func:`unique_files`). The run holds
    the directory's lock (a second run into it is refused while this one is alive), removes the
    temporaries of dead runs, and refuses a directory that holds the chunks or ``run.json`` of
    another run (:func:`hepflow.outputs.records.check_directory`: another processor setting or
    model, chunking, hepflow version, dataset or input file) unless ``config.overwrite``, which
    redoes every chunk and then removes the chunk files of earlier runs that this run did not
    rewrite, and only those. ``run.json`` records the run's provenance and its ``fileset``
    (resolved path, size and tree of every input); readers use the chunks it lists.
    """
    fileset = unique_files(fileset, treename=treename)
    inputs = {
        name: {f: {**file_identity(f), "tree": tree} for f, tree in spec["files"].items()}
        for name, spec in fileset.items()
    }
    provenance = run_provenance(processor_instance, chunksize=config.chunksize, maxchunks=config.maxchunks)
    out = Path(output_dir)
    make_output_dir(out)
    with output_lock(out):
        clean_stale_temporaries(out)
        previous = check_directory(out, provenance, inputs, overwrite=config.overwrite)
        writer = ChunkWriter(
            processor_instance, out, formats=config.formats, overwrite=config.overwrite, provenance=provenance
        )
        result = execute(writer, fileset, config, schema=schema, treename=treename)
        result.setdefault("cutflow", new_cutflow())
        result.setdefault("cutflow_by_dataset", {})
        result.setdefault("chunks", {})
        if config.overwrite:
            remove_replaced(out, previous, result["chunks"])
        done = {info["filename"] for info in result["chunks"].values()}
        requested = [f for spec in fileset.values() for f in spec["files"]]
        skipped = [f for f in requested if f not in done]
        cutflows = {
            "total": cutflow_to_dict(result["cutflow"]),
            "by_dataset": {name: cutflow_to_dict(h) for name, h in result["cutflow_by_dataset"].items()},
        }
        summary = {
            "cutflow": cutflows,
            "chunks": result["chunks"],
            "skipped_files": skipped,
            "rows": sum(info["rows"] for info in result["chunks"].values()),
            "provenance": {**provenance, "fileset": inputs},
        }
        if "cutflow_weighted" in result:
            cutflows["weighted"] = {
                "total": weighted_cutflow_to_dict(result["cutflow_weighted"]),
                "by_dataset": {
                    name: weighted_cutflow_to_dict(h)
                    for name, h in result["cutflow_weighted_by_dataset"].items()
                },
            }
        write_json(out / CUTFLOW_FILE, cutflows)
        write_json(out / RUN_FILE, summary)
    result["skipped_files"] = skipped
    return result


def make_output_dir(directory: Path) -> None:
    """Create the output directory ``directory`` (and its parents); a one-line
    :class:`~hepflow.errors.OutputError` when it is a file, lies under a file or cannot be made."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise OutputError(f"output {directory} is a file, or lies under one; choose a directory") from err
    except OSError as err:
        raise OutputError(f"cannot create the output directory {directory}: {err.strerror}") from err


def unique_files(fileset: Mapping[str, Any], *, treename: str = "Events") -> dict[str, Any]:
    """``fileset`` with every local file under its resolved path, listed once.

    A file listed several times in a dataset (a relative and an absolute path, a symlink, the
    same name twice) is read once, with a warning; the same file in two datasets, or with two
    tree names, is refused (:class:`~hepflow.errors.InputError`): its events would be counted
    twice. Remote files (``root://...``) are kept as they are. File lists get ``treename``.
    """
    out: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for name, spec in fileset.items():
        base = dict(spec) if isinstance(spec, Mapping) and "files" in spec else {}
        files = base.get("files", spec)
        if not isinstance(files, Mapping):
            files = dict.fromkeys(files, treename)
        resolved: dict[str, str] = {}
        for f, tree in files.items():
            key = str(f) if "://" in str(f) else str(Path(f).resolve())
            if key in resolved:
                if resolved[key] != (tree or treename):
                    raise InputError(
                        f"{f} is listed twice in dataset {name}, with trees {resolved[key]} and {tree}"
                    )
                log.warning("%s is listed more than once in dataset %s (also as %s): read once", key, name, f)
                continue
            if owner.get(key, name) != name:
                raise InputError(
                    f"{f} is listed in datasets {owner[key]} and {name}: its events would be counted twice"
                )
            owner[key] = name
            resolved[key] = tree or treename
        out[name] = {**base, "files": resolved}
    return out


def merge_chunks(
    directory: str | os.PathLike[str], target: str | os.PathLike[str], *, overwrite: bool = False
) -> int:
    """Concatenate the chunks of a :func:`run_processor` output into one file (optional).

    The chunks are those that the directory's ``run.json`` lists, in the order of their names
    (dataset, file, entry range); a directory whose records and files disagree is refused
    (:func:`hepflow.outputs.records.recorded_chunks`). ``target`` ends in ``.parquet`` or ``.root``
    (TTree ``Events``) and must lie outside ``directory``, so that a later read of the chunk
    directory does not count rows twice; it is written atomically. Returns the number of rows.
    """
    src, out = Path(directory), Path(target)
    if out.suffix not in (".parquet", ".root"):
        raise ConfigError(f"merge target {out} must end in .parquet or .root")
    if out.resolve().parent == src.resolve():
        raise ConfigError(f"merge target {out} lies in the chunk directory {src}; write it elsewhere")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    chunks = recorded_chunks(src)
    if not chunks:
        raise InputError(f"no complete chunks in {src}: no {RUN_FILE} of a finished run lists any")
    merged = read_chunks(chunks)
    (write_parquet if out.suffix == ".parquet" else write_root)(merged, out)
    return len(merged)


def _make_executor(config: RunConfig) -> Any:
    from coffea import processor

    if config.executor == "iterative":
        return processor.IterativeExecutor(status=config.progress)
    if config.executor == "futures":
        return processor.FuturesExecutor(status=config.progress, workers=config.workers)
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise ConfigError(
            "--executor dask needs dask.distributed: pip install 'hepflow[distributed]'"
        ) from err
    if config.cluster is not None:
        from hepflow.distributed import connect

        client = connect(config.cluster, progress=config.progress)
    elif config.scheduler:
        client = Client(config.scheduler)
    else:
        # dashboard on a free port: a busy 8787 (another cluster, a notebook) must not fail the run
        cluster = LocalCluster(
            n_workers=config.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        client = Client(cluster)
    return processor.DaskExecutor(client=client, status=config.progress)


def _close_dask(executor: Any) -> None:
    client = executor.client
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def explain_failure(err: BaseException) -> HepflowError:
    """Turn a failure inside coffea/uproot into a one-line error that names the file.

    Coffea wraps exceptions raised while processing a chunk; a :class:`HepflowError` found in the
    exception chain is returned as it is, anything else becomes an :class:`InputError` naming the
    file and the original error's first line.
    """
    local = _hepflow_error(err)
    if local is not None:
        return local
    chain = _chain(err)
    text = "\n".join(str(exc) for exc in chain)
    match = re.search(r"filename='([^']+)'", text) or re.search(r"([^\s'\"]+\.root)", text)  # without quotes
    where = f" while reading {match.group(1)}" if match else ""
    inner = re.search(r"The error was: (.*)", text)
    root = chain[-1]
    detail = (
        inner.group(1)
        if inner
        else f"{type(root).__name__}: {str(root).strip().splitlines()[0] if str(root).strip() else ''}"
    )
    return InputError(f"processing failed{where}: {detail}")


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes and contexts, outermost first."""
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _hepflow_error(err: BaseException) -> HepflowError | None:
    """The first :class:`HepflowError` in the exception chain of ``err`` (coffea wraps them)."""
    return next((exc for exc in _chain(err) if isinstance(exc, HepflowError)), None)
