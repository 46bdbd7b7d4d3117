"""``hepflow demo`` end to end on a tiny sample."""

from __future__ import annotations

import pytest

from hepflow.cli import main

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")


@pytest.mark.generation
def test_demo_runs_and_reports(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--events", "700", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "hepflow demo: outputs in" in out
    for step in ("generate ttbar", "process neutrino", "train neutrino", "infer neutrino", "report neutrino"):
        assert step in out
    assert (tmp_path / "features_train" / "cutflow.json").is_file()
    assert (tmp_path / "models" / "flow" / "model.safetensors").is_file()
    assert list((tmp_path / "inference_cms_nanoaodv12").glob("*.root"))
    assert (tmp_path / "report" / "report.json").is_file()
    assert (tmp_path / "report" / "posterior_displays.png").is_file()
