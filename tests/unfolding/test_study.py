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
from hepflow.unfolding.study import SCENARIOS, UnfoldingConfig, make_report, run_study
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
        table = report["scenarios"]["nominal"][name]
        # IBU with the response of the same events reproduces their truth exactly
        np.testing.assert_allclose(res["ibu"]["central"], res["truth"], rtol=1e-9)
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
    assert len(report["scenarios"]["reweighted"]["top_pt"]["ibu_chi2_by_iteration"]) == 4


def test_report_files(study):
    out, _, _report = study
    for scenario in SCENARIOS:
        for name in OBSERVABLES:
            assert (out / "report" / f"unfolded_{scenario}_{name}.png").stat().st_size > 10_000
    saved = json.loads((out / "report" / "report.json").read_text())
    assert saved["scenarios"]["nominal"]["mtt"]["cinn"]["ndf"] == 4
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
    assert "chi2/ndf" in capsys.readouterr().out
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


def _toml(table: dict) -> str:
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


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
