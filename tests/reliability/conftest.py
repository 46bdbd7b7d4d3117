"""Broken, empty and patched inputs for the reliability tests (the tiny trained model is in
tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from tests.conftest import read_nanoaod


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
