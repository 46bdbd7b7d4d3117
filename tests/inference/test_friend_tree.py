"""Friend trees of ``hepflow infer neutrino --friend``: one entry per input event, aligned with the
input ``Events`` tree for several files and many small chunks, missing values for the events not
selected, readable with uproot as the README shows; bad inputs refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.cli import main
from hepflow.errors import InputError, OutputError
from hepflow.neutrino.inference import INFERENCE_COLUMNS
from hepflow.outputs import write_parquet
from hepflow.outputs.friend import FRIEND_TREE, ID_BRANCHES, friend_path, write_friends
from tests.conftest import write_nanoaod_subset
from tests.inference.test_coffea_wrapper import python_blocks

ROOT = Path(__file__).resolve().parents[2]
#: columns that do not depend on the posterior noise (the same in every chunking, up to the
#: float32 rounding of the regression network in batches of another size)
DETERMINISTIC = ("quad_pz", "quad_pz_alt", "quad_is_complex", "ff_pz", "mw_quad", "mw_ff")


def _infer(models: Path, inputs: list[Path], out: Path, *options: str) -> int:
    args = ["infer", "neutrino", "--model", str(models), "--input", *map(str, inputs)]
    return main([*args, "--output", str(out), "--samples", "4", "--no-progress", *options])


@pytest.fixture(scope="module")
def inputs(nano_v12, tmp_path_factory) -> list[Path]:
    """The v12 sample and its first 130 entries: two files of different lengths."""
    d = tmp_path_factory.mktemp("friend_inputs")
    return [nano_v12, write_nanoaod_subset(nano_v12, d / "first130.root", entry_stop=130)]


@pytest.fixture(scope="module")
def chunked(tiny_models, inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("friend") / "inf"
    # several chunks per file (each chunk reopens the real NanoAOD file: ~0.3 s)
    assert _infer(tiny_models, inputs, out, "--friend", "--chunksize", "47") == 0
    return out


def _rows(out: Path, source: Path) -> ak.Array:
    """The selected-events output of one input file, in entry order."""
    chunks = json.loads((out / "run.json").read_text())["chunks"]
    stems = sorted(
        (info["entrystart"], stem) for stem, info in chunks.items() if info["filename"] == str(source)
    )
    return ak.concatenate([ak.from_parquet(out / f"{stem}.parquet") for _, stem in stems])


def test_friend_entries_are_the_input_events_for_every_file_and_chunk(chunked, inputs):
    for source in inputs:
        events = uproot.open(source)["Events"].arrays(list(ID_BRANCHES), library="np")
        friend = uproot.open(friend_path(chunked, "ttbar", str(source)))[FRIEND_TREE]
        assert friend.num_entries == uproot.open(source)["Events"].num_entries
        got = friend.arrays(library="np")
        for name in ID_BRANCHES:  # entry i is input event i
            np.testing.assert_array_equal(got[name], events[name])
        rows = _rows(chunked, source)
        selected = got["selected"]
        assert selected.sum() == len(rows) > 0
        # the selected entries are the output rows, in order, with the same values
        np.testing.assert_array_equal(got["event"][selected], ak.to_numpy(rows.event))
        for name in INFERENCE_COLUMNS:
            np.testing.assert_array_equal(got[name][selected], ak.to_numpy(rows[name]))
        # the others are missing: NaN for floats (samples included), false for flags
        assert got["flow_pz"].shape == (len(selected), 4)
        assert np.isnan(got["flow_pz"][~selected]).all()
        assert np.isnan(got["flow_pz_median"][~selected]).all()
        assert not got["quad_is_complex"][~selected].any()
        assert np.isfinite(got["flow_pz_median"][selected]).all()
    assert uproot.open(friend_path(chunked, "ttbar", str(inputs[0])))[FRIEND_TREE].num_entries == 200


def test_friend_does_not_depend_on_the_chunking(chunked, tiny_models, inputs, tmp_path):
    assert _infer(tiny_models, inputs, tmp_path / "one", "--friend") == 0
    for source in inputs:
        small, whole = (
            uproot.open(friend_path(out, "ttbar", str(source)))[FRIEND_TREE].arrays(library="np")
            for out in (chunked, tmp_path / "one")
        )
        for name in ("selected", *ID_BRANCHES, *DETERMINISTIC):
            np.testing.assert_allclose(small[name], whole[name], rtol=1e-6)


def test_readme_friend_example(chunked, nano_v12, capsys):
    (block,) = python_blocks(ROOT / "README.md", "### Attaching the posterior to your ntuple")
    namespace = {"ntuple": str(nano_v12), "friend_file": str(friend_path(chunked, "ttbar", str(nano_v12)))}
    exec(compile(block, "<README example>", "exec"), namespace)
    assert len(namespace["selected"]) == 52  # the sample's selected events
    assert np.isfinite(ak.to_numpy(namespace["selected"].pz)).all()


def test_friend_files_are_printed(tiny_models, inputs, tmp_path, capsys):
    assert _infer(tiny_models, inputs[1:], tmp_path / "inf", "--friend") == 0
    assert f"friend tree of {inputs[1]}: {friend_path(tmp_path / 'inf', 'ttbar', str(inputs[1]))}" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--maxchunks", "1"), "--friend needs every entry of each input file: drop --maxchunks 1"),
        (("--format", "root"), "--friend is built from the parquet chunks: add --format parquet"),
    ],
    ids=["maxchunks", "root only"],
)
def test_friend_refuses_partial_runs_before_processing(
    tiny_models, inputs, tmp_path, capsys, options, message
):
    assert _infer(tiny_models, inputs, tmp_path / "inf", "--friend", *options) == 2
    assert capsys.readouterr().err.strip() == f"hepflow: error: {message}"
    assert not (tmp_path / "inf").exists()


# -- write_friends on hand-made chunks ------------------------------------------------------------


def _source(path: Path, events: list[int]) -> Path:
    n = len(events)
    with uproot.recreate(path) as fout:
        fout["Events"] = {
            "run": np.ones(n, np.uint32),
            "luminosityBlock": np.ones(n, np.uint32),
            "event": np.asarray(events, np.uint64),
        }
    return path


def _chunk(directory: Path, source: Path, start: int, stop: int, events: list[int]) -> dict:
    info = {"dataset": "d", "filename": str(source), "entrystart": start, "entrystop": stop}
    stem = f"d__{source.stem}__{start}-{stop}"
    n = len(events)
    rows = {"run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32), "event": events}
    write_parquet(ak.zip({**rows, "x": np.arange(n, dtype=np.float32) + 1.0}), directory / f"{stem}.parquet")
    return {stem: info}


def test_write_friends_places_rows_by_their_identifiers(tmp_path):
    source = _source(tmp_path / "in.root", [10, 11, 12, 13, 14])
    chunks = {**_chunk(tmp_path, source, 3, 5, [14]), **_chunk(tmp_path, source, 0, 3, [10, 12])}
    (friend,) = write_friends(chunks, tmp_path, columns=["x"]).values()
    got = uproot.open(friend)[FRIEND_TREE].arrays(library="np")
    assert got["event"].tolist() == [10, 11, 12, 13, 14]
    assert got["selected"].tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(got["x"], [1.0, np.nan, 2.0, np.nan, 1.0])


def test_write_friends_refuses_chunks_that_miss_entries(tmp_path):
    source = _source(tmp_path / "in.root", [10, 11, 12])
    with pytest.raises(OutputError, match=r"in.root: the processed chunks \(0-2\) do not tile its 3 entries"):
        write_friends(_chunk(tmp_path, source, 0, 2, [10]), tmp_path, columns=["x"])
    assert not list(tmp_path.glob("*_friend.root"))


def test_write_friends_refuses_rows_of_other_events(tmp_path):
    source = _source(tmp_path / "in.root", [10, 11, 12])
    with pytest.raises(OutputError, match=r"in.root entries 0-3: the chunk's rows are not among"):
        write_friends(_chunk(tmp_path, source, 0, 3, [10, 99]), tmp_path, columns=["x"])
    assert not list(tmp_path.glob("*_friend.root"))


def test_write_friends_refuses_repeated_identifiers(tmp_path):
    source = _source(tmp_path / "in.root", [10, 10, 12])
    with pytest.raises(InputError, match=r"in.root entries 0-3: run/luminosityBlock/event repeat"):
        write_friends(_chunk(tmp_path, source, 0, 3, [10]), tmp_path, columns=["x"])
