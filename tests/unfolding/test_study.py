"""The unfolding study end to end on a small generated sample, with tiny flows: processing,
response, ensemble training, both methods, the prior study, the report and the script."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from hepflow.config import from_dict
from hepflow.errors import ConfigError, InputError, OutputError
from hepflow.unfolding.observables import OBSERVABLES
from hepflow.unfolding.report import CLOSURE_P, SCHEMA
from hepflow.unfolding.study import UnfoldingConfig, make_report, run_study
from tests.unfolding.conftest import SAMPLE_EVENTS

pytestmark = pytest.mark.generation

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "summary": {"set_width": 16, "set_heads": 2, "flat_embedding": 8, "jet_embedding": 8},
    "flow": {"depth": 2, "width": 16, "bins": 4},
    "training": {"epochs": 2, "batch_size": 64, "seed": 3},
    "cinn": {"ensemble": 2, "samples": 16, "bootstrap": 30, "sim_toys": 30},
    "ibu": {"toys": 50},
    "binning": {"top_pt": [0, 60, 120, 200, 400], "mtt": [300, 420, 520, 700, 1000]},
    "neutrino_flow": {
        "enabled": True,
        "epochs": 2,
        "samples": 8,
        "flow": {"depth": 2, "width": 16, "bins": 4},
    },
    "icinn": {"enabled": True, "iterations": 1, "epochs": 1},
}


@pytest.fixture(scope="module")
def study(unfolding_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    tt = unfolding_sample / "tt.root"
    cfg = from_dict(UnfoldingConfig, TINY)
    results = run_study([tt], [tt], out, config=cfg, progress=False)  # unfold the training sample
    return out, results, make_report(out)


def test_closure_on_the_training_sample(study):
    _, results, report = study
    counts = results["counts"]["test"]
    assert counts["both"] > 100
    assert counts["fiducial"] > counts["both"]
    for name in OBSERVABLES:
        res = results["scenarios"]["nominal"][name]
        table = report["scenarios"]["nominal"]["observables"][name]
        # IBU with the response of the same events reproduces their truth exactly
        np.testing.assert_allclose(res["ibu"]["central"], res["truth"], rtol=1e-9)
        # the truth is the training truth: both close, IBU exactly
        assert table["ibu"]["chi2"] < 1e-6, table["ibu"]
        assert table["ibu"]["closes"]
        # the cINN closes within its uncertainties
        assert table["cinn"]["chi2_ndf"] < 3.0, table["cinn"]
        assert max(abs(p) for p in table["cinn"]["pull"]) < 3.5
        assert set(res["cinn"]["components"]) == {"data", "simulation", "posterior", "ensemble"}
        assert np.all(np.asarray(res["cinn"]["uncertainty"]) > 0)


def test_prior_study_changes_the_truth(study):
    _, results, report = study
    nominal = np.asarray(results["scenarios"]["nominal"]["top_pt"]["truth"])
    reweighted = np.asarray(results["scenarios"]["reweighted"]["top_pt"]["truth"])
    # a negative slope softens the spectrum: more events at low pT, fewer at high pT
    assert reweighted[0] > nominal[0]
    assert reweighted[-1] < nominal[-1]
    assert results["scenarios"]["reweighted"]["sum_weights"] == pytest.approx(
        results["counts"]["test"]["events"]
    )
    assert len(report["scenarios"]["reweighted"]["observables"]["top_pt"]["ibu_chi2_by_iteration"]) == 4


def test_scenarios_are_the_configured_ones(study):
    _, results, report = study
    names = [s.name for s in from_dict(UnfoldingConfig, TINY).scenarios]
    assert names == ["nominal", "reweighted", "mtt_reweighted", "mtt_bump"]
    assert list(results["scenarios"]) == names == list(report["scenarios"])
    mtt = {n: np.asarray(results["scenarios"][n]["mtt"]["truth"]) for n in names}
    # harder m_ttbar: fewer events in the first bin, more in the last
    assert mtt["mtt_reweighted"][0] < mtt["nominal"][0]
    assert mtt["mtt_reweighted"][-1] > mtt["nominal"][-1]


def test_the_bump_is_visible_in_the_truth_histogram(study):
    _, results, report = study
    nominal, bump = results["scenarios"]["nominal"], results["scenarios"]["mtt_bump"]
    events = results["counts"]["test"]["events"]
    # the excess is 3 % of all test events (before any selection), not renormalised away
    assert bump["sum_weights"] - nominal["sum_weights"] == pytest.approx(0.03 * events, rel=1e-9)
    edges = np.asarray(bump["mtt"]["edges"])  # 300, 420, 520, 700, 1000; the bump at 750 +- 30
    excess = np.asarray(bump["mtt"]["truth"]) - np.asarray(nominal["mtt"]["truth"])
    np.testing.assert_allclose(excess[edges[1:] <= 520.0], 0.0, atol=1e-9)  # far from the bump
    assert excess[-1] > 0.5 * excess.sum() > 0  # the bin of 750 GeV holds most of it
    # the fiducial excess is the fiducial share of the injected 3 %
    assert 0.3 * 0.03 * events < excess.sum() < 0.03 * events
    # top pT is changed only through its correlation with m_ttbar: much less, relative to its bins
    assert "Gaussian bump in mtt at 750 GeV" in report["scenarios"]["mtt_bump"]["description"]


def test_report_json_schema(study):
    out, _, _ = study
    saved = json.loads((out / "report" / "report.json").read_text())
    assert saved["schema"] == SCHEMA
    assert saved["closure_p_value"] == CLOSURE_P
    assert saved["produced_by"]["config"]["scenarios"][3]["kind"] == "bump"
    assert saved["produced_by"]["inputs"]["train"]
    assert len(saved["verdicts"]) == len(saved["scenarios"]) == 4
    # a tiny simulation: the report says the cINN's training sample is too small to trust
    (warning,) = saved["warnings"]
    assert warning.startswith(
        f"the cINN ensemble was trained on {saved['training']['events']} simulated events"
    )
    for scenario, entry in saved["scenarios"].items():
        assert set(entry) == {"description", "verdict", "observables", "icinn"}
        assert entry["icinn"]["iterations"] == 1
        assert len(entry["icinn"]["moves"]) == 1
        assert "IcINN" in entry["verdict"]
        assert entry["verdict"].startswith(f"{scenario}: ")
        assert "closes best" in entry["verdict"]
        assert entry["verdict"] in saved["verdicts"]
        assert set(entry["observables"]) == set(OBSERVABLES)
        for _name, table in entry["observables"].items():
            n = len(table["edges"]) - 1
            assert len(table["truth"]) == n
            assert len(table["icinn_chi2_by_iteration"]) == 2  # the plain cINN pass and one iteration
            for method in ("ibu", "ibu_flow", "cinn", "icinn"):
                m = table[method]
                assert m["ndf"] == n
                assert m["inverse"] == "inverse"
                assert m["chi2"] >= 0
                assert m["chi2_ndf"] == pytest.approx(m["chi2"] / n)
                assert 0 <= m["p_value"] <= 1
                assert m["closes"] == (m["p_value"] >= CLOSURE_P)
                assert len(m["pull"]) == n
                corr = np.asarray(m["correlation"])
                assert corr.shape == (n, n)
                np.testing.assert_allclose(corr, corr.T, atol=1e-12)
                np.testing.assert_allclose(np.diag(corr), 1.0)
                assert np.all(np.abs(corr) <= 1 + 1e-9)
                cov = np.asarray(m["covariance"])
                np.testing.assert_allclose(np.sqrt(np.diag(cov)), m["uncertainty"])
                np.testing.assert_allclose(cov / np.outer(m["uncertainty"], m["uncertainty"]), corr)
                # the chi2 uses the full covariance (plus the truth's variance on the diagonal)
                full = cov + np.diag(np.square(table["truth_stat"]))
                r = np.asarray(m["unfolded"]) - np.asarray(table["truth"])
                assert m["chi2"] == pytest.approx(float(r @ np.linalg.solve(full, r)), rel=1e-6)
        # the IBU result is correlated bin to bin (neighbouring bins share migrations)
        ibu = np.asarray(entry["observables"]["mtt"]["ibu"]["correlation"])
        assert np.abs(ibu[np.triu_indices(len(ibu), 1)]).max() > 0.05


def test_report_files(study):
    out, _, _report = study
    for scenario in ("nominal", "reweighted", "mtt_reweighted", "mtt_bump"):
        for name in OBSERVABLES:
            assert (out / "report" / f"unfolded_{scenario}_{name}.png").stat().st_size > 10_000
        assert (out / "report" / f"correlations_{scenario}.png").stat().st_size > 10_000
    saved = json.loads((out / "report" / "report.json").read_text())
    assert saved["scenarios"]["nominal"]["observables"]["mtt"]["cinn"]["ndf"] == 4
    assert "**Verdict**: mtt_bump: " in (out / "report" / "report.md").read_text()
    assert "**Warning**: the cINN ensemble was trained on " in (out / "report" / "report.md").read_text()
    assert "| bin [GeV] |" in (out / "report" / "report.md").read_text()
    with pytest.raises(InputError, match="does not exist"):
        make_report(out / "nowhere")


def test_script_reuses_columns_and_models(study, tmp_path, capsys):
    out, results, _ = study
    config = tmp_path / "tiny.toml"
    config.write_text(_toml(TINY))
    tt = results["inputs"]["train"][0]
    script = runpy.run_path(str(ROOT / "analyses" / "ttbar_unfolding" / "run_study.py"))
    code = script["main"](
        ["--train", tt, "--test", tt, "--output", str(out), "--config", str(config), "--no-progress"]
    )
    assert code == 0
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["training"] == results["training"]  # the ensemble was loaded, not retrained
    assert (
        rerun["neutrino_flow"]["training"] == results["neutrino_flow"]["training"]
    )  # so were the neutrino flows
    printed = capsys.readouterr().out
    assert "chi2/ndf" in printed
    assert "WARNING: the cINN ensemble was trained on " in printed
    assert (
        script["main"](
            ["--train", "missing.root", "--test", tt, "--output", str(tmp_path / "o"), "--no-progress"]
        )
        == 2
    )


def test_config_is_strict_and_the_shipped_one_loads(tmp_path):
    cfg = UnfoldingConfig.from_file()
    assert cfg.ibu.iterations >= 1
    assert len(cfg.binning.top_pt) > 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[ibu]\niteratons = 3\n")
    with pytest.raises(ConfigError, match="iteratons"):
        UnfoldingConfig.from_file(bad)
    bad.write_text("[binning]\nmtt = [500.0, 400.0]\n")
    with pytest.raises(ConfigError, match="increasing"):
        UnfoldingConfig.from_file(bad)


def _toml(table: dict, prefix: str = "") -> str:
    lines, nested = [], []
    for section, values in table.items():
        lines.append(f"[{prefix}{section}]")
        for k, v in values.items():
            if isinstance(v, dict):
                nested.append(_toml({k: v}, prefix=f"{prefix}{section}."))
            else:
                lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n" + "".join(nested)


def test_load_sample_refuses_duplicated_events(unfolding_sample, tmp_path):
    from hepflow.unfolding.study import load_sample, process

    tt = unfolding_sample / "tt.root"
    process([tt], tmp_path, dataset="first")
    assert load_sample(tmp_path).n == SAMPLE_EVENTS
    with pytest.raises(OutputError, match="which this run does not read"):
        process([tt], tmp_path, dataset="second")  # other chunk names: the events would be twice
    assert load_sample(tmp_path).n == SAMPLE_EVENTS


def test_nan_samples_of_a_broken_cinn_are_refused(study, unfolding_sample, monkeypatch):
    from hepflow.errors import ModelError
    from hepflow.unfolding import cinn

    out, _, _ = study
    before = (out / "results.json").read_bytes()

    def broken(models, context, *, samples, **_):
        n = len(next(iter(context.values())))
        draws = np.zeros((n, samples, len(OBSERVABLES)), np.float32)
        draws[::7] = np.nan  # a model with NaN weights gives NaN samples
        return draws

    monkeypatch.setattr(cinn, "sample_ensemble", broken)
    cfg = from_dict(UnfoldingConfig, TINY)
    tt = unfolding_sample / "tt.root"
    with pytest.raises(
        ModelError, match=r"models: the cINN gives NaN or infinite samples for \d+ of \d+ events"
    ):
        run_study([tt], [tt], out, config=cfg, progress=False)
    assert (out / "results.json").read_bytes() == before  # nothing written


def test_ibu_with_the_flow_neutrino(study):
    out, results, report = study
    summary = results["neutrino_flow"]
    members = summary["training"]["members"]
    assert [m["fold"] for m in members] == [0, 1]
    # cross-fitting: each fold's flow trains on the other half of the events with a truth neutrino
    assert all(50 <= m["events"] < results["counts"]["train"]["selected"] for m in members)
    assert (out / "neutrino_models" / "fold_1" / "config.json").is_file()
    for o in OBSERVABLES:
        res = summary["resolution"][o]
        assert set(res) == {"quadratic", "flow"}
        assert all(np.isfinite(v["iqr_half"]) and v["iqr_half"] > 0 for v in res.values())
    for scenario, per_obs in results["scenarios"].items():
        for o in OBSERVABLES:
            assert sum(per_obs[o]["reco_flow"]) == pytest.approx(sum(per_obs[o]["reco"]))  # same events
            assert np.all(np.asarray(per_obs[o]["ibu_flow"]["uncertainty"]) > 0)
        entry = report["scenarios"][scenario]
        assert "IBU-flow" in entry["verdict"]
        p = report["precision"][scenario]["mtt"]
        assert set(p["ratio_to_ibu"]) == {"ibu_flow", "cinn", "icinn"}
        assert all(
            np.isfinite(p["median_ratio"][m]) and p["median_ratio"][m] > 0 for m in ("ibu_flow", "cinn")
        )
    assert "| IBU / IBU-flow |" in (out / "report" / "report.md").read_text()


def test_quadratic_neutrino_through_downstream_gives_the_reco_columns(unfolding_sample):
    """The flow path's observables (hepflow.neutrino.downstream, median over draws) with the
    quadratic neutrino as the only draw are the study's detector-level columns."""
    import awkward as ak

    from hepflow.neutrino.quadratic import lepton_mass, solve_neutrino_pz
    from hepflow.unfolding.neutrino_flow import _point_observables
    from hepflow.unfolding.study import load_sample

    sample = load_sample(unfolding_sample / "columns")
    f = sample.features
    lep = {k: ak.to_numpy(f[f"lep_{k}"]).astype(np.float64) for k in ("px", "py", "pz")}
    met = [ak.to_numpy(f[k]).astype(np.float64) for k in ("met_px", "met_py")]
    mass = lepton_mass(np.asarray(ak.to_numpy(f.lep_flavor), dtype=np.int64))
    pz = np.asarray(solve_neutrino_pz(lep["px"], lep["py"], lep["pz"], *met, lep_mass=mass).pz, np.float64)
    values = _point_observables(f, np.stack([met[0], met[1], pz], axis=1)[:, None, :])
    for o in OBSERVABLES:
        np.testing.assert_allclose(values[o], sample.reco[o][sample.selected], rtol=2e-5)


def test_columns_without_the_truth_neutrino_are_refused():
    import awkward as ak

    from hepflow.errors import InputError
    from hepflow.unfolding.neutrino_flow import _truth

    with pytest.raises(InputError, match="no truth neutrino"):
        _truth(ak.Array({"met_px": [1.0]}))


def test_neutrino_ceiling_script(study, capsys):
    out, _, _ = study
    script = runpy.run_path(str(ROOT / "analyses" / "ttbar_unfolding" / "neutrino_ceiling.py"))
    assert script["main"]([str(out)]) == 0
    saved = json.loads((out / "neutrino_ceiling.json").read_text())["ceiling"]
    for name in OBSERVABLES:
        rel = saved[name]["relative_stat"]
        assert set(rel) == {"quadratic", "true"}
        assert np.allclose(np.asarray(rel["quadratic"]) / np.asarray(rel["true"]), saved[name]["ratio"])
        assert saved[name]["median_ratio"] > 0
    assert "median" in capsys.readouterr().out
    assert script["main"]([]) == 2
