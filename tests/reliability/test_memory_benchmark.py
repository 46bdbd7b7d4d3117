"""The streaming memory benchmark's machinery on a small input (the 10^6-event run is manual).

``benchmarks/memory_stream.py`` builds a large file by copying a NanoAOD tree repeatedly and
measures the resident memory after every chunk; the figures are in docs/failures.md.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

from hepflow.processing import collect_previous_chunks
from tests.conftest import load_benchmark, write_nanoaod_subset


def test_stream_file_and_per_chunk_memory(nano_v12, tmp_path):
    bench = load_benchmark("memory_stream")
    source = write_nanoaod_subset(nano_v12, tmp_path / "source.root")
    target = bench.build_stream_file(source, tmp_path / "stream.root", 450)  # 2 copies and a quarter
    tree = uproot.open(target)["Events"]
    assert tree.num_entries == 450
    assert {"nJet", "Jet_pt", "MET_pt", "GenPart_pdgId"} <= set(tree.keys())
    events = tree["event"].array(library="np")
    assert len(np.unique(events)) == 450
    src = uproot.open(source)["Events"]
    np.testing.assert_array_equal(
        ak.to_numpy(ak.flatten(tree["Jet_pt"].array(entry_start=200, entry_stop=400))),
        ak.to_numpy(ak.flatten(src["Jet_pt"].array())),
    )

    info = bench.child("features", [str(target)], 100, 0, "", str(tmp_path / "out"))
    assert info["events"] == 450
    assert info["chunks"] == len(info["rss_mb_per_chunk"]) >= 4
    assert 52 * 2 <= info["rows"] <= 52 * 3
    assert info["peak_rss_mb"] >= max(info["rss_mb_per_chunk"]) > 0


def test_collect_previous_chunks_is_throttled():
    assert collect_previous_chunks(interval=0.0)
    assert not collect_previous_chunks(interval=1e9)


def test_peak_rss_is_at_least_every_observed_rss():
    bench = load_benchmark("memory_stream")
    current = bench._rss()
    assert bench._peak_rss() > 0
    assert bench._peak_rss(current) >= current
    assert bench._peak_rss(current, 2**50) == 2**50  # an observation above the kernel's mark wins
