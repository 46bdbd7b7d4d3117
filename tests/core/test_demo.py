"""``hepflow demo`` end to end on a tiny sample."""

from __future__ import annotations

import pytest

from hepflow.cli import main

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")


@pytest.mark.generation
def test_demo_runs_and_reports(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path), "--events", "300", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "hepflow demo: outputs in" in out
    assert (tmp_path / "ttbar_generated.root").is_file()
    assert (tmp_path / "features" / "cutflow.json").is_file()
    assert list((tmp_path / "features").glob("ttbar_generated__*.parquet"))
