"""Every bad input of the reliability issue ends in one line naming what is wrong, and nothing written.

Each case builds a bad input (a file with a wrong dtype or a missing branch, an empty file, a
fileset that is not one, an output that cannot be written, an option value out of range, ...)
and runs the command line in this process (:func:`hepflow.cli.main`). Expected: exit status 2,
exactly one line on stderr starting ``hepflow: error:`` that contains the file, branch, key or
value, no traceback, no file written or changed, and no retry of a local error by coffea.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.cli import main
from hepflow.cosmic import PARAMETER_NAMES, Binning
from tests.conftest import SAMPLES, write_nanoaod

#: name -> builder(tmp_path, branches of the v12 sample, monkeypatch) -> (argv, fragments of the message)
Case = Callable[[Path, dict[str, ak.Array], pytest.MonkeyPatch], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}
NANO_V12 = SAMPLES / "nano_tt_v12.root"


def case(builder: Case) -> Case:
    CASES[builder.__name__] = builder
    return builder


def _process(inputs: list[Path], out: Path, *extra: str) -> list[str]:
    return [
        "process",
        "neutrino",
        "--input",
        *map(str, inputs),
        "--output",
        str(out),
        "--no-progress",
        *extra,
    ]


def _set_field(b: dict[str, ak.Array], collection: str, field: str, values: ak.Array) -> None:
    record = b[collection]
    b[collection] = ak.zip({f: (values if f == field else record[f]) for f in record.fields})


@case
def zero_byte_file(tmp, b, monkeypatch):
    path = tmp / "zero.root"
    path.write_bytes(b"")
    return _process([path], tmp / "out"), [str(path), "is empty (0 bytes), not a ROOT file"]


@case
def missing_met_pt(tmp, b, monkeypatch):
    del b["MET_pt"]
    path = write_nanoaod(tmp / "nomet.root", b)
    return _process([path], tmp / "out"), [f"{path}: missing branches MET_pt"]


@case
def met_pt_bool(tmp, b, monkeypatch):
    b["MET_pt"] = b["MET_pt"] > 50
    path = write_nanoaod(tmp / "metbool.root", b)
    return _process([path], tmp / "out"), [
        f"{path}: branch MET_pt has type bool, expected a floating-point number"
    ]


@case
def met_pt_bool_futures_executor(tmp, b, monkeypatch):
    argv, fragments = met_pt_bool(tmp, b, monkeypatch)
    return [*argv, "--executor", "futures", "--workers", "1"], fragments


@case
def btag_integer(tmp, b, monkeypatch):
    _set_field(b, "Jet", "btagDeepFlavB", ak.values_astype(b["Jet"].btagDeepFlavB > 0.5, np.int32))
    path = write_nanoaod(tmp / "btagint.root", b)
    return _process([path], tmp / "out"), [
        f"{path}: branch Jet_btagDeepFlavB has type int32, expected a floating-point number"
    ]


@case
def muon_tight_id_float(tmp, b, monkeypatch):
    _set_field(b, "Muon", "tightId", ak.values_astype(b["Muon"].tightId, np.float32))
    path = write_nanoaod(tmp / "tightid.root", b)
    return _process([path], tmp / "out"), [
        f"{path}: branch Muon_tightId has type float32, expected a boolean"
    ]


@case
def event_number_float(tmp, b, monkeypatch):
    b["event"] = ak.values_astype(b["event"], np.float64)
    path = write_nanoaod(tmp / "eventfloat.root", b)
    return _process([path], tmp / "out"), [f"{path}: branch event has type float64, expected an integer"]


@case
def fileset_json_list(tmp, b, monkeypatch):
    fileset = tmp / "fileset.json"
    fileset.write_text(json.dumps([str(tmp / "f.root")]))
    return _process([fileset], tmp / "out"), [f"fileset {fileset}: expected an object", "got a JSON list"]


@case
def fileset_files_not_paths(tmp, b, monkeypatch):
    fileset = tmp / "fileset.json"
    fileset.write_text(json.dumps({"tt": {"files": {"f.root": 3}}}))
    return _process([fileset], tmp / "out"), [f"fileset {fileset}: dataset 'tt' has no file list"]


@case
def output_is_a_file(tmp, b, monkeypatch):
    out = tmp / "features"
    out.write_text("not a directory")
    return _process([NANO_V12], out), [f"output {out} exists and is not a directory"]


@case
def output_under_a_file(tmp, b, monkeypatch):
    parent = tmp / "afile"
    parent.write_text("not a directory")
    out = parent / "features"
    return _process([NANO_V12], out), [f"cannot write {out}: {parent} is a file, not a directory"]


@case
def output_parent_not_writable(tmp, b, monkeypatch):
    parent = tmp / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the check see what a user would
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == parent else real(p, mode))
    out = parent / "features"
    return _process([NANO_V12], out), [f"cannot write {out}: {parent} is not writable"]


@case
def chunksize_overflow(tmp, b, monkeypatch):
    argv = _process([NANO_V12], tmp / "out", "--chunksize", "1e999")
    return argv, ["argument --chunksize: expected a positive integer, got '1e999'"]


@case
def negative_seed(tmp, b, monkeypatch):
    argv = ["generate", "cosmic", "--n", "2", "--seed", "-1", "--output", str(tmp / "pe.root")]
    return argv, ["argument --seed: expected a seed, an integer in [0, 2^32), got '-1'"]


@case
def features_without_lep_loge(tmp, b, monkeypatch):
    features = tmp / "features"
    assert main(_process([write_nanoaod(tmp / "f.root", b)], features)) == 0
    for chunk in features.glob("*.parquet"):
        columns = ak.from_parquet(chunk)
        ak.to_parquet(columns[[f for f in columns.fields if f != "lep_loge"]], chunk)
    argv = ["train", "neutrino", "--data", str(features), "--output", str(tmp / "model"), "--no-progress"]
    return argv, [f"{features}: the feature files lack the columns lep_loge"]


def _pseudo_experiments(path: Path, spectrum_value: float) -> Path:
    n_e, n_m, n_x = Binning.auger().shape
    spectrum = np.ones((1, n_e), dtype=np.float64)
    spectrum[0, 3] = spectrum_value
    return _tree(
        path,
        "PseudoExperiments",
        {
            "index": np.zeros(1, dtype=np.int64),
            **{name: np.zeros(1) for name in PARAMETER_NAMES},
            "spectrum": spectrum,
            "xmax": np.ones((1, n_m, n_x)),
        },
    )


def _tree(path: Path, name: str, branches: dict[str, np.ndarray]) -> Path:
    """Write ``branches`` as a TTree (uproot writes an RNTuple for a plain assignment)."""
    with uproot.recreate(path) as f:
        f.mktree(
            name,
            {k: v.dtype if v.ndim == 1 else np.dtype((v.dtype, v.shape[1:])) for k, v in branches.items()},
        )
        f[name].extend(branches)
    return path


@case
def cosmic_negative_count(tmp, b, monkeypatch):
    path = _pseudo_experiments(tmp / "pe.root", -1.0)
    argv = ["mcmc", "cosmic", "--observation", str(path), "--output", str(tmp / "mcmc"), "--no-progress"]
    return argv, [
        f"{path} entry 0: spectrum count -1 in bin 3 (lg E 19 .. 19.1); counts must be finite and >= 0"
    ]


@case
def cosmic_infinite_shower_energy(tmp, b, monkeypatch):
    showers = {"lg_e": np.array([19.0, np.inf, 19.2]), "xmax": np.array([700.0, 710.0, np.nan])}
    path = _tree(tmp / "showers.root", "Showers", showers)
    argv = ["mcmc", "cosmic", "--observation", str(path), "--output", str(tmp / "mcmc"), "--no-progress"]
    return argv, [f"{path}: lg_e must be finite, shower 1 has inf"]


@case
def cosmic_shower_energy_integer(tmp, b, monkeypatch):
    path = tmp / "showers.root"
    with uproot.recreate(path) as f:
        f["Showers"] = {
            "lg_e": np.array([19, 19, 20], dtype=np.int32),
            "xmax": np.array([700.0, 710.0, np.nan]),
        }
    argv = ["process", "cosmic", "--input", str(path), "--output", str(tmp / "out"), "--no-progress"]
    return argv, [f"{path}: branch lg_e has type int32, expected a floating-point number"]


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_one_line(name, tmp_path, v12_branches, monkeypatch, capsys):
    argv, fragments = CASES[name](tmp_path, dict(v12_branches), monkeypatch)
    before = _files(tmp_path)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "Missing cross-reference", RuntimeWarning)
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hepflow: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert _files(tmp_path) == before  # nothing written, nothing changed
    assert not [w for w in caught if "Performed attempt" in str(w.message)]  # a local error is not retried
