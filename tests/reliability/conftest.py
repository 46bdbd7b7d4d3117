"""Broken, empty and patched inputs for the reliability tests, and a tiny trained model."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from tests.conftest import read_nanoaod

#: Neutrino analysis settings small enough to train in seconds (as in the pipeline tests).
TINY = {
    "summary": {"set_width": 16, "set_heads": 2, "flat_embedding": 8, "jet_embedding": 8},
    "flow": {"depth": 2, "width": 16, "bins": 4},
    "regression": {"width": 16, "layers": 1},
    "training": {"epochs": 1, "batch_size": 64, "seed": 3},
}


def set_value(values: ak.Array, event: int, value: float, index: int | None = None) -> ak.Array:
    """A copy of ``values`` (flat, or jagged with ``index``) with one entry replaced by ``value``."""
    if index is None:
        flat = ak.to_numpy(values).copy()
        flat[event] = value
        return ak.Array(flat)
    counts = ak.to_numpy(ak.num(values, axis=1))
    flat = ak.to_numpy(ak.flatten(values)).copy()
    if not 0 <= index < counts[event]:
        raise IndexError(f"event {event} has {counts[event]} entries, not {index + 1}")
    flat[counts[:event].sum() + index] = value
    return ak.unflatten(flat, counts)


def set_field(record: ak.Array, field: str, values: ak.Array) -> ak.Array:
    """``record`` (one collection) with ``field`` replaced."""
    return ak.zip({f: (values if f == field else record[f]) for f in record.fields})


def replicate(branches: dict[str, ak.Array], copies: int) -> dict[str, ak.Array]:
    """``copies`` copies of the events, each with its own event numbers (for larger files)."""
    out = {k: ak.concatenate([v] * copies) for k, v in branches.items()}
    n = len(branches["event"])
    offset = np.repeat(np.arange(copies, dtype=np.uint64) * np.uint64(10_000_000), n)
    out["event"] = ak.Array(ak.to_numpy(out["event"]).astype(np.uint64) + offset)
    return out


@pytest.fixture(scope="session")
def v12_branches(nano_v12: Path) -> dict[str, ak.Array]:
    """The branches the neutrino processor reads, from the real v12 sample."""
    return read_nanoaod(nano_v12)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, nano_v12: Path) -> Path:
    """Flow and regression trained for one epoch on the v12 sample (twice: 104 events)."""
    from hepflow.config import from_dict
    from hepflow.neutrino.config import NeutrinoConfig
    from hepflow.neutrino.pipeline import train
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor
    from hepflow.processing import RunConfig, build_fileset, run_processor

    d = tmp_path_factory.mktemp("tiny_models")
    copy = d / "copy.root"
    copy.write_bytes(nano_v12.read_bytes())
    run_processor(
        NeutrinoFeatureProcessor(), build_fileset([nano_v12, copy]), d / "features", RunConfig(progress=False)
    )
    train(d / "features", d / "models", config=from_dict(NeutrinoConfig, TINY), progress=False)
    return d / "models"
