"""``generate_ttbar(jobs=N)`` / ``hepflow generate ttbar --jobs N``: parts, seeds, event ids, failures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.errors import ConfigError, HepflowError, OutputError
from hepflow.generate.parallel import Part, generate_parts, part_paths, part_sizes
from hepflow.generate.pileup import PileupProfile
from hepflow.generate.ttbar import generate_ttbar
from hepflow.outputs.atomic import TMP_PREFIX

pytestmark = pytest.mark.generation
pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

NO_PILEUP = PileupProfile(mean=0.0)


def _read(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        tree = f["Events"]
        return {name: ak.to_numpy(ak.flatten(tree[name].array(), axis=None)) for name in tree.keys()}


@pytest.fixture(scope="module")
def two_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Path]]:
    """30 events in 2 jobs, twice (in two directories)."""
    runs = []
    for name in ("a", "b"):
        d = tmp_path_factory.mktemp(name)
        stats = generate_ttbar(d / "tt.root", events=31, seed=8, jobs=2, pileup=NO_PILEUP, progress=False)
        runs.append(stats)
    return runs


def test_parts_are_written_with_their_names_and_sizes(two_parts) -> None:
    stats = two_parts[0]
    directory = stats.path.parent
    assert stats.parts == (directory / "tt_000.root", directory / "tt_001.root")
    assert sorted(p.name for p in directory.iterdir()) == ["tt_000.root", "tt_001.root"]
    assert [uproot.open(p)["Events"].num_entries for p in stats.parts] == [16, 15]
    assert stats.events == 31
    assert stats.summary().startswith(f"wrote 31 events to 2 files {stats.parts[0]} ... tt_001.root in ")


def test_the_same_seed_and_jobs_give_the_same_files(two_parts) -> None:
    for first, second in zip(two_parts[0].parts, two_parts[1].parts, strict=True):
        a, b = _read(first), _read(second)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{first.name}: {name}")


def test_event_ids_are_unique_and_the_parts_differ(two_parts) -> None:
    a, b = (_read(p) for p in two_parts[0].parts)
    ids = [
        (r, lumi, e)
        for part in (a, b)
        for r, lumi, e in zip(part["run"], part["luminosityBlock"], part["event"], strict=True)
    ]
    assert len(set(ids)) == 31
    assert sorted(e for _, _, e in ids) == list(range(1, 32))  # numbered 1 to 31 as one file would be
    assert {lumi for _, lumi, _ in ids} == {8}
    # independent random streams: no event of one part repeats in the other
    assert not np.intersect1d(a["GenPart_pt"], b["GenPart_pt"]).size


def test_other_jobs_or_seed_give_other_parts(tmp_path: Path, two_parts) -> None:
    stats = generate_ttbar(tmp_path / "tt.root", events=31, seed=9, jobs=2, pileup=NO_PILEUP, progress=False)
    assert not np.array_equal(_read(stats.parts[0])["GenPart_pt"], _read(two_parts[0].parts[0])["GenPart_pt"])


def test_pileup_reaches_the_workers(tmp_path: Path) -> None:
    stats = generate_ttbar(
        tmp_path / "pu.root",
        events=12,
        seed=3,
        jobs=2,
        pileup=PileupProfile(mean=20.0, spread=0.0),
        progress=False,
    )
    n_pu = np.concatenate([_read(p)["Pileup_nPU"] for p in stats.parts])
    true = np.concatenate([_read(p)["Pileup_nTrueInt"] for p in stats.parts])
    assert (true == 20.0).all()
    assert 10 < n_pu.mean() < 30


def failing_worker(part: Part, report: Any) -> dict[str, float]:
    """A worker whose second part fails after writing some of its file (importable: spawned)."""
    part.tmp.write_bytes(b"half a file")
    if part.index == 1:
        raise RuntimeError("Pythia initialisation failed\nsecond line of detail")
    return {"pythia": 0.0, "detector": 0.0}


def dying_worker(part: Part, report: Any) -> dict[str, float]:
    """A worker process that is killed (as by the OOM killer) in the middle of its part."""
    if part.index == 0:
        os._exit(137)
    return {"pythia": 0.0, "detector": 0.0}


@pytest.mark.parametrize(
    ("worker", "cause"),
    [
        (
            failing_worker,
            "generation part 2 of 2 (x_001.root, events 3-4) failed: "
            "RuntimeError: Pythia initialisation failed; no file was written",
        ),
        (
            dying_worker,
            "generation part 1 of 2 (x_000.root, events 1-2) failed: "
            "the worker died (exit code 137); no file was written",
        ),
    ],
)
def test_a_failing_worker_leaves_no_file(tmp_path: Path, worker, cause: str) -> None:
    with pytest.raises(HepflowError) as err:
        generate_parts(tmp_path / "x.root", events=4, seed=1, jobs=2, progress=False, worker=worker)
    assert str(err.value) == cause
    assert list(tmp_path.iterdir()) == []


def test_existing_parts_are_kept(tmp_path: Path) -> None:
    (tmp_path / "x_001.root").write_text("keep me")
    with pytest.raises(OutputError, match=r"x_001\.root exists; pass --overwrite"):
        generate_ttbar(tmp_path / "x.root", events=4, jobs=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_001.root"]
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


@pytest.mark.parametrize(("jobs", "message"), [(0, "got 0"), (5, "between 1 and events \\(4\\), got 5")])
def test_bad_jobs(tmp_path: Path, jobs: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_ttbar(tmp_path / "x.root", events=4, jobs=jobs, progress=False)


def test_part_names_and_sizes() -> None:
    assert [p.name for p in part_paths("/d/s.root", 2)] == ["s_000.root", "s_001.root"]
    assert part_paths("s.root", 1001)[-1].name == "s_1000.root"
    assert part_sizes(7, 7) == [1] * 7
    assert sum(part_sizes(100_003, 16)) == 100_003


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hepflow.cli import main

    out = tmp_path / "cli.root"
    argv = ["generate", "ttbar", "--events", "6", "--jobs", "2", "--pileup", "0", "--output", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    assert (
        f"wrote 6 events to 2 files {tmp_path / 'cli_000.root'} ... cli_001.root" in capsys.readouterr().out
    )
    assert main([*argv, "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"hepflow: error: {tmp_path / 'cli_000.root'} exists; pass --overwrite to replace it"
    )
    assert main(["generate", "ttbar", "--events", "6", "--jobs", "7", "--output", str(out)]) == 2
    assert "jobs must be between 1 and events (6), got 7" in capsys.readouterr().err
