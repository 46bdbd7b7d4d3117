"""The neutrino analysis's domain-shift check: the input of ``hepflow infer`` against the training data.

:func:`training_summary` is what ``hepflow train neutrino`` stores with both models: the
summary (:mod:`hepflow.posterior.shift`) of the training context, its flat features named as in
:data:`~hepflow.neutrino.features.FLAT_FEATURES` and each jet slot a feature of its own
(``jet_px[0]`` is the leading jet's px; padded slots are no values). :func:`input_shift` reads
back the feature columns of the chunks an inference run wrote (the run's ``run.json`` lists
them), one chunk at a time, and compares them with the stored summary.

Example:
    >>> import numpy as np
    >>> from hepflow.neutrino.config import NeutrinoConfig
    >>> from hepflow.neutrino.model import build_flow
    >>> cfg, rng = NeutrinoConfig(), np.random.default_rng(0)
    >>> n = 400
    >>> ctx = {"flat": rng.normal(size=(n, 9)).astype(np.float32),
    ...        "jets": rng.normal(size=(n, 10, 5)).astype(np.float32),
    ...        "mask": np.arange(10)[None, :] < rng.integers(4, 7, n)[:, None]}
    >>> s = training_summary(build_flow(cfg.flow, cfg.summary, seed=1), ctx)
    >>> sorted(s.features)[:3], "jet_px[9]" in s.features, s.features["jet_px[4]"]["padding"] > 0.3
    (['jet_btag[0]', 'jet_btag[1]', 'jet_btag[2]'], False, True)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.errors import ConfigError, InputError
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES, context_arrays
from hepflow.posterior.shift import (
    InputTally,
    ShiftResult,
    TrainingSummary,
    compare,
    model_summary,
    read_summary,
)

__all__ = ["NAMES", "NO_SUMMARY", "ON_SHIFT", "check_on_shift", "input_shift", "training_summary"]

#: the names of the context features (context key -> feature names)
NAMES: dict[str, list[str]] = {"flat": list(FLAT_FEATURES), "jets": list(JET_FEATURES)}
#: what ``hepflow infer neutrino --on-shift`` may do when the input differs
ON_SHIFT: tuple[str, ...] = ("warn", "error")
#: the verdict for a model saved before hepflow stored training summaries
NO_SUMMARY = "the model records no training summary: the input was not compared with its training data"


def training_summary(model: Any, context: dict[str, np.ndarray]) -> TrainingSummary:
    """The summary of the training ``context`` (``flat``, ``jets``, ``mask``) of ``model``."""
    summary = model_summary(model, context, names=NAMES)
    assert summary is not None  # 9 + 10 x 5 values per event: always summarised
    return summary


def _columns(path: Path, rows: int | None, fmt: str) -> Any:
    """The context columns of one chunk file."""
    names = [*FLAT_FEATURES, *JET_FEATURES]
    if fmt == "parquet":
        from hepflow.outputs.columnar import read_chunk

        return read_chunk(path, rows, columns=names)
    import uproot

    try:
        with uproot.open(path) as f:
            return f["Events"].arrays(names)
    except Exception as err:  # uproot raises many types for damaged files
        raise InputError(f"cannot read the ROOT chunk {path}: {err}") from err


def input_shift(
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    formats: Iterable[str] = ("parquet",),
    alpha: float = 0.01,
    seed: int = 0,
) -> ShiftResult | None:
    """Compare the events of an inference run in ``output_dir`` (the chunks its ``run.json``
    lists, read in ``parquet`` when written, else ``root``) with the training summary of the
    flow in ``model_dir``; None when the model records none (:data:`NO_SUMMARY`)."""
    from hepflow.outputs.records import recorded_chunks

    summary = read_summary(Path(model_dir) / "flow")
    if summary is None:
        return None
    fmt = "parquet" if "parquet" in tuple(formats) else "root"
    data = InputTally(summary)
    for path, rows in recorded_chunks(output_dir, fmt=fmt) or []:
        columns = _columns(path, rows, fmt)
        if len(columns):
            data.add(summary.columns(context_arrays(columns)))
    return compare(summary, data, alpha=alpha, seed=seed)


def check_on_shift(value: str) -> str:
    """``value`` if it is one of :data:`ON_SHIFT`, else :class:`~hepflow.errors.ConfigError`."""
    if value not in ON_SHIFT:
        raise ConfigError(f"on_shift must be one of {', '.join(ON_SHIFT)}, got {value!r}")
    return value
