"""Broken, foreign and empty inputs through ``hepflow process neutrino`` and ``hepflow infer neutrino``.

A bad file stops the run with a one-line error naming it (a traceback only with ``--debug``) and
leaves no output under a final name; an empty file, or events without leptons or jets, finish
cleanly with consistent outputs (zero cutflow counts, zero-row chunks). The commands run through
:func:`hepflow.cli.main` (the code path of the command line, in this process).
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.cli import main
from hepflow.errors import InputError
from hepflow.neutrino.processor import CUTFLOW_STEPS, NeutrinoFeatureProcessor
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, run_processor
from tests.conftest import write_nanoaod, write_nanoaod_subset


def _process(path: Path | list[Path], out: Path, *extra: str) -> int:
    paths = [str(p) for p in (path if isinstance(path, list) else [path])]
    return main(["process", "neutrino", "--input", *paths, "--output", str(out), "--no-progress", *extra])


def _infer(models: Path, path: Path, out: Path) -> int:
    return main(
        [
            "infer",
            "neutrino",
            "--model",
            str(models),
            "--input",
            str(path),
            "--output",
            str(out),
            "--samples",
            "4",
            "--no-progress",
        ]
    )


def _run(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _check_consistent(out: Path) -> dict[str, int]:
    """run.json, cutflow.json and the chunk files agree; returns the cutflow."""
    run = _run(out)
    flow = run["cutflow"]["total"]
    assert tuple(flow) == CUTFLOW_STEPS
    assert json.loads((out / "cutflow.json").read_text())["total"] == flow
    assert run["skipped_files"] == []
    assert run["rows"] == flow["finite inputs"] == sum(c["rows"] for c in run["chunks"].values())
    rows = sum(len(ak.from_parquet(f)) for f in out.glob("*.parquet"))
    assert rows == run["rows"]
    assert not list(out.glob(".hepflow-tmp-*"))
    return flow


def test_empty_file(nano_v12, tiny_models, tmp_path, capsys):
    empty = write_nanoaod_subset(nano_v12, tmp_path / "empty.root", entry_stop=0)
    assert uproot.open(empty)["Events"].num_entries == 0
    assert _process(empty, tmp_path / "features") == 0
    assert _check_consistent(tmp_path / "features") == dict.fromkeys(CUTFLOW_STEPS, 0)
    assert "wrote 1 chunk(s)" in capsys.readouterr().out
    assert _infer(tiny_models, empty, tmp_path / "infer") == 0
    assert _run(tmp_path / "infer")["rows"] == 0
    assert "posteriors for 0 events" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Performed attempt:UserWarning")  # coffea retries, then fails
def test_file_without_events_tree(tmp_path, capsys):
    path = tmp_path / "other.root"
    with uproot.recreate(path) as f:
        f["Runs"] = {"run": np.arange(3)}
    out = tmp_path / "features"
    assert _process(path, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hepflow: error: processing failed while reading")
    assert str(path) in err
    assert "'Events'" in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert not list(out.glob("*.parquet"))
    assert not (out / "run.json").exists()
    with pytest.raises(InputError, match=r"other\.root.*not found: 'Events'"):
        run_processor(NeutrinoFeatureProcessor(), build_fileset([path]), out, RunConfig(progress=False))


def _truncated(nano_v12: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "truncated.root"
    bad.write_bytes(nano_v12.read_bytes()[:300_000])
    return bad


@pytest.mark.filterwarnings("ignore:Performed attempt:UserWarning")
@pytest.mark.parametrize("kind", ["truncated", "not ROOT"])
def test_bad_file_stops_the_run_with_one_line(kind, nano_v12, tmp_path, capsys):
    if kind == "truncated":
        bad = _truncated(nano_v12, tmp_path)
    else:
        bad = tmp_path / "notes.root"
        bad.write_text("this is not a ROOT file\n" * 100)
    out = tmp_path / "features"
    assert _process(nano_v12, out) == 0  # an earlier run's complete outputs stay as they are
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert _process(bad, out, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert err.startswith("hepflow: error: processing failed while reading")
    assert str(bad) in err
    assert not list(out.glob(f"*{bad.stem}*"))
    assert not list(out.glob(".hepflow-tmp-*"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # run.json not rewritten
    with pytest.raises(InputError, match=bad.name):
        main(
            [
                "--debug",
                "process",
                "neutrino",
                "--input",
                str(bad),
                "--output",
                str(out),
                "--no-progress",
                "--overwrite",
            ]
        )


@pytest.mark.filterwarnings("ignore:Performed attempt:UserWarning")
def test_skip_bad_files_on_the_command_line(nano_v12, tmp_path, capsys):
    bad = _truncated(nano_v12, tmp_path)
    out = tmp_path / "features"
    with pytest.warns(UserWarning, match="truncated"):  # coffea reports the skipped file
        assert _process([nano_v12, bad], out, "--skip-bad-files") == 0
    assert "skipped 1 bad file(s)" in capsys.readouterr().out
    run = _run(out)
    assert run["skipped_files"] == [str(bad)]
    assert run["rows"] == run["cutflow"]["total"]["finite inputs"] > 0


def test_unknown_option_or_key_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["process", "neutrino", "--input", "x.root", "--output", str(tmp_path), "--chunk-size", "5"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --chunk-size 5" in capsys.readouterr().err
    config = tmp_path / "selection.toml"
    config.write_text("[selection]\nmin_jet = 3\n")
    assert (
        main(["process", "neutrino", "--input", "x.root", "--output", str(tmp_path), "--config", str(config)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "unknown key 'min_jet'" in err
    assert len(err.splitlines()) == 1
    config.write_text('[selection]\nmin_jets = "four"\n')
    assert (
        main(["process", "neutrino", "--input", "x.root", "--output", str(tmp_path), "--config", str(config)])
        == 2
    )
    assert "min_jets: expected an integer, got 'four'" in capsys.readouterr().err


def test_events_without_leptons(v12_branches, tiny_models, tmp_path):
    b = dict(v12_branches)
    b["Electron"] = b["Electron"][b["Electron"].pt < 0]
    b["Muon"] = b["Muon"][b["Muon"].pt < 0]
    path = write_nanoaod(tmp_path / "nolep.root", b)
    assert _process(path, tmp_path / "features", "--chunksize", "80") == 0
    flow = _check_consistent(tmp_path / "features")
    assert flow == {"all": 200, **dict.fromkeys(CUTFLOW_STEPS[1:], 0)}
    chunks = _run(tmp_path / "features")["chunks"].values()
    assert len(chunks) == 2
    assert all(c["rows"] == 0 for c in chunks)
    assert len(list((tmp_path / "features").glob("*.parquet"))) == 2  # zero-row files, one per chunk
    assert _infer(tiny_models, path, tmp_path / "infer") == 0
    assert _run(tmp_path / "infer")["rows"] == 0


def test_events_without_jets(v12_branches, tiny_models, tmp_path):
    """No jets at all in the first 100 events: exactly the selected events among the rest remain."""
    b = dict(v12_branches)
    n = len(b["event"])
    no_jets = np.arange(n) < 100
    b["Jet"] = b["Jet"][ak.local_index(b["Jet"].pt) < np.where(no_jets, 0, 1_000)[:, None]]
    assert ak.all(ak.num(b["Jet"][:100]) == 0)
    path = write_nanoaod(tmp_path / "nojets.root", b)
    assert _process(path, tmp_path / "features") == 0
    flow = _check_consistent(tmp_path / "features")
    full = write_nanoaod(tmp_path / "full.root", dict(v12_branches))
    assert _process(full, tmp_path / "reference") == 0
    reference = read_parquet_dir(tmp_path / "reference")
    events_with_jets = set(ak.to_numpy(b["event"][~no_jets]).tolist())
    expected = [e for e in ak.to_numpy(reference.event).tolist() if e in events_with_jets]
    rows = read_parquet_dir(tmp_path / "features")
    assert sorted(ak.to_numpy(rows.event).tolist()) == sorted(expected)
    assert flow["one lepton"] == _run(tmp_path / "reference")["cutflow"]["total"]["one lepton"]
    assert 0 < flow["jets"] < flow["one lepton"]
    # all jets gone: the selection stops at "jets", the run finishes with zero rows
    b["Jet"] = b["Jet"][b["Jet"].pt < 0]
    path = write_nanoaod(tmp_path / "nojets_at_all.root", b)
    assert _process(path, tmp_path / "none") == 0
    assert _check_consistent(tmp_path / "none")["jets"] == 0
    assert _infer(tiny_models, path, tmp_path / "infer") == 0
    assert _run(tmp_path / "infer")["rows"] == 0


def test_all_hadronic_inference_finishes_cleanly(nano_v15, tiny_models, tmp_path):
    assert _infer(tiny_models, nano_v15, tmp_path / "infer") == 0
    run = _run(tmp_path / "infer")
    assert run["cutflow"]["total"]["all"] == 200
    assert run["rows"] == run["cutflow"]["total"]["finite inputs"] <= 5


def test_one_posterior_sample_is_refused(tiny_models, nano_v12, tmp_path, capsys):
    """One sample has no standard deviation: refused rather than NaN in the std columns."""
    out = tmp_path / "infer"
    args = ["--model", str(tiny_models), "--input", str(nano_v12), "--output", str(out), "--samples", "1"]
    assert main(["infer", "neutrino", *args]) == 2
    assert "need samples >= 2 (for the posterior std)" in capsys.readouterr().err
    assert not out.exists()
