"""`hepflow report neutrino`: scores of whole posteriors, downstream observables and verdicts.

The report runs on the real CMS NanoAODv12 sample inferred with the tiny models of
``tests/conftest.py`` (49 events with a truth neutrino, 64 samples each)."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from hepflow.calibration import calibration_report
from hepflow.neutrino.downstream import M_TOP, observables
from hepflow.neutrino.quadratic import M_W
from hepflow.neutrino.report import make_report
from hepflow.neutrino.verdicts import calibration_warnings, compare
from hepflow.outputs import read_parquet_dir

K = 64


@pytest.fixture(scope="module")
def inferred(tiny_models: Path, nano_v12: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor
    from hepflow.processing import RunConfig, build_fileset, run_processor

    out = tmp_path_factory.mktemp("report_metrics") / "inf"
    run_processor(
        NeutrinoInferenceProcessor(tiny_models, samples=K),
        build_fileset([nano_v12]),
        out,
        RunConfig(progress=False),
    )
    return out


@pytest.fixture(scope="module")
def report(inferred: Path) -> tuple[dict, Path]:
    out = inferred.parent / "report"
    return make_report(inferred, out, n_displays=3), out


def _finite(tree: object) -> bool:
    if isinstance(tree, dict):
        return all(_finite(v) for v in tree.values())
    return bool(np.isfinite(tree))


def test_report_has_scores_downstream_and_verdicts(report):
    rep, out = report
    assert rep["events"] == 49
    scores = rep["scores"]
    for c in ("px", "py", "pz"):
        assert set(scores["crps"][c]) == {"flow", "quad", "quad_mixture", "ff"}
    assert set(scores["energy"]) == {"flow", "quad", "quad_mixture", "ff"}
    assert _finite(scores)
    # px, py of the quadratic are MET for both roots: the mixture is the point
    assert scores["crps"]["px"]["quad_mixture"] == pytest.approx(scores["crps"]["px"]["quad"])
    # the energy score is at least each component's CRPS (a norm >= each |component|, per event)
    for m in ("quad", "ff"):
        assert scores["energy"][m] >= max(scores["crps"][c][m] for c in ("px", "py", "pz"))
    down = rep["downstream"]
    assert "unavailable" not in down
    for key in ("resolution", "crps", "wasserstein", "median"):
        assert set(down[key]) == {"m_w", "m_top", "m_ttbar"}
        assert _finite(down[key])
    assert down["events_with_truth"]["m_top"] == 49
    # the true neutrino reconstructs the parton W mass to the lepton resolution
    assert down["resolution"]["m_w"]["nu_true"]["iqr_width"] < 5
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["verdicts"] == rep["verdicts"]
    lines = rep["verdicts"]
    assert any(line.startswith("pz CRPS (lower is better): flow") for line in lines)
    assert any(line.startswith("m(l nu b) spectrum, Wasserstein distance to the truth") for line in lines)
    assert all(("better than" in v or "worse than" in v or "a tie" in v) for v in lines if "lower is" in v)
    # every comparison carries its paired-bootstrap uncertainty
    assert all("+-" in v for v in lines if "lower is" in v)
    se = scores["se_log_ratio"]
    for c in ("px", "py", "pz"):
        assert set(se["crps"][c]) == {"quad", "quad_mixture", "ff"}
    assert all(0 < se["energy"][m] < 1 for m in ("quad", "quad_mixture", "ff"))
    for o in ("m_w", "m_top", "m_ttbar"):
        assert 0 < down["se_log_ratio"][o]["wasserstein"] < 2
    assert set(rep["paired_se"]["pz_residual"]) == {"flow_mode", "flow_peak", "flow_median"}
    assert lines[-1].startswith(("calibration OK", "CALIBRATION WARNING"))
    for plot in ("downstream_spectra.png", "w_mass.png", "residual_pz.png", "posterior_displays.png"):
        assert (out / plot).stat().st_size > 10_000


def test_cli_prints_scores_and_verdicts(report, inferred, tmp_path, capsys):
    from hepflow.cli import main

    assert main(["report", "neutrino", "--input", str(inferred), "--output", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "CRPS pz" in printed
    assert "energy score" in printed
    assert "m(l nu + 4 jets)" in printed
    rep, _ = report
    for line in rep["verdicts"]:
        assert line in printed


def test_pz_scores_by_hand(report, inferred):
    """The report's pz CRPS of the quadratic point and of the two-root mixture, computed here
    from the closed form of a two-point mixture."""
    rep, _ = report
    cols = read_parquet_dir(inferred)
    cols = cols[~ak.is_none(cols.nu_pz_true)]
    t = ak.to_numpy(cols.nu_pz_true).astype(np.float64)
    a, b = (ak.to_numpy(cols[k]).astype(np.float64) for k in ("quad_pz", "quad_pz_alt"))
    mixture = 0.5 * np.abs(a - t) + 0.5 * np.abs(b - t) - 0.25 * np.abs(a - b)
    assert rep["scores"]["crps"]["pz"]["quad"] == pytest.approx(np.abs(a - t).mean(), rel=1e-6)
    assert rep["scores"]["crps"]["pz"]["quad_mixture"] == pytest.approx(mixture.mean(), rel=1e-6)


def test_a_miscalibrated_posterior_is_flagged(inferred, tmp_path):
    """Flow samples squeezed to a tenth of their spread around the median: the report's verdicts
    say CALIBRATION WARNING (coverage far below the level, SBC ranks piled at the edges)."""
    cols = read_parquet_dir(inferred)
    squeezed = {}
    for c in ("px", "py", "pz"):
        s = ak.to_numpy(cols[f"flow_{c}"]).astype(np.float64)
        med = np.median(s, axis=1, keepdims=True)
        squeezed[f"flow_{c}"] = (med + 0.1 * (s - med)).astype(np.float32)
    fields = {f: (squeezed[f] if f in squeezed else cols[f]) for f in cols.fields}
    (tmp_path / "bad").mkdir()
    ak.to_parquet(ak.zip(fields, depth_limit=1), tmp_path / "bad" / "part-0.parquet")
    rep = make_report(tmp_path / "bad", tmp_path / "report", n_displays=1)
    warnings = [v for v in rep["verdicts"] if v.startswith("CALIBRATION WARNING")]
    assert any("pz coverage at 68% is" in w and "too narrow" in w for w in warnings)
    assert any("SBC ranks not uniform" in w for w in warnings)
    assert any("the coverages together fail their joint test" in w for w in warnings)


@pytest.mark.parametrize(("scale", "flagged"), [(1.0, False), (0.5, True), (2.5, True)])
def test_calibration_warnings_follow_the_binomial_band(scale, flagged):
    rng = np.random.default_rng(5)
    n = 2000
    theta = rng.normal(size=(n, 1))
    post = rng.normal(size=(n, 200, 1)) * scale
    lines = calibration_warnings(calibration_report(theta, post, ["x"], rng=1), n)
    assert any(line.startswith("CALIBRATION WARNING") for line in lines) is flagged
    if scale > 1:
        assert any("too wide (over-covers)" in line for line in lines)


def test_coverage_is_judged_against_what_the_sample_count_allows():
    """A calibrated posterior drawn 24 times per event: its central 95 % intervals from the
    samples hold the truth in 0.95 x 23/25 = 0.874 of the events, which the check expects when
    told the sample count, and flags as under-coverage when judged against 0.95 itself."""
    from hepflow.calibration.coverage import sampled_level

    rng = np.random.default_rng(8)
    n, k = 4000, 24
    theta = rng.normal(size=(n, 1))
    post = rng.normal(size=(n, k, 1))
    calib = calibration_report(theta, post, ["x"], rng=1)
    assert calib["coverage"]["0.95"]["x"] == pytest.approx(sampled_level(0.95, k), abs=0.015)
    # a report without the joint test (which knows the sample count) and without the count
    older = {k: v for k, v in calib.items() if k != "coverage_test"}
    naive = calibration_warnings(older, n)
    assert any("x coverage at 95% is" in line and "too narrow" in line for line in naive)
    assert calibration_warnings(calib, n, samples=k)[0].startswith("calibration OK")
    # a posterior half as wide is still flagged with the sample count
    narrow = calibration_report(theta, 0.5 * post, ["x"], rng=1)
    lines = calibration_warnings(narrow, n, samples=k)
    assert any("expected with 24 posterior samples per event" in line for line in lines)


def test_verdict_wording():
    assert compare("pz CRPS", {"flow": 48.7, "quadratic": 70.6}, unit="GeV").endswith(
        "flow better than quadratic by 31 %"
    )
    assert "no comparison" in compare("x", {"a": float("nan"), "b": 1.0})
    assert compare("x", {"a": 1.0, "b": 1.001}).endswith("a and b equal within 0.5 %")


def _decay(p_top: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Massless lepton, neutrino and b of t -> W b, W -> l nu with exact masses, boosted to p_top."""

    def two_body(m: float, m1: float, m2: float) -> tuple[np.ndarray, np.ndarray]:
        p = np.sqrt((m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2)) / (2 * m)
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        return np.r_[p * u, np.hypot(p, m1)], np.r_[-p * u, np.hypot(p, m2)]

    def boost(v: np.ndarray, parent: np.ndarray) -> np.ndarray:
        m = np.sqrt(parent[3] ** 2 - parent[:3] @ parent[:3])
        b = parent[:3] / parent[3]
        g = parent[3] / m
        bp = b @ v[:3]
        g2 = (g - 1) / (b @ b) if b @ b > 0 else 0.0
        return np.r_[v[:3] + g2 * bp * b + g * b * v[3], g * (v[3] + bp)]

    w, bq = two_body(M_TOP, M_W, 0.0)
    lep, nu = two_body(M_W, 0.0, 0.0)
    lep, nu = boost(lep, w), boost(nu, w)
    return tuple(boost(x, p_top) for x in (lep, nu, bq))


