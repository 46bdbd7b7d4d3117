"""Atomic writers, columnar round trips and chunk names."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.errors import InputError, OutputError
from hepflow.outputs import ChunkId, atomic_write, read_parquet_dir, write_json, write_parquet, write_root
from hepflow.outputs.atomic import clean_stale_temporaries


def _columns() -> ak.Array:
    return ak.Array(
        {
            "event": np.array([1, 2, 3], dtype=np.uint64),
            "x": np.array([1.0, 2.0, 3.0], dtype=np.float32),
            "jet_px": [[1.0, 2.0], [], [3.0]],
            "jet_btag": [[1, 0], [], [1]],
            "truth": [1.5, None, 2.5],
            "flag": [1, None, 0],
        }
    )


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"

    def killed_mid_write() -> None:
        with atomic_write(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        killed_mid_write()
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_overwrite(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"a": 1})
    with pytest.raises(OutputError, match=r"a\.json exists"), atomic_write(target, overwrite=False):
        pass


def test_stale_temporaries_are_cleaned(tmp_path):
    (tmp_path / ".hepflow-tmp-abc.parquet").write_text("x")
    (tmp_path / "keep.parquet").write_text("x")
    assert len(clean_stale_temporaries(tmp_path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.parquet"]


def test_parquet_round_trip_keeps_missing_values(tmp_path):
    write_parquet(_columns(), tmp_path / "a.parquet")
    back = read_parquet_dir(tmp_path)
    assert back.to_list() == _columns().to_list()


def test_root_round_trip(tmp_path):
    write_root(_columns(), tmp_path / "a.root")
    tree = uproot.open(tmp_path / "a.root")["Events"]
    assert tree.num_entries == 3
    arrays = tree.arrays()
    np.testing.assert_array_equal(arrays.n_jet, [2, 0, 1])
    assert arrays.jet_px.to_list() == [[1.0, 2.0], [], [3.0]]
    assert arrays.truth_valid.to_list() == [True, False, True]
    assert np.isnan(arrays.truth[1])
    assert tree["truth"].typename == "double"
    assert tree["x"].typename == "float"
    assert arrays.flag.to_list() == [1, 0, 0]


def test_root_empty_array(tmp_path):
    write_root(_columns()[:0], tmp_path / "e.root")
    assert uproot.open(tmp_path / "e.root")["Events"].num_entries == 0


def test_read_parquet_dir_errors(tmp_path):
    with pytest.raises(InputError, match="no parquet files"):
        read_parquet_dir(tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"bad\.parquet"):
        read_parquet_dir(tmp_path)


def test_chunk_names_are_unique_and_safe():
    a = ChunkId("tt bar", "/x/nano 1.root", 0, 100).stem
    b = ChunkId("tt bar", "/y/nano 1.root", 0, 100).stem
    assert a != b
    assert " " not in a
    assert a.endswith("__0-100")


def test_outputs_get_normal_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "p.json", {})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_root_fixed_size_arrays(tmp_path):
    samples = np.arange(12, dtype=np.float32).reshape(3, 4)
    array = ak.zip(
        {"flow_px": samples, "flow_px_mode": samples[:, 0], "jet_px": [[1.0], [], [2.0, 3.0]]}, depth_limit=1
    )
    write_root(array, tmp_path / "f.root")
    tree = uproot.open(tmp_path / "f.root")["Events"]
    assert tree["flow_px"].typename == "float[4]"
    np.testing.assert_array_equal(tree["flow_px"].array(library="np"), samples)
