"""The optional merge step: complete chunks of a run into one file."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import pytest
import uproot

from hepflow.errors import ConfigError, InputError, OutputError
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, merge_chunks, run_processor

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "nano_tt_v12.root"


@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merge") / "features"
    cfg = RunConfig(chunksize=60, progress=False)
    result = run_processor(NeutrinoFeatureProcessor(), build_fileset([SAMPLE]), out, cfg)
    assert len(result["chunks"]) > 2
    return out


def test_merge_keeps_every_complete_chunk_in_order(chunks, tmp_path):
    n = merge_chunks(chunks, tmp_path / "all.parquet")
    merged = ak.from_parquet(tmp_path / "all.parquet")
    reference = read_parquet_dir(chunks)
    assert n == len(merged) == len(reference) > 0
    assert merged.to_list() == reference.to_list()
    assert merge_chunks(chunks, tmp_path / "all.root") == n
    with uproot.open(tmp_path / "all.root") as f:
        assert f["Events"].num_entries == n
    with pytest.raises(OutputError, match=r"all\.parquet exists"):
        merge_chunks(chunks, tmp_path / "all.parquet")
    assert merge_chunks(chunks, tmp_path / "all.parquet", overwrite=True) == n


def test_merge_refuses_incomplete_runs(chunks, tmp_path):
    """A chunk whose marker is missing, or a run without run.json (killed), is not merged."""
    work = tmp_path / "copy"
    work.mkdir()
    for f in chunks.iterdir():
        (work / f.name).write_bytes(f.read_bytes())
    marker = sorted(work.glob("*__*.json"))[0]
    marker.unlink()
    with pytest.raises(InputError, match=f"lists {marker.name}, which is missing"):
        merge_chunks(work, tmp_path / "m.parquet")
    (work / "run.json").unlink()
    with pytest.raises(InputError, match="did not finish"):
        merge_chunks(work, tmp_path / "m.parquet")


def test_merge_refuses_bad_targets(chunks, tmp_path):
    with pytest.raises(ConfigError, match="lies in the chunk directory"):
        merge_chunks(chunks, chunks / "merged.parquet")
    with pytest.raises(ConfigError, match=r"must end in \.parquet or \.root"):
        merge_chunks(chunks, tmp_path / "merged.csv")
    with pytest.raises(InputError, match="no complete chunks"):
        merge_chunks(tmp_path, tmp_path.parent / "empty.parquet")


def test_merge_command(chunks, tmp_path, capsys):
    from hepflow.cli import main

    assert main(["merge", str(chunks), str(tmp_path / "m.parquet")]) == 0
    assert f"merged {len(read_parquet_dir(chunks))} rows" in capsys.readouterr().out
    assert main(["merge", str(chunks), str(tmp_path / "m.parquet")]) == 2  # exists: one-line error
    assert "exists" in capsys.readouterr().err


def test_merge_ignores_temporaries_of_a_killed_run(chunks, tmp_path):
    from hepflow.outputs.atomic import TMP_PREFIX

    stale = chunks / f"{TMP_PREFIX}abc.json"
    stale.write_text("{")  # half-written marker of a killed run
    try:
        assert merge_chunks(chunks, tmp_path / "m.parquet") == len(read_parquet_dir(chunks))
    finally:
        stale.unlink()
