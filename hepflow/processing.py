"""Run a columnar coffea processor over files with per-chunk, atomic, resumable outputs.

A physics processor (in :mod:`processors`) selects events and builds columns; it returns a dict
with the event-level ``"columns"`` (a flat awkward record array) and a ``"cutflow"``
(:class:`hist.Hist` with one string-category axis ``step``). :class:`ChunkWriter` wraps it and
does the I/O: each chunk's columns go to ``<dataset>__<file>-<hash>__<start>-<stop>.parquet``
(and ``.root`` when asked), written atomically, then a ``.json`` sidecar with the chunk's cutflow
that marks the chunk complete. A rerun skips complete chunks and re-reads their cutflow, so a
killed run can be restarted without duplicated or missing rows.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import hist
from coffea import processor as coffea_processor

from hepflow.errors import ConfigError, HepflowError, InputError, OutputError
from hepflow.outputs.atomic import TMP_PREFIX, clean_stale_temporaries, write_json
from hepflow.outputs.chunks import chunk_id_from_metadata
from hepflow.outputs.columnar import write_parquet, write_root

if TYPE_CHECKING:
    from hepflow.distributed import HTCondorConfig

log = logging.getLogger(__name__)

Executor = Literal["iterative", "futures", "dask"]
OutputFormat = Literal["parquet", "root"]


def new_cutflow() -> hist.Hist:
    """An empty cutflow histogram: a growing string category ``step``, event counts."""
    return hist.Hist(hist.axis.StrCategory([], growth=True, name="step", label="selection step"))


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
    """The file a chunk of coffea events was read from (for error messages), or ``"input"``.

    Example:
        >>> class Chunk:
        ...     metadata = {"filename": "nano.root", "entrystart": 0}
        >>> source_file(Chunk()), source_file(object())
        ('nano.root', 'input')
    """
    return str(getattr(events, "metadata", {}).get("filename", "input"))


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
        inner: the physics processor; its ``process(events)`` returns ``{"columns", "cutflow"}``.
        output_dir: where chunk files go.
        formats: ``("parquet",)``, ``("root",)`` or both.
        overwrite: redo chunks whose outputs already exist.
    """

    def __init__(
        self,
        inner: Any,
        output_dir: str | os.PathLike[str],
        *,
        formats: Sequence[OutputFormat] = ("parquet",),
        overwrite: bool = False,
    ) -> None:
        self.inner = inner
        self.output_dir = Path(output_dir)
        self.formats = tuple(formats)
        self.overwrite = overwrite

    def process(self, events: Any) -> dict[str, Any]:
        collect_previous_chunks()  # bounded memory over many chunks (reference cycles of files)
        cid = chunk_id_from_metadata(events.metadata)
        marker = self.output_dir / f"{cid.stem}.json"
        if marker.exists() and not self.overwrite:
            info = json.loads(marker.read_text())
            cutflow = cutflow_from_dict(info["cutflow"])
            return {
                "cutflow": cutflow,
                "cutflow_by_dataset": {cid.dataset: cutflow},
                "chunks": {cid.stem: info},
            }
        result = self.inner.process(events)
        columns = result["columns"]
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
            "cutflow": cutflow_to_dict(result["cutflow"]),
        }
        write_json(marker, info)  # last: marks the chunk complete
        cutflow = result["cutflow"]
        return {
            "cutflow": cutflow,
            "cutflow_by_dataset": {cid.dataset: cutflow.copy()},
            "chunks": {cid.stem: info},
        }

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


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
        fileset = {}
        for name, spec in raw.items():
            files = spec.get("files", spec) if isinstance(spec, dict) else spec
            if isinstance(files, list):
                files = dict.fromkeys(files, "Events")
            if not isinstance(files, dict):
                raise InputError(f"fileset {path}: dataset {name!r} has no file list")
            fileset[name] = {"files": {str(_resolve(f, path.parent)): t for f, t in files.items()}}
    else:
        fileset = {dataset: {"files": {str(Path(f)): "Events" for f in inputs}}}
    for spec in fileset.values():
        for f in spec["files"]:
            if "://" not in f and not Path(f).is_file():
                raise InputError(f"input file {f} does not exist")
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

    ``schema`` defaults to :class:`~coffea.nanoevents.NanoAODSchema`. Failures inside coffea or
    uproot come out as one-line :class:`~hepflow.errors.HepflowError`\ s naming the file.
    """
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    executor = _make_executor(config)
    runner = processor.Runner(
        executor=executor,
        pre_executor=processor.IterativeExecutor(status=config.progress),
        schema=schema or NanoAODSchema,
        chunksize=config.chunksize,
        maxchunks=config.maxchunks,
        skipbadfiles=config.skip_bad_files,
    )
    try:
        with _quiet_coffea(not config.progress):
            return dict(runner(fileset, processor_instance, treename=treename))
    except HepflowError:
        raise
    except Exception as err:
        raise _explain(err) from err
    finally:
        if config.executor == "dask":
            _close_dask(executor)


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
    ``chunks`` (per-chunk info) and ``skipped_files``. ``cutflow.json`` (``{"total": ...,
    "by_dataset": ...}``) and ``run.json`` are written atomically into ``output_dir``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    writer = ChunkWriter(processor_instance, out, formats=config.formats, overwrite=config.overwrite)
    result = execute(writer, fileset, config, schema=schema, treename=treename)
    result.setdefault("cutflow", new_cutflow())
    result.setdefault("cutflow_by_dataset", {})
    result.setdefault("chunks", {})
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
    }
    write_json(out / "cutflow.json", cutflows)
    write_json(out / "run.json", summary)
    result["skipped_files"] = skipped
    return result


def merge_chunks(
    directory: str | os.PathLike[str], target: str | os.PathLike[str], *, overwrite: bool = False
) -> int:
    """Concatenate the complete chunks of a :func:`run_processor` output into one file (optional).

    Only chunks with their ``.json`` marker count (a chunk file without one is from a killed run
    and is redone on resume), in the order of their names (dataset, file, entry range).
    ``target`` ends in ``.parquet`` or ``.root`` (TTree ``Events``) and must lie outside
    ``directory``, so that a later read of the chunk directory does not count rows twice; it is
    written atomically. Returns the number of rows.
    """
    import awkward as ak

    src, out = Path(directory), Path(target)
    if out.suffix not in (".parquet", ".root"):
        raise ConfigError(f"merge target {out} must end in .parquet or .root")
    if out.resolve().parent == src.resolve():
        raise ConfigError(f"merge target {out} lies in the chunk directory {src}; write it elsewhere")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    markers = sorted(
        p
        for p in src.glob("*.json")
        if p.name not in ("cutflow.json", "run.json") and not p.name.startswith(TMP_PREFIX)
    )
    arrays = []
    for marker in markers:
        chunk = marker.with_suffix(".parquet")
        if not chunk.is_file():
            raise InputError(f"{marker}: its chunk {chunk.name} is missing (rerun with --format parquet)")
        try:
            arrays.append(ak.from_parquet(chunk))
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise InputError(f"cannot read parquet file {chunk}: {err}") from err
    if not arrays:
        raise InputError(f"no complete chunks in {src}")
    merged = ak.concatenate(arrays) if len(arrays) > 1 else arrays[0]
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


def _explain(err: BaseException) -> HepflowError:
    """Turn a failure inside coffea/uproot into a one-line error that names the file.

    Coffea wraps exceptions raised while processing a chunk; a :class:`HepflowError` found in the
    exception chain is returned as it is, anything else becomes an :class:`InputError` naming the
    file and the original error's first line.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for exc in chain:
        if isinstance(exc, HepflowError):
            return exc
    text = "\n".join(str(exc) for exc in chain)
    match = re.search(r"filename='([^']+)'", text) or re.search(r"(\S+\.root)", text)
    where = f" while reading {match.group(1)}" if match else ""
    inner = re.search(r"The error was: (.*)", text)
    root = chain[-1]
    detail = (
        inner.group(1)
        if inner
        else f"{type(root).__name__}: {str(root).strip().splitlines()[0] if str(root).strip() else ''}"
    )
    return InputError(f"processing failed{where}: {detail}")
