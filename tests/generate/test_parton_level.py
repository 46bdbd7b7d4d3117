"""benchmarks/ttbar_parton_level.py: the parton-level ttbar of a generated sample and of the CMS
samples, the origin of the b-jet multiplicity that the domain-shift check flags (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TTBAR_HELDOUT, load_benchmark


@pytest.mark.generation
def test_parton_level_of_a_generated_sample(ttbar_file) -> None:
    bench = load_benchmark("ttbar_parton_level")
    values = bench.parton_level(ttbar_file)
    events = TTBAR_HELDOUT[0]
    assert len(values["n_bgenjet"]) == events
    assert len(values["top_pt"]) == 2 * events  # a top and an antitop in every event
    # a b quark from nearly every top decay (|V_tb|^2 ~ 0.998; the rest go to d or s)
    assert 2 * events - 3 <= len(values["b_pt"]) <= 2 * events
    assert len(values["b_eta"]) == len(values["b_pt"])
    s = bench.summarize(values)
    assert 80 < s["top_pt_median"] < 140
    assert 40 < s["b_pt_median"] < 90
    assert 0.8 < s["b_central"] < 1.0
    assert 1.0 < s["n_bgenjet"] < 2.2


def test_the_cms_v12_sample_has_harder_more_central_tops_than_cms_v15(capsys) -> None:
    """The measurement docs/detector.md reports: the two CMS ttbar simulations at 13.6 TeV differ
    at parton level (v12 harder, its b quarks more central), so the v12 file's nbjet excess is a
    property of its events."""
    bench = load_benchmark("ttbar_parton_level")
    table = bench.main([])
    v12, v15 = table["CMS v12 (semileptonic)"], table["CMS v15 (all-hadronic)"]
    assert v12["events"] == v15["events"] == 200
    assert v12["top_pt_median"] > v15["top_pt_median"] + 15
    assert v12["b_central"] - v15["b_central"] > 3 * np.hypot(v12["b_central_se"], v15["b_central_se"])
    assert v12["n_bgenjet"] - v15["n_bgenjet"] > 3 * np.hypot(v12["n_bgenjet_se"], v15["n_bgenjet_se"])
    out = capsys.readouterr().out
    assert "| CMS v12 (semileptonic) | 200 | 129 | 81 |" in out
    line = next(x for x in out.splitlines() if "CMS v12 (semileptonic) vs CMS v15 (all-hadronic): " in x)
    p_top, p_b = (float(p) for p in line.split(": ")[1].split(", "))
    assert p_top < 1e-4
    assert p_b < 1e-4
