"""Coffea processor: neutrino posteriors and baselines written back as columns.

Builds the same features as :class:`~hepflow.neutrino.processor.NeutrinoFeatureProcessor`, then adds,
per selected event, ``K`` posterior samples of the cINN with their summaries, the quadratic
W-mass-constraint solution and the feed-forward regression (see
:func:`hepflow.neutrino.inference.inference_columns`). The processor carries only the model
path; each worker process loads the models once, on its first chunk, and keeps them.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from typing import Any

import awkward as ak
import numpy as np

from hepflow.errors import ConfigError
from hepflow.inference.coffea import content_key
from hepflow.neutrino.inference import FINITE_OUTPUTS, finite_outputs, inference_columns
from hepflow.neutrino.model import load_models
from hepflow.neutrino.pretrained import resolve_model
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.neutrino.selection import NeutrinoSelection
from hepflow.outputs.chunks import chunk_seed
from hepflow.processing import ChunkColumns, ColumnProcessor, Cutflow, is_dask, per_partition

__all__ = ["NeutrinoInferenceProcessor", "cached_models"]

_MODELS: dict[str, tuple[Any, Any]] = {}
_LOCK = threading.Lock()
#: the per-row flag of finite outputs, dropped before the columns are returned
_FINITE = "_finite_outputs"


def cached_models(model_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(flow, regression) for ``model_dir`` (or ``"pretrained"``), loaded once per process."""
    key = str(resolve_model(model_dir).resolve())
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_models(key)
        return _MODELS[key]


class NeutrinoInferenceProcessor(ColumnProcessor):
    """Select events, build features, and add posterior and baseline columns.

    The events are selected by :class:`~hepflow.neutrino.processor.NeutrinoFeatureProcessor`, whose
    last cutflow step (``"finite inputs"``) drops events with NaN or infinite inputs: no NaN
    reaches the flow. A further step (``"finite outputs"``) drops and counts the events whose
    outputs overflow (extreme inputs such as a MET of 1e38 GeV): every written column is finite.
    ``samples`` must be at least 2 (the posterior standard deviation needs two).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        samples: int = 256,
        batch_events: int = 2048,
        seed: int = 7,
        selection: NeutrinoSelection | None = None,
    ) -> None:
        if samples < 2 or batch_events < 1:
            raise ConfigError(
                f"need samples >= 2 (for the posterior std) and batch_events >= 1, "
                f"got samples={samples}, batch_events={batch_events}"
            )
        self.model_dir = str(resolve_model(model_dir))  # "pretrained": the shipped model, verified
        self.samples = samples
        self.batch_events = batch_events
        self.seed = seed
        self.features = NeutrinoFeatureProcessor(selection)

    def provenance(self) -> dict[str, Any]:
        """What the chunks of this processor depend on (recorded by ``hepflow infer``): the
        selection, the models' weights checksums (:func:`hepflow.outputs.provenance.model_identity`),
        the samples per event, the event batches and the seed."""
        from hepflow.outputs.provenance import describe, model_identity

        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "features": describe(self.features),
            "model": model_identity(self.model_dir),
            "samples": self.samples,
            "batch_events": self.batch_events,
            "seed": self.seed,
        }

    def columns(self, events: Any) -> ChunkColumns:
        result = self.features.columns(events)
        # eager: a per-chunk seed from the chunk's file and entry range (reproducible, and every
        # chunk, also equally long ones of other files, gets its own noise); coffea's dask mode:
        # sampling is torch code, run per partition, and the metadata names the dataset, not the
        # partition, so each partition is seeded by its event ids (None here)
        seed = None if is_dask(result.columns) else chunk_seed(self.seed, events.metadata) % 2**63
        columns = per_partition(
            partial(self._add_inference, seed=seed), result.columns, label="neutrino-inference"
        )
        # events whose outputs overflow (e.g. MET of 1e38 GeV) are dropped and counted
        ok = columns[_FINITE]
        cutflow = Cutflow(result)
        cutflow.add(FINITE_OUTPUTS, columns["weight"][ok])
        kept = columns[ok]
        return cutflow.chunk(ak.zip({f: kept[f] for f in kept.fields if f != _FINITE}, depth_limit=1))

    def _add_inference(self, columns: ak.Array, *, seed: int | None) -> ak.Array:
        """The feature columns with the posterior and baseline columns (eager arrays); without
        ``seed`` the noise is seeded by ``self.seed`` and the rows' event ids."""
        if seed is None:
            ids = [np.asarray(ak.to_numpy(columns[k])) for k in ("run", "luminosityBlock", "event")]
            seed = int(np.random.SeedSequence([self.seed, *content_key(ids)]).generate_state(1, np.uint64)[0])
            seed %= 2**63
        flow, regression = cached_models(self.model_dir)
        added = inference_columns(
            columns, flow, regression, samples=self.samples, batch_events=self.batch_events, seed=seed
        )
        merged = {name: columns[name] for name in columns.fields}
        merged.update({name: ak.Array(values) for name, values in added.items()})
        merged[_FINITE] = ak.Array(finite_outputs(added))
        return ak.zip(merged, depth_limit=1)