def test_downstream_masses_of_an_exact_top_decay():
    """Truth inputs give m_W and m_t exactly, the b jet is the tagged one that fits, m(ttbar)
    is the mass of everything; a point and a one-sample posterior give the same."""
    rng = np.random.default_rng(0)
    lep4, nu4, jets4, btag = [], [], [], []
    for _ in range(20):
        p = rng.normal(0, 150, 3)
        lep, nu, b = _decay(np.r_[p, np.sqrt(p @ p + M_TOP**2)], rng)
        others = [np.r_[q, np.linalg.norm(q) * 1.01] for q in rng.normal(0, 60, (3, 3))]
        lep4.append(lep)
        nu4.append(nu[:3])
        jets4.append([others[0], b, others[1], others[2]])
        btag.append([True, True, False, False])  # a tagged wrong jet competes with the right b
    lep4, nu4 = np.array(lep4), np.array(nu4)
    jets = {"p4": np.array(jets4), "btag": np.array(btag), "mask": np.ones((20, 4), bool)}
    m = observables(lep4, nu4, jets)
    np.testing.assert_allclose(m["m_w"], M_W, rtol=1e-9)
    np.testing.assert_allclose(m["m_top"], M_TOP, rtol=1e-9)
    total = lep4 + np.c_[nu4, np.linalg.norm(nu4, axis=1)] + jets["p4"].sum(axis=1)
    np.testing.assert_allclose(
        m["m_ttbar"], np.sqrt(total[:, 3] ** 2 - (total[:, :3] ** 2).sum(1)), rtol=1e-9
    )
    per_sample = observables(lep4, nu4[:, None, :], jets)
    np.testing.assert_allclose(per_sample["m_top"][:, 0], m["m_top"])


