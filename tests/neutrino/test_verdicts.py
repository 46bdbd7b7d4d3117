"""Verdict lines of a neutrino report: direction, winner, ratio, ties, calibration flags."""

from __future__ import annotations

from hepflow.neutrino.verdicts import report_verdicts


def _res(iqr: float, rms: float, bias: float, xy_rms: float = 20.0) -> dict:
    return {
        "pz": {"iqr_width": iqr, "rms": rms, "bias": bias},
        "px": {"iqr_width": xy_rms, "rms": xy_rms, "bias": 0.0},
        "py": {"iqr_width": xy_rms, "rms": xy_rms, "bias": 0.0},
    }


REPORT = {
    "events": 1000,
    "resolution": {
        "all": {
            "quad": _res(50.0, 124.0, 1.0, xy_rms=30.0),
            "flow_peak": _res(59.5, 119.0, 3.0, xy_rms=35.0),
            "flow_median": _res(66.2, 108.0, -0.5, xy_rms=31.0),
            "flow_mode": _res(70.0, 130.0, 5.0, xy_rms=40.0),
            "ff": _res(80.0, 101.0, 0.2),
        }
    },
    "calibration": {
        "coverage": {
            "0.68": {"px": 0.69, "py": 0.67, "pz": 0.637},
            "0.95": {"px": 0.95, "py": 0.94, "pz": 0.93},
        },
        "sbc": {"ks_pvalue": {"px": 0.4, "py": 0.2, "pz": 0.0002}},
    },
}


def test_derived_verdicts_name_direction_winner_and_ratio() -> None:
    lines = report_verdicts(REPORT)
    assert lines[0] == (
        "pz core width (IQR/1.349, lower is better): "
        "quadratic 50.0 GeV beats cINN marginal peak 59.5 GeV by 1.19x"
    )
    # the best cINN estimate per metric: the median for the RMS (108 < 119 < 130)
    assert "pz RMS (RMS, lower is better): cINN median 108.0 GeV beats quadratic 124.0 GeV by 1.15x" in lines
    assert (
        "pz bias (mean residual, closer to 0 is better): cINN median -0.5 +- 3.4 GeV, "
        "quadratic +1.0 +- 3.9 GeV: a tie" in lines
    )
    assert "px (RMS, lower is better): MET 30.0 GeV beats cINN median 31.0 GeV by 1.03x" not in lines  # a tie
    assert any(
        line.startswith("px (RMS, lower is better): MET 30.0 GeV, cINN median 31.0 GeV: a tie")
        for line in lines
    )
    cov68 = next(line for line in lines if "68% intervals" in line)
    assert "pz 0.637 (off)" in cov68
    assert "px 0.690 (ok)" in cov68
    sbc = next(line for line in lines if line.startswith("SBC"))
    assert "flagged: pz 0.0002" in sbc


def test_a_small_sample_calls_close_results_a_tie() -> None:
    small = {**REPORT, "events": 49}
    line = report_verdicts(small)[0]
    assert (
        "a tie (ratio 1.19, within +-47%, twice the statistical uncertainty of a ratio from 49 events)"
        in line
    )


def test_a_bias_beyond_its_uncertainty_wins() -> None:
    res = {m: _res(50.0, 100.0, b) for m, b in (("quad", 12.0), ("flow_median", 1.0))}
    line = next(v for v in report_verdicts({"events": 1000, "resolution": {"all": res}}) if "bias" in v)
    assert line.endswith("cINN median +1.0 +- 3.2 GeV, quadratic +12.0 +- 3.2 GeV: cINN median is closer")


def test_the_reports_own_verdicts_win() -> None:
    assert report_verdicts({**REPORT, "verdicts": ["CRPS of pz (lower is better): cINN wins"]}) == [
        "CRPS of pz (lower is better): cINN wins"
    ]
