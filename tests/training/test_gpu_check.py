"""The GPU check script (make gpu-check) runs end to end; here on the CPU with tiny sizes."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark


def test_gpu_check_trains_compares_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    gpu_check = load_benchmark("gpu_check")
    assert gpu_check.main(["--device", "cpu", "--n", "1500", "--epochs", "2", "--samples", "32"]) == 0
    out = capsys.readouterr().out
    assert "GPU check: all checks passed" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("neutrino", "cosmic"))]
    assert [r[0] for r in rows] == ["neutrino", "cosmic"]
    assert all(r[-1] == "ok" and float(r[-2]) == 0.0 for r in rows)  # CPU against CPU: identical
    assert any(line.startswith(("zuko", "FrEIA")) for line in out.splitlines())


def test_gpu_check_fails_when_device_and_cpu_disagree(capsys: pytest.CaptureFixture[str]) -> None:
    gpu_check = load_benchmark("gpu_check")
    args = ["--device", "cpu", "--n", "1200", "--epochs", "1", "--samples", "16", "--no-peers"]
    assert gpu_check.main([*args, "--atol", "-1"]) == 1  # no difference passes a negative tolerance
    assert "GPU check: FAILED for neutrino, cosmic" in capsys.readouterr().out
