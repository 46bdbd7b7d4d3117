"""Training data of the neutrino analysis: processed feature chunks as model inputs.

:func:`load_training_data` reads the chunks written by the feature processor
(:mod:`hepflow.neutrino.processor`) and returns the targets (the truth neutrino px, py, eta) and
the model context (:func:`hepflow.neutrino.features.context_arrays`), without the events that
have no truth neutrino or a non-finite input, and the per-event generator weights when the
chunks carry a ``weight`` column (``genWeight``; None otherwise). Its :attr:`TrainingData.cutflow`
counts the rows, and the sum of their weights, at each step: ``rows`` read, with a
``truth neutrino`` (rows without one, e.g. W -> tau nu or all-hadronic events of full
simulation, are refused), and ``finite`` (the events trained on).

Example:
    >>> import tempfile, awkward as ak, numpy as np
    >>> from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES, TRUTH_COLUMNS
    >>> from hepflow.outputs import write_parquet
    >>> row = {**{k: 1.0 for k in FLAT_FEATURES}, **{k: [1.0, 2.0] for k in JET_FEATURES}}
    >>> rows = [{**row, **{k: 10.0 for k in TRUTH_COLUMNS}}, {**row, **{k: None for k in TRUTH_COLUMNS}}]
    >>> d = tempfile.mkdtemp()
    >>> _ = write_parquet(ak.Array(rows), f"{d}/chunk.parquet")
    >>> data = load_training_data(d)
    >>> data.theta.shape, data.n_read, data.n_missing_truth, data.weights
    ((1, 3), 2, 1, None)
    >>> data.cutflow["truth neutrino"]
    {'events': 1, 'sumw': 1.0, 'sumw2': 1.0}
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from hepflow.errors import InputError
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES, TRUTH_COLUMNS, context_arrays, truth_array

__all__ = ["CUTFLOW_STEPS", "TrainingData", "load_training_data"]

log = logging.getLogger(__name__)


#: Steps of :attr:`TrainingData.cutflow`, in order; the last one counts the events trained on.
CUTFLOW_STEPS = ("rows", "truth neutrino", "finite")


@dataclass
class TrainingData:
    """Tensors for training: target (n, 3), context dict and per-event weights (n,) or None
    (the chunks have no ``weight`` column); counts of dropped events; and the cutflow
    ``{step: {"events", "sumw", "sumw2"}}`` over :data:`CUTFLOW_STEPS` (weights of 1 without
    a ``weight`` column)."""

    theta: np.ndarray
    context: dict[str, np.ndarray]
    n_read: int
    n_missing_truth: int
    n_non_finite: int
    weights: np.ndarray | None = None
    cutflow: dict[str, dict[str, float]] = field(default_factory=dict)


def load_training_data(directory: str | os.PathLike[str], *, max_events: int | None = None) -> TrainingData:
    """Read processed feature chunks; drop (count and log) events without truth or with NaN/inf.

    An event is dropped as non-finite when its truth, any conditioning feature (flat
    features, the ``max_jets`` leading jets) or its ``weight`` is NaN or infinite; the feature
    processor already excludes such events, so this guards against files written by other
    means. Nothing non-finite is returned, so nothing non-finite reaches a training batch. The
    weights (float64) are returned as they are, negative ones included: :func:`hepflow.fit`
    checks and normalises them.
    """
    from hepflow.outputs import read_parquet_dir

    columns = read_parquet_dir(directory)
    if "nu_px_true" not in columns.fields:
        raise InputError(f"{directory}: the feature files have no truth columns (nu_*_true); cannot train")
    missing = [k for k in (*FLAT_FEATURES, *JET_FEATURES, *TRUTH_COLUMNS) if k not in columns.fields]
    if missing:
        raise InputError(
            f"{directory}: the feature files lack the columns {', '.join(missing)} "
            "(not written by `hepflow process neutrino` of this version?)"
        )
    if max_events is not None:
        columns = columns[:max_events]
    theta = truth_array(columns)
    ctx = context_arrays(columns)
    weights = None
    if "weight" in columns.fields:
        weights = np.asarray(ak.to_numpy(ak.fill_none(columns["weight"], np.nan)), dtype=np.float64)
    missing = np.isnan(theta).any(axis=1)  # None in the table: no W neutrino in the event
    finite = np.isfinite(ctx["flat"]).all(axis=1) & np.isfinite(ctx["jets"]).all(axis=(1, 2))
    if weights is not None:
        finite &= np.isfinite(weights)
    finite &= np.isfinite(theta).all(axis=1) | missing
    non_finite = ~finite & ~missing
    keep = ~missing & finite
    if non_finite.any():
        log.warning(
            "%s: dropped %d of %d events with NaN or inf features, truth or weight",
            directory,
            int(non_finite.sum()),
            len(columns),
        )
    # a non-finite weight (only in files written by other means) counts as 0 in the sums
    w = np.ones(len(columns)) if weights is None else np.where(np.isfinite(weights), weights, 0.0)
    cutflow = {
        step: {"events": int(rows.sum()), "sumw": float(w[rows].sum()), "sumw2": float((w[rows] ** 2).sum())}
        for step, rows in zip(CUTFLOW_STEPS, (np.ones(len(columns), bool), ~missing, keep), strict=True)
    }
    return TrainingData(
        theta=theta[keep],
        context={k: v[keep] for k, v in ctx.items()},
        n_read=len(columns),
        n_missing_truth=int(missing.sum()),
        n_non_finite=int(non_finite.sum()),
        weights=None if weights is None else weights[keep],
        cutflow=cutflow,
    )
