"""The neutrino analysis end to end on a small generated sample: process, train, infer, report."""

from __future__ import annotations

import json
import shutil

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.config import from_dict
from hepflow.errors import ConfigError, ModelError
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor
from hepflow.neutrino.model import load_models
from hepflow.neutrino.pipeline import train
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.neutrino.report import make_report
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, run_processor
from tests.conftest import load_benchmark

pytest.importorskip("pythia8mc")
pytestmark = pytest.mark.generation

TINY = {
    "summary": {"set_width": 16, "set_heads": 2, "flat_embedding": 8, "jet_embedding": 8},
    "flow": {"depth": 2, "width": 16, "bins": 4},
    "regression": {"width": 16, "layers": 1},
    "training": {"epochs": 2, "batch_size": 64, "seed": 3},
}
K = 32


@pytest.fixture(scope="module")
def sample(tmp_path_factory, ttbar_700):
    d = tmp_path_factory.mktemp("nu")
    shutil.copy(ttbar_700, d / "tt.root")
    run_processor(
        NeutrinoFeatureProcessor(), build_fileset([d / "tt.root"]), d / "features", RunConfig(progress=False)
    )
    return d


@pytest.fixture(scope="module")
def models(sample):
    cfg = from_dict(NeutrinoConfig, TINY)
    summary = train(sample / "features", sample / "models", config=cfg, progress=False)
    return sample / "models", summary


def test_training_writes_both_models(models):
    model_dir, summary = models
    assert summary["events_used"] > 100
    assert summary["dropped_missing_truth"] == 0
    for name in ("flow", "regression"):
        assert (model_dir / name / "config.json").is_file()
        assert summary[name]["epochs"] == 2
    assert json.loads((model_dir / "training.json").read_text())["events_used"] == summary["events_used"]
    flow, _ = load_models(model_dir)
    assert flow.metadata["analysis"] == "ttbar_neutrino"


def test_inference_columns_and_report(sample, models, tmp_path):
    model_dir, _ = models
    proc = NeutrinoInferenceProcessor(model_dir, samples=K)
    cfg = RunConfig(progress=False, formats=("parquet", "root"))
    run_processor(proc, build_fileset([sample / "tt.root"]), tmp_path / "inf", cfg)
    cols = read_parquet_dir(tmp_path / "inf")
    features = read_parquet_dir(sample / "features")
    assert len(cols) == len(features)  # every selected event gets a posterior
    for c in ("px", "py", "pz"):
        samples = ak.to_numpy(cols[f"flow_{c}"])
        assert samples.shape == (len(cols), K)
        assert np.isfinite(samples).all()
        np.testing.assert_allclose(
            ak.to_numpy(cols[f"flow_{c}_mean"]), samples.mean(axis=1), rtol=1e-5, atol=1e-3
        )
        assert (ak.to_numpy(cols[f"flow_{c}_std"]) > 0).all()
        for stat in ("mode", "peak", "median"):
            assert f"flow_{c}_{stat}" in cols.fields
        # the marginal peak is one of the samples, inside the sample range
        peak = ak.to_numpy(cols[f"flow_{c}_peak"])
        assert ((samples == peak[:, None]).any(axis=1)).all()
    for name in (
        "quad_pz",
        "quad_pz_alt",
        "quad_is_complex",
        "ff_px",
        "ff_py",
        "ff_pz",
        "mw_flow",
        "mw_quad",
    ):
        assert name in cols.fields
    # the quadratic solution reconstructs the W mass exactly where it is real
    real = ~ak.to_numpy(cols.quad_is_complex)
    np.testing.assert_allclose(ak.to_numpy(cols.mw_quad)[real], 80.379, atol=0.05)
    tree = uproot.open(next((tmp_path / "inf").glob("*.root")))["Events"]
    assert tree["flow_pz"].typename == f"float[{K}]"

    report = make_report(tmp_path / "inf", tmp_path / "report", n_displays=3)
    assert report["events"] == len(cols)
    assert 0 < report["quad_complex_fraction"] < 1
    assert set(report["resolution"]) == {"all", "quad_real", "quad_complex"}
    assert set(report["calibration"]["coverage"]) == {"0.68", "0.95"}
    roots = report["root_choice"]
    assert roots["events_with_real_roots"] == int(real.sum())
    assert roots["correct_root_fraction"]["oracle"] == 1.0
    for frac in roots["correct_root_fraction"].values():
        assert 0 <= frac <= 1
    # no estimate that returns one of the roots beats the one that knows which is right
    assert roots["pz_width_ratio_to_quadratic"]["oracle_root"] <= 1.0
    for plot in ("report.json", "w_mass.png", "residual_pz.png", "posterior_displays.png", "coverage.png"):
        assert (tmp_path / "report" / plot).stat().st_size > 0


