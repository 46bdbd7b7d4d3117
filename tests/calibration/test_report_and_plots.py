"""calibration_report and the plot functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hepflow.calibration import (
    calibration_report,
    expected_coverage,
    plot_coverage,
    plot_rank_histograms,
    plot_tarp,
    simulation_based_calibration,
    tarp,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_report_is_json_and_consistent(problem, tmp_path):
    samples = problem.samples()
    rep = calibration_report(problem.theta, samples, ["mu", "sigma"], plot_dir=tmp_path)
    again = json.loads(json.dumps(rep))
    assert again == rep
    assert rep["n_observations"] == problem.theta.shape[0]
    assert rep["names"] == ["mu", "sigma"]
    assert set(rep["coverage"]) == {"0.68", "0.95"}
    assert rep["coverage"]["0.68"]["mu"] == pytest.approx(0.68, abs=0.03)
    assert len(rep["coverage_curve"]["levels"]) == len(rep["coverage_curve"]["coverage"]["sigma"])
    assert all(p > 1e-3 for p in rep["sbc"]["ks_pvalue"].values())
    assert abs(rep["tarp"]["atc"]) < 0.01
    for path in rep["plots"].values():
        assert _is_png(tmp_path / path.split("/")[-1])


def test_report_flags_overconfidence(problem):
    rep = calibration_report(problem.theta, problem.samples(width=0.5))
    assert rep["names"] == ["theta_0", "theta_1"]
    assert all(c < 0.5 for c in rep["coverage"]["0.68"].values())
    assert all(p < 1e-6 for p in rep["sbc"]["chi2_pvalue"].values())
    assert rep["tarp"]["atc"] < -0.03


def test_report_rejects_wrong_names(problem):
    with pytest.raises(ValueError, match=r"names has 1 entries \['a'\] but the samples have d = 2"):
        calibration_report(problem.theta, problem.samples(), ["a"])


def test_plots_write_png_and_pdf(problem, tmp_path):
    samples = problem.samples(width=0.7)
    sbc = simulation_based_calibration(problem.theta, samples)
    p = plot_rank_histograms(sbc.ranks, sbc.n_samples, tmp_path / "ranks.png", names=["a", "b"], pdf=True)
    assert p == tmp_path / "ranks.png"
    assert _is_png(p)
    assert (tmp_path / "ranks.pdf").stat().st_size > 0
    curve = expected_coverage(
        problem.theta,
        samples,
        log_prob_true=problem.log_prob(problem.theta, width=0.7),
        log_prob_samples=problem.log_prob(samples, width=0.7),
    )
    p = plot_coverage(
        curve.levels, curve.coverage, tmp_path / "sub" / "coverage", n_obs=curve.n_obs, hpd=curve.hpd
    )
    assert p == tmp_path / "sub" / "coverage.png"
    assert _is_png(p)
    t = tarp(problem.theta, samples)
    assert _is_png(plot_tarp(t.alpha, t.ecp, tmp_path / "tarp.png", atc=t.atc, ks_pvalue=t.ks_pvalue))
    with pytest.raises(ValueError, match=r"levels \(L,\) and coverage \(L, d\)"):
        plot_coverage(np.linspace(0, 1, 5), np.zeros((4, 2)), tmp_path / "x.png")