def test_downstream_masses_peak_near_mw_and_mt_with_the_true_neutrino(report):
    """On the CMS events, the reconstructed lepton, jets and the true neutrino: m(l nu) at m_W
    and m(l nu b) near m_t (jet resolution and b choice widen it)."""
    rep, _ = report
    median = rep["downstream"]["median"]
    assert median["m_w"]["nu_true"] == pytest.approx(M_W, abs=3)
    assert median["m_top"]["nu_true"] == pytest.approx(M_TOP, abs=15)
    assert median["m_top"]["truth"] == pytest.approx(M_TOP, abs=3)
    assert median["m_ttbar"]["truth"] > 2 * M_TOP


def test_report_without_parton_truth_says_so(inferred, tmp_path):
    """Inference outputs without the parton-truth columns (written before they existed): the
    downstream section says which columns are missing, and the verdicts repeat it."""
    cols = read_parquet_dir(inferred)
    keep = [f for f in cols.fields if not f.endswith("mass_true")]
    (tmp_path / "old").mkdir()
    ak.to_parquet(ak.zip({f: cols[f] for f in keep}, depth_limit=1), tmp_path / "old" / "part-0.parquet")
    rep = make_report(tmp_path / "old", tmp_path / "report", n_displays=1)
    assert "w_lep_mass_true" in rep["downstream"]["unavailable"]
    assert any(v.startswith("downstream observables: the inference outputs lack") for v in rep["verdicts"])