def test_inference_is_reproducible(sample, models, tmp_path):
    model_dir, _ = models
    for name in ("a", "b"):
        run_processor(
            NeutrinoInferenceProcessor(model_dir, samples=8),
            build_fileset([sample / "tt.root"]),
            tmp_path / name,
            RunConfig(progress=False),
        )
    a, b = read_parquet_dir(tmp_path / "a"), read_parquet_dir(tmp_path / "b")
    np.testing.assert_array_equal(ak.to_numpy(a.flow_pz), ak.to_numpy(b.flow_pz))


def test_foreign_model_is_refused(models, tmp_path):
    import hepflow

    model_dir, _ = models
    flow = hepflow.load_model(model_dir / "flow")
    for name in ("flow", "regression"):
        hepflow.save_model(
            hepflow.load_model(model_dir / name), tmp_path / name, metadata={"analysis": "cosmic"}
        )
    with pytest.raises(ModelError, match="analysis 'cosmic'"):
        load_models(tmp_path)
    hepflow.save_model(
        flow, tmp_path / "flow", metadata={**flow.metadata, "features": {"flat": ["x"]}}, overwrite=True
    )
    with pytest.raises(ModelError, match="trained on features"):
        load_models(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        load_models(tmp_path / "nothing")


def test_config_file_is_strict(tmp_path):
    cfg = NeutrinoConfig.from_file()
    assert cfg.flow.depth == 7
    assert cfg.inference.samples == 256
    bad = tmp_path / "c.toml"
    bad.write_text("[training]\nepochz = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'epochz' for TrainingConfig"):
        NeutrinoConfig.from_file(bad)
    bad.write_text("[trainig]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trainig' for NeutrinoConfig"):
        NeutrinoConfig.from_file(bad)


def test_root_choice_counts_and_widths():
    from hepflow.neutrino.report import root_choice

    rng = np.random.default_rng(0)
    n, k = 400, 64
    true = rng.normal(0, 80, n)
    other = true + rng.choice([-1, 1], n) * rng.uniform(40, 120, n)
    swap = rng.random(n) < 0.3  # the quadratic's smaller-|pz| rule is wrong on these
    near = true + rng.normal(0, 10, n)  # the root near the truth (resolution 10 GeV)
    quad, alt = np.where(swap, other, near), np.where(swap, near, other)
    # a flow that puts 80 % of its samples near the true root on 90 % of the events
    good = rng.random(n) < 0.9
    centre = np.where(good, near, other)
    samples = np.where(rng.random((n, k)) < 0.8, centre[:, None], np.where(good, other, near)[:, None])
    samples = samples + rng.normal(0, 5, (n, k))
    complex_ = np.zeros(n, bool)
    complex_[:20] = True
    r = root_choice(samples, quad, alt, complex_, true, centre)
    real = ~complex_
    assert r["events_with_real_roots"] == n - 20
    assert r["correct_root_fraction"]["quad"] == pytest.approx(1 - swap[real].mean())
    assert r["correct_root_fraction"]["flow"] == pytest.approx(good[real].mean())
    assert r["correct_root_fraction"]["oracle"] == 1.0
    widths = r["pz_width_ratio_to_quadratic"]
    assert widths["oracle_root"] < widths["flow_root"] < 1.0


def test_root_choice_study_on_the_sample(sample, capsys, monkeypatch) -> None:
    """benchmarks/neutrino_root_choice.py: m(l nu j) against vector, the needed fraction, the table."""
    import vector

    bench = load_benchmark("neutrino_root_choice")
    ev = bench._events(str(sample / "features"))
    n = len(ev["true_pz"])
    assert n > 50
    assert np.isfinite(ev["true_pz"]).all()
    # m(l nu_r j) of the first event's jets, with vector from (px, py, eta, E)
    i = 0
    lep = vector.obj(px=ev["lep_px"][i], py=ev["lep_py"][i], pz=ev["lep_pz"][i], E=ev["lep_e"][i])
    for r in range(2):
        nu_pz = ev["roots"][i, r]
        nu = vector.obj(px=ev["met_px"][i], py=ev["met_py"][i], pz=nu_pz, mass=0.0)
        for j in np.flatnonzero(ev["mask"][i]):
            pt = np.hypot(ev["jet_px"][i, j], ev["jet_py"][i, j])
            jet = vector.obj(
                pt=pt,
                phi=np.arctan2(ev["jet_py"][i, j], ev["jet_px"][i, j]),
                eta=ev["jet_eta"][i, j],
                E=np.exp(ev["jet_loge"][i, j]),
            )
            assert ev["m_lnuj"][i, r, j] == pytest.approx((lep + nu + jet).mass, rel=1e-6, abs=1e-6)
    assert (ev["m_lnuj"][~np.broadcast_to(ev["mask"][:, None, :], ev["m_lnuj"].shape)] == 0).all()

    real = ~ev["is_complex"]
    oracle_ratio_reached = bench._needed_fraction(ev, real, 10.0, favourable=False)
    assert oracle_ratio_reached == 0.0  # any target above every ratio: all choices may be wrong
    strict = bench._needed_fraction(ev, real, 0.0, favourable=True)
    assert strict == 1.0  # a target below the oracle's: unreachable, every root must be right
    assert bench._needed_fraction(ev, real, 0.9, favourable=False) <= bench._needed_fraction(
        ev, real, 0.8, favourable=False
    )

    features = str(sample / "features")
    argv = ["x", "--train", features, "--test", features, "--epochs", "2"]
    monkeypatch.setattr("sys.argv", argv)
    bench.main()
    out = capsys.readouterr().out
    assert "oracle (uses the truth)" in out
    assert "correct-root fraction needed for ratio 0.75" in out
    oracle_line = next(line for line in out.splitlines() if line.startswith("oracle"))
    assert oracle_line.split()[-3] == "1.000"
    quad_line = next(line for line in out.splitlines() if line.startswith("quadratic"))
    assert quad_line.split()[-1] == "1.000"


def test_root_inputs_study_on_the_sample(sample, capsys, monkeypatch) -> None:
    """benchmarks/neutrino_inputs.py: the root features are the quadratic's roots; the A/B table."""
    from hepflow.neutrino.quadratic import lepton_mass, solve_neutrino_pz

    bench = load_benchmark("neutrino_inputs")
    features = str(sample / "features")
    roots = bench.root_features(features)
    cols = read_parquet_dir(features)
    cols = cols[~ak.is_none(cols.nu_px_true)]
    assert roots.shape == (len(cols), len(bench.ROOT_FEATURES))
    met_px, met_py = ak.to_numpy(cols.met_px), ak.to_numpy(cols.met_py)
    sol = solve_neutrino_pz(
        ak.to_numpy(cols.lep_px),
        ak.to_numpy(cols.lep_py),
        ak.to_numpy(cols.lep_pz),
        met_px,
        met_py,
        lep_mass=lepton_mass(ak.to_numpy(cols.lep_flavor)),
    )
    met = np.hypot(met_px, met_py)
    np.testing.assert_allclose(np.sinh(roots[:, 0]) * met, sol.pz_plus, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(np.sinh(roots[:, 1]) * met, sol.pz_minus, rtol=1e-4, atol=1e-2)
    complex_ = roots[:, 3] == 1
    assert (complex_ == np.asarray(sol.is_complex)).all()
    assert 0 < complex_.sum() < len(roots)
    assert (roots[~complex_, 2] == 0).all()
    assert (roots[complex_, 2] > 0).all()

    # the MET-resolution input: ln sumEt of the very event, matched by (luminosityBlock, event)
    root = str(sample / "tt.root")
    sumet = bench.sumet_features(features, [root])
    with uproot.open(root) as f:
        b = f["Events"].arrays(["luminosityBlock", "event", "MET_sumEt"], library="np")
    row = {(lb, ev): s for lb, ev, s in zip(b["luminosityBlock"], b["event"], b["MET_sumEt"], strict=True)}
    want = [
        row[lb, ev] for lb, ev in zip(ak.to_list(cols.luminosityBlock), ak.to_list(cols.event), strict=True)
    ]
    np.testing.assert_allclose(np.exp(sumet[:, 0]), want, rtol=1e-5)
    assert np.ptp(sumet) > 0.1  # pileup makes it vary from event to event
    with pytest.raises(SystemExit, match="needs --train-root"):
        bench.sumet_features(features, [])
    # a glob is expanded; a pattern without files, or an event in two files, is one line
    np.testing.assert_array_equal(bench.sumet_features(features, [str(sample / "t*.root")]), sumet)
    with pytest.raises(SystemExit, match=r"nothing\.root: no such file"):
        bench.sumet_features(features, [str(sample / "nothing.root")])
    with pytest.raises(SystemExit, match=r"is also in another file"):
        bench.sumet_features(features, [root, root])

    argv = ["x", "--train", features, "--test", features, "--epochs", "1", "--samples", "8"]
    argv += ["--train-root", root, "--test-root", root]
    monkeypatch.setattr("sys.argv", [*argv, "--variants", "shipped,roots,sumet,wide"])
    bench.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    names = [r.split("|")[1].strip() for r in rows[1:]]
    assert names == ["quadratic (point)", "shipped", "+ roots", "+ ln sumEt", "wide set encoder"]
    assert "pz CRPS + roots / shipped:" in out
    assert "pz CRPS + ln sumEt / shipped:" in out
    assert "pz CRPS wide set encoder / shipped:" in out
    sizes = [int(line.split("(")[1].split()[0]) for line in out.splitlines() if line.startswith("trained ")]
    assert sizes[2] > sizes[0]  # the wide encoder has more parameters
    monkeypatch.setattr("sys.argv", [*argv, "--variants", "roots"])
    with pytest.raises(SystemExit, match="shipped first"):
        bench.main()
