"""The documented path for physics results: train on the experiment's own full simulation.

``hepflow process neutrino`` -> ``train`` -> ``infer`` -> ``report`` through the command line on
the two real CMS NanoAOD files of ``analyses/ttbar_neutrino/fileset_example.json`` (v12
semileptonic ttbar with ``MET_*``, v15 all-hadronic ttbar with ``PFMET_*``), with a tiny network
and two epochs (``analyses/ttbar_neutrino/fullsim_tiny.toml``, which extends the shipped config). The
model is not meaningful (49 training events); what is tested is the path: the CMS generator
weights reach the training, events without a usable truth neutrino are refused and counted, every
output carries its provenance and every selected event gets a finite posterior.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.cli import main
from hepflow.outputs import read_parquet_dir
from hepflow.outputs.provenance import model_identity
from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
FILESET = ROOT / "analyses" / "ttbar_neutrino" / "fileset_example.json"
V12, V15 = "ttbar_semileptonic_cms_v12", "ttbar_hadronic_cms_v15"
SAMPLES = 16  # posterior samples per event ([inference] of fullsim_tiny.toml)
CONFIG = ROOT / "analyses" / "ttbar_neutrino" / "fullsim_tiny.toml"  # tiny network, 2 epochs


def _cli(*argv: str) -> tuple[int, str, str]:
    """Run ``hepflow ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*argv])
        except SystemExit as exc:  # argparse and the one-line errors exit
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The four commands of the documented sequence, run once on both CMS files."""
    d = tmp_path_factory.mktemp("fullsim")
    run = {"dir": d, "config": CONFIG, "stdout": {}}
    for step, argv in (
        ("process", ["process", "neutrino", "--input", str(FILESET), "--output", str(d / "features")]),
        ("train", ["train", "neutrino", "--data", str(d / "features"), "--output", str(d / "model")]),
        ("infer", ["infer", "neutrino", "--model", str(d / "model"), "--input", str(FILESET)]),
        ("report", ["report", "neutrino", "--input", str(d / "inference"), "--output", str(d / "report")]),
    ):
        if step == "infer":  # posterior samples per event: the config's
            argv += ["--output", str(d / "inference")]
        if step in ("train", "infer"):
            argv += ["--config", str(CONFIG)]
        if step != "report":
            argv.append("--no-progress")
        code, out, err = _cli(*argv)
        assert code == 0, f"hepflow {step} failed: {err}"
        run["stdout"][step] = out
    return run


@functools.cache
def _gen_weights() -> dict[str, dict[int, float]]:
    """genWeight per event number of each CMS file, read with uproot."""
    weights = {}
    for name, f in ((V12, "nano_tt_v12.root"), (V15, "nano_tt_v15.root")):
        tree = uproot.open(ROOT / "tests" / "samples" / f)["Events"]
        arrays = tree.arrays(["event", "genWeight"], library="np")
        weights[name] = dict(
            zip(arrays["event"].tolist(), arrays["genWeight"].astype(np.float64).tolist(), strict=True)
        )
    return weights


def test_process_selects_counts_truth_and_keeps_the_cms_generator_weights(path):
    d = path["dir"]
    run = json.loads((d / "features" / "run.json").read_text())
    assert set(run["provenance"]["fileset"]) == {V12, V15}
    by_dataset = run["cutflow"]["by_dataset"]
    assert (by_dataset[V12]["all"], by_dataset[V12]["finite inputs"]) == (200, 52)
    assert (by_dataset[V15]["all"], by_dataset[V15]["finite inputs"]) == (200, 0)  # all-hadronic
    gen = _gen_weights()
    weighted = run["cutflow"]["weighted"]["by_dataset"]
    for name in (V12, V15):  # every event's genWeight, not 1: 199 x 337.047 - 337.047; 200 x 350.17
        assert weighted[name]["all"]["sumw"] == pytest.approx(sum(gen[name].values()), rel=1e-6)
    assert weighted[V12]["all"]["sumw"] == pytest.approx(198 * 337.047, rel=1e-5)
    rows = read_parquet_dir(d / "features")
    truth = ~ak.to_numpy(ak.is_none(rows.nu_px_true))
    events = ak.to_numpy(rows.event)
    np.testing.assert_allclose(ak.to_numpy(rows.weight), [gen[V12][int(e)] for e in events], rtol=1e-6)
    assert (len(rows), int(truth.sum())) == (52, 49)
    # the printed cutflow says how many rows have a truth neutrino and their weight
    lines = path["stdout"]["process"].splitlines()
    assert next(x for x in lines if x.strip().startswith("truth neutrino")).split()[-2:] == ["0", "49"]
    printed_sumw = float(next(x for x in lines if x.strip().startswith("sum of weights")).split()[-1])
    assert printed_sumw == pytest.approx(sum(gen[V12][int(e)] for e in events[truth]), rel=1e-5)


def test_training_refuses_rows_without_truth_and_uses_the_generator_weights(path):
    d = path["dir"]
    training = json.loads((d / "model" / "training.json").read_text())
    rows = read_parquet_dir(d / "features")
    truth = ~ak.to_numpy(ak.is_none(rows.nu_px_true))
    gen = _gen_weights()[V12]
    w_truth = np.array([gen[int(e)] for e in ak.to_numpy(rows.event)[truth]])
    assert (training["events_read"], training["events_used"], training["dropped_missing_truth"]) == (
        52,
        49,
        3,
    )
    assert training["weights"]["used"] is True
    assert training["weights"]["sum"] == pytest.approx(w_truth.sum(), rel=1e-6)
    assert training["weights"]["sum_squares"] == pytest.approx((w_truth**2).sum(), rel=1e-6)
    assert w_truth.sum() == pytest.approx(49 * 337.047, rel=1e-5)  # CMS weights are not 1
    cutflow = training["cutflow"]
    assert [cutflow[s]["events"] for s in ("rows", "truth neutrino", "finite")] == [52, 49, 49]
    assert cutflow["truth neutrino"]["sumw"] == pytest.approx(w_truth.sum(), rel=1e-6)
    # provenance of the model: the feature directory and the CMS files it came from
    assert training["data"]["directory"] == str((d / "features").resolve())
    assert set(training["data"]["fileset"]) == {V12, V15}
    assert training["config"]["flow"]["depth"] == 2  # fullsim_tiny.toml over the shipped config
    assert training["config"]["selection"]["btag_wp"] == 0.2783
    assert training["flow"]["epochs"] == 2
    assert "truth neutrino        49" in path["stdout"]["train"]


def test_every_selected_event_gets_a_finite_posterior(path):
    d = path["dir"]
    run = json.loads((d / "inference" / "run.json").read_text())
    assert run["provenance"]["producer"]["model"]["sha256"] == model_identity(d / "model")["sha256"]
    assert run["provenance"]["producer"]["samples"] == SAMPLES
    assert set(run["provenance"]["fileset"]) == {V12, V15}
    selected = run["cutflow"]["total"]["finite inputs"]
    assert run["rows"] == run["cutflow"]["total"]["finite outputs"] == selected == 52
    cols = read_parquet_dir(d / "inference")
    features = read_parquet_dir(d / "features")
    assert ak.to_numpy(cols.event).tolist() == ak.to_numpy(features.event).tolist()
    for c in ("px", "py", "pz"):
        samples = ak.to_numpy(cols[f"flow_{c}"])
        assert samples.shape == (selected, SAMPLES)
        assert np.isfinite(samples).all()
        for stat in ("mode", "peak", "median", "mean", "std"):
            assert np.isfinite(ak.to_numpy(cols[f"flow_{c}_{stat}"])).all()
        assert np.isfinite(ak.to_numpy(cols[f"ff_{c}"])).all()
    assert np.isfinite(ak.to_numpy(cols.quad_pz)).all()
    assert "wrote posteriors for 52 events in 2 chunk(s)" in path["stdout"]["infer"]


def test_report_on_the_events_with_truth(path):
    d = path["dir"]
    report = json.loads((d / "report" / "report.json").read_text())
    assert (report["events"], report["events_without_truth"]) == (49, 3)
    for level in ("0.68", "0.95"):
        assert all(0.0 <= v <= 1.0 for v in report["calibration"]["coverage"][level].values())
    plots = {Path(p).name for p in report["plots"] if Path(p).is_file()}
    assert len(plots) == len(report["plots"])  # every listed plot exists (paths, not names)
    assert {"coverage.png", "sbc_ranks.png", "tarp.png", "residual_pz.png", "w_mass.png"} <= plots
    assert "49 events with a truth neutrino (3 without one left out)" in path["stdout"]["report"]


def test_what_cannot_work_is_refused_on_one_line(path):
    d = path["dir"]
    # the shipped minimum of 100 usable events
    code, _, err = _cli("train", "neutrino", "--data", str(d / "features"), "--output", str(d / "m100"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert (
        "only 49 usable events with a truth neutrino (of 52 rows, 3 without truth); need at least 100" in err
    )
    assert "(training.min_events)" in err
    # the all-hadronic file alone: no event to train on, none to report on
    v15 = ROOT / "tests" / "samples" / "nano_tt_v15.root"
    assert (
        _cli("process", "neutrino", "--input", str(v15), "--output", str(d / "f15"), "--no-progress")[0] == 0
    )
    code, _, err = _cli(
        *("train", "neutrino", "--data", str(d / "f15"), "--output", str(d / "m15")),
        "--config",
        str(path["config"]),
    )
    assert code == 2
    assert "only 0 usable events with a truth neutrino (of 0 rows, 0 without truth); need at least 20" in err
    argv = ("infer", "neutrino", "--model", str(d / "model"), "--input", str(v15), "--output", str(d / "i15"))
    code, out, _ = _cli(*argv, "--samples", "4", "--config", str(path["config"]), "--no-progress")
    assert code == 0
    assert "wrote posteriors for 0 events" in out
    code, _, err = _cli("report", "neutrino", "--input", str(d / "i15"), "--output", str(d / "r15"))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "none of its 0 events has a truth neutrino (W -> e nu or mu nu in GenPart)" in err
    assert not (d / "r15" / "report.json").exists()


def test_the_measurement_script_prints_the_documented_numbers(nano_v12, monkeypatch, capsys):
    """``benchmarks/fullsim_truth.py`` prints the numbers that docs/training.md quotes."""
    script = load_benchmark("fullsim_truth")
    assert script.w_decays(nano_v12) == {"tau": 79, "mu": 63, "e": 58}
    monkeypatch.setattr("sys.argv", ["fullsim_truth.py", str(nano_v12)])
    script.main()
    out = capsys.readouterr().out
    assert "200 events, genWeight sum 66735.3, 1 negative" in out
    assert "genWeight values: -337.047 x1, 337.047 x199" in out
    assert "selected 52 (sum of weights 17526.4); with a truth neutrino 49 (16515.3)" in out