def _one_coverage_off(p_value: float) -> dict:
    return {
        "sbc": {},
        "coverage": {"0.68": {"px": 0.53, "py": 0.70}, "0.95": {"px": 0.94, "py": 0.94}},
        "coverage_test": {
            "statistic": 2.2,
            "worst": "px at 68%",
            "p_value": p_value,
            "exceed": round(p_value * 1001) - 1,
            "n_pseudo": 1000,
            "samples": 256,
        },
    }


def test_one_coverage_outside_two_sd_is_a_note_when_the_joint_test_passes():
    """49 events, six coverages: px at 68 % one event outside the band is what a calibrated
    posterior shows in a tenth of pseudo-experiments; the verdict says so, not a warning."""
    lines = calibration_warnings(_one_coverage_off(0.12), 49, samples=256)
    assert not any(line.startswith("CALIBRATION WARNING") for line in lines)
    assert lines[0].startswith("coverage note: px coverage at 68% is 0.530")
    assert "at least this large in 11.9% of 1000 pseudo-experiments" in lines[0]
    assert "no significant evidence of miscalibration" in lines[0]
    assert lines[-1].startswith("calibration OK")


def test_the_same_coverage_is_a_warning_when_the_joint_test_fails():
    lines = calibration_warnings(_one_coverage_off(0.004), 49, samples=256)
    assert lines[0].startswith("CALIBRATION WARNING: px coverage at 68% is 0.530")
    assert "too narrow" in lines[0]
    assert lines[-1].startswith("CALIBRATION WARNING: the coverages together fail their joint test")
    assert "joint p-value 0.004 < 0.05" in lines[-1]


def test_the_printed_joint_p_value_is_the_one_compared():
    """p = 50 / 1001 = 0.04995 prints as 0.050 and passes, rather than '0.05 < 0.05'; a
    p-value with no pseudo-experiment as extreme is printed as a bound."""
    calib = _one_coverage_off(50 / 1001)
    lines = calibration_warnings(calib, 49, samples=256)
    assert lines[0].startswith("coverage note")
    assert "joint p-value 0.050 >= 0.05" in lines[0]
    calib["coverage_test"].update(p_value=1 / 1001, exceed=0)
    lines = calibration_warnings(calib, 49)  # the number of draws from the joint test
    assert "joint p-value <= 0.001 < 0.05" in lines[-1]
    assert "expected with 256 posterior samples per event" in lines[0]


def test_a_real_overconfident_posterior_fails_the_joint_test():
    """Through calibration_report: a posterior 25 % too narrow on 300 events."""
    rng = np.random.default_rng(9)
    theta = rng.normal(size=(300, 3))
    calib = calibration_report(theta, 0.75 * rng.normal(size=(300, 128, 3)), ["px", "py", "pz"], rng=1)
    lines = calibration_warnings(calib, 300, samples=128)
    assert any("fail their joint test" in line for line in lines)
