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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from hepflow.errors import ConfigError, InputError, OutputError
from hepflow.inputs import check_branches
from hepflow.outputs.atomic import atomic_write, clean_stale_temporaries, write_json
from hepflow.outputs.columnar import write_parquet
from hepflow.outputs.lock import output_lock
from hepflow.processing import (
    ChunkColumns,
    ColumnProcessor,
    RunConfig,
    build_fileset,
    execute,
    make_output_dir,
    new_cutflow,
    plain,
    run_processor,
    source_file,
)

__all__ = [
    "CosmicProcessingResult",
    "PseudoExperimentFeatureProcessor",
    "ShowerHistogramProcessor",
    "process_cosmic",
]

Mode = Literal["auto", "features", "histogram"]


class ShowerHistogramProcessor(processor.ProcessorABC):
    """Fill the lg E x Xmax histogram from a ``Showers`` tree (branches ``lg_e``, ``xmax``).

    ``process`` returns ``{"histogram": hist.Hist, "by_dataset": {dataset: hist.Hist},
    "showers": {filename: int}, "excluded_showers": {filename: int}}``; coffea adds the
    results of all chunks. Showers without an Xmax (NaN) fill the Xmax overflow bin, so the
    histogram holds both the spectrum and the Xmax distributions
    (:func:`hepflow.cosmic.features.histogram_counts`). Showers whose ``lg_e`` is NaN or
    infinite, or whose ``xmax`` is infinite, are excluded and counted per file.
    """

    def __init__(self, binning: Binning | None = None) -> None:
        self.binning = binning if binning is not None else Binning.auger()
        shower_histogram(self.binning)  # checks that the binning fits one histogram

    def process(self, events: Any) -> dict[str, Any]:
        check_branches(events, {"lg_e": "float", "xmax": "float"})
        lg_e = ak.to_numpy(events.lg_e).astype(float)
        xmax = ak.to_numpy(events.xmax).astype(float)
        good = np.isfinite(lg_e) & ~np.isinf(xmax)  # NaN xmax: a shower without Xmax, kept
        h = shower_histogram(self.binning)
        h.fill(lg_e=lg_e[good], xmax=xmax[good])
        meta = getattr(events, "metadata", {})
        return {
            "histogram": h,
            "by_dataset": {str(meta.get("dataset", "dataset")): h.copy()},
            "showers": {source_file(events): int(good.sum())},
            "excluded_showers": {source_file(events): int((~good).sum())},
        }

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


class PseudoExperimentFeatureProcessor(ColumnProcessor):
    """Turn a ``PseudoExperiments`` tree into truth and feature columns.

    :meth:`columns` builds one chunk: columns ``index``, the 7 parameters and the features of
    :func:`hepflow.cosmic.features.feature_names`, one row per pseudo-experiment; in a coffea
    ``Runner`` the output is per dataset, the chunks concatenated in order
    (:class:`~hepflow.processing.ColumnProcessor`).
    The cutflow has the steps ``"all"`` and ``"valid inputs"``: pseudo-experiments with a NaN,
    infinite or negative count, or a non-finite parameter, are dropped and counted (the
    difference of the two).
    """

    def __init__(self, binning: Binning | None = None) -> None:
        self.binning = binning if binning is not None else Binning.auger()

    def columns(self, events: Any) -> ChunkColumns:
        check_branches(
            events,
            {**dict.fromkeys(PARAMETER_NAMES, "float"), "spectrum": "number", "xmax": "number"},
            optional={"index": "integer"},
        )
        n_e, n_m, n_x = self.binning.shape
        spectrum = ak.to_numpy(events.spectrum)
        xmax = ak.to_numpy(events.xmax)
        if spectrum.shape[1:] != (n_e,) or xmax.shape[1:] not in ((n_m, n_x), (n_m * n_x,)):
            raise InputError(
                f"{source_file(events)}: spectrum/xmax have shapes {spectrum.shape[1:]}/{xmax.shape[1:]}, "
                f"the binning needs ({n_e},)/({n_m}, {n_x}): was it generated with another lg_e_min?"
            )
        truth = np.stack([ak.to_numpy(events[name]).astype(float) for name in PARAMETER_NAMES], axis=1)
        valid = valid_rows(spectrum, xmax) & valid_rows(truth, nonnegative=False)
        cutflow = new_cutflow()
        cutflow.fill(step=["all"], weight=[len(valid)])
        cutflow.fill(step=["valid inputs"], weight=[int(valid.sum())])
        features = observation_features(spectrum[valid], xmax[valid], binning=self.binning)
        columns = feature_columns(features, truth=truth[valid], binning=self.binning)
        if "index" in events.fields:
            columns = ak.with_field(columns, ak.to_numpy(events.index)[valid].astype(np.int64), "index")
        return ChunkColumns(plain(columns), cutflow)


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
    if binning is not None:
        b = binning
    elif config is not None:
        b = load_config(config).model.binning()
    else:
        b = Binning.auger()
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


def _check_trees(fileset: dict[str, Any]) -> None:
    """Fail before processing when a local file lacks its tree, naming the file and what it holds."""
    import uproot

    for spec in fileset.values():
        for f, tree in spec["files"].items():
            if "://" in f:
                continue
            try:
                with uproot.open(f) as fin:
                    keys = fin.keys(cycle=False, recursive=False)
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read {f} as a ROOT file: {err}") from err
            if tree not in keys:
                raise InputError(f"{f} has no {tree} tree (found: {', '.join(sorted(keys)) or 'nothing'})")


def _skipped(fileset: dict[str, Any], done: set[str]) -> list[str]:
    return [f for spec in fileset.values() for f in spec["files"] if f not in done]
