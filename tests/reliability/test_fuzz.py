"""Property-based fuzzing of ``hepflow process neutrino`` (and ``infer neutrino``) with hypothesis.

Each example writes a small NanoAOD-like file: a slice of the real v12 sample (0 to 30 events,
so some pass the selection) changed by up to four mutations: a branch removed, a branch stored
with another dtype (bool, integers, floats), NaN, infinite or extreme values in a floating-point
branch, no jets or many jets in every event, duplicated leptons. The command runs in this
process (:func:`hepflow.cli.main`) and must end in one of two ways:

* exit 2 with exactly one line on stderr, ``hepflow: error: ...``, no traceback, and no partial
  output (no chunk without its marker, no ``.hepflow-tmp-*``);
* exit 0 with outputs whose every value is finite and whose rows equal the last cutflow step.

Anything else (an exception out of ``main``, a traceback, a NaN in a column) fails the test with
the shrunk example. The default run is derandomized (the same examples every time, so CI is
reproducible) and small; ``HEPFLOW_FUZZ_EXAMPLES=500 pytest tests/reliability/test_fuzz.py``
or the ``slow`` variant (``pytest -m slow``, random examples) search deeper.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hepflow.cli import main
from hepflow.neutrino.processor import GENPART_BRANCHES
from hepflow.outputs import read_parquet_dir
from tests.conftest import EVENT_BRANCHES, write_nanoaod

#: examples of the default run (derandomized); raise it with HEPFLOW_FUZZ_EXAMPLES for deep runs
DEFAULT_EXAMPLES = int(os.environ.get("HEPFLOW_FUZZ_EXAMPLES", "25"))
#: branches the selection reads (flat ``MET_*`` and event-level ones, or ``Collection_field``)
BRANCHES = (
    "MET_pt",
    "MET_phi",
    "Jet_pt",
    "Jet_eta",
    "Jet_phi",
    "Jet_mass",
    "Jet_btagDeepFlavB",
    "Electron_pt",
    "Electron_eta",
    "Electron_charge",
    "Electron_cutBased",
    "Electron_pfRelIso03_all",
    "Muon_pt",
    "Muon_phi",
    "Muon_charge",
    "Muon_tightId",
    "Muon_pfRelIso04_all",
    "GenPart_pdgId",
    "GenPart_pt",
    "run",
    "event",
    "genWeight",
)
FLOAT_BRANCHES = tuple(
    b
    for b in BRANCHES
    if not b.endswith(("charge", "cutBased", "tightId", "pdgId")) and b not in ("run", "event")
)
DTYPES = ("bool", "int32", "uint8", "int64", "float32", "float64")
SPECIALS = (float("nan"), float("inf"), float("-inf"), 3e38, -3e38, 0.0, 1e-30)

mutations = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(BRANCHES)),
    st.tuples(st.just("retype"), st.sampled_from(BRANCHES), st.sampled_from(DTYPES)),
    st.tuples(
        st.just("special"), st.sampled_from(FLOAT_BRANCHES), st.sampled_from(SPECIALS), st.integers(1, 5)
    ),
    st.tuples(st.just("jets"), st.sampled_from((0, 4))),
    st.tuples(st.just("leptons"), st.sampled_from((0, 2))),
)
cases = st.tuples(st.integers(0, 199), st.integers(0, 30), st.lists(mutations, max_size=4))


def _map_branch(
    branches: dict[str, ak.Array], name: str, change: Callable[[ak.Array], ak.Array | None]
) -> None:
    """Apply ``change`` to branch ``name`` (None removes it), flat or a field of a collection."""
    if name in branches:
        new = change(branches[name])
        if new is None:
            del branches[name]
        else:
            branches[name] = new
        return
    collection, _, field = name.partition("_")
    if collection not in branches or field not in branches[collection].fields:
        return  # removed by an earlier mutation
    record = branches[collection]
    fields = {f: record[f] for f in record.fields}
    new = change(fields[field])
    if new is None:
        del fields[field]
    else:
        fields[field] = new
    if fields:
        branches[collection] = ak.zip(fields)
    else:
        del branches[collection]


def _every_kth(values: ak.Array, value: float, k: int) -> ak.Array:
    """``values`` with every ``k``-th entry (flattened) replaced by ``value``."""
    original = ak.to_numpy(ak.flatten(values, axis=None))
    flat = original.astype(np.float64)
    flat[::k] = value
    if original.dtype.kind == "f":
        flat = flat.astype(original.dtype)
    return ak.unflatten(flat, ak.num(values, axis=1)) if values.ndim > 1 else ak.Array(flat)


def _none_of(collection: ak.Array) -> ak.Array:
    """``collection`` with no entries in any event (whatever fields it still has)."""
    return collection[ak.local_index(collection, axis=1) < 0]


def nanoaod_case(
    base: dict[str, ak.Array], start: int, n: int, ops: list[tuple[Any, ...]]
) -> dict[str, ak.Array]:
    """The branches of events ``start:start+n`` of ``base`` after the mutations ``ops``."""
    with np.errstate(all="ignore"):  # casts of NaN and 3e38 to integers
        return _mutate({k: v[start : start + n] for k, v in base.items()}, ops)


def _mutate(b: dict[str, ak.Array], ops: list[tuple[Any, ...]]) -> dict[str, ak.Array]:
    for op, *args in ops:
        if op == "drop":
            _map_branch(b, args[0], lambda v: None)
        elif op == "retype":
            dtype = np.dtype(args[1])
            _map_branch(b, args[0], lambda v, dtype=dtype: ak.values_astype(ak.nan_to_num(v, nan=0.0), dtype))
        elif op == "special":
            value, k = args[1], args[2]
            _map_branch(b, args[0], lambda v, value=value, k=k: _every_kth(v, value, k))
        elif op == "jets" and "Jet" in b:
            jets = b["Jet"]
            b["Jet"] = _none_of(jets) if args[0] == 0 else ak.concatenate([jets] * args[0], axis=1)
        elif op == "leptons":
            for name in ("Electron", "Muon"):
                if name in b:
                    coll = b[name]
                    b[name] = _none_of(coll) if args[0] == 0 else ak.concatenate([coll] * args[0], axis=1)
    return b


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``hepflow argv`` run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, err.getvalue()


def check_outcome(code: int, err: str, out: Path) -> str:
    """The run either refused its input on one line, writing nothing partial, or wrote finite rows
    as many as its last cutflow step. Returns ``"refused"`` or ``"written"``."""
    assert "Traceback" not in err, err
    if out.exists():
        assert not list(out.glob(".hepflow-tmp-*")), "a temporary was left"
        for chunk in out.glob("*.parquet"):
            assert chunk.with_suffix(".json").is_file(), f"{chunk.name} has no marker"
    if code != 0:
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("hepflow: error: "), err
        return "refused"
    run = json.loads((out / "run.json").read_text())
    steps = list(run["cutflow"]["total"].values())
    rows = read_parquet_dir(out)
    assert len(rows) == run["rows"] == steps[-1]
    for field in rows.fields:
        values = ak.flatten(rows[field], axis=None)
        values = ak.to_numpy(values[~ak.is_none(values)])
        if values.dtype.kind == "f":
            assert np.isfinite(values).all(), f"non-finite values in column {field}"
    return "written"


def _fuzz_process(base: dict[str, ak.Array], case: tuple[int, int, list[tuple[Any, ...]]]) -> str:
    start, n, ops = case
    with tempfile.TemporaryDirectory() as tmp:
        path = write_nanoaod(Path(tmp) / "fuzz.root", nanoaod_case(base, start, n, ops))
        out = Path(tmp) / "features"
        code, err = run_cli(
            ["process", "neutrino", "--input", str(path), "--output", str(out), "--no-progress"]
        )
        return check_outcome(code, err, out)


OUTCOMES: dict[str, int] = {"refused": 0, "written": 0}


@pytest.fixture(scope="module")
def base(v12_branches: dict[str, ak.Array]) -> dict[str, ak.Array]:
    """The v12 branches the neutrino processor reads, and no others (smaller files, faster runs)."""
    read = {
        "Electron": ("pt", "eta", "phi", "mass", "charge", "cutBased", "pfRelIso03_all"),
        "Muon": ("pt", "eta", "phi", "mass", "charge", "tightId", "pfRelIso04_all"),
        "Jet": ("pt", "eta", "phi", "mass", "btagDeepFlavB"),
        "GenPart": GENPART_BRANCHES,
    }
    out = {k: v for k, v in v12_branches.items() if k in ("MET_pt", "MET_phi", *EVENT_BRANCHES)}
    out.update({c: ak.zip({f: v12_branches[c][f] for f in fields}) for c, fields in read.items()})
    return out


@settings(
    max_examples=DEFAULT_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases)
def test_process_neutrino_fuzz(base, case):
    OUTCOMES[_fuzz_process(base, case)] += 1


def test_fuzz_exercised_both_outcomes():
    """The default examples reach both ends: refused inputs and written outputs."""
    if sum(OUTCOMES.values()) == 0:
        pytest.skip("run together with test_process_neutrino_fuzz")
    print(f"fuzz outcomes: {OUTCOMES}")
    assert OUTCOMES["refused"] > 0
    assert OUTCOMES["written"] > 0


@pytest.mark.slow
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=cases)
def test_process_neutrino_fuzz_deep(base, case):
    _fuzz_process(base, case)


@settings(
    max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(case=cases)
def test_infer_neutrino_fuzz(base, tiny_models, case):
    start, n, ops = case
    with tempfile.TemporaryDirectory() as tmp:
        path = write_nanoaod(Path(tmp) / "fuzz.root", nanoaod_case(base, start, n, ops))
        out = Path(tmp) / "infer"
        argv = ["infer", "neutrino", "--model", str(tiny_models), "--input", str(path), "--output", str(out)]
        code, err = run_cli([*argv, "--samples", "4", "--no-progress"])
        check_outcome(code, err, out)
