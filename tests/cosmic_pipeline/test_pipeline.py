"""The cosmic-ray source analysis end to end with tiny settings: train, infer, compare, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.config import from_dict, read_toml, shipped_config
from hepflow.cosmic import Observation
from hepflow.cosmic.compare import compare, marginal_metrics, summarize_metrics
from hepflow.cosmic.config import PARAMETERS, CosmicConfig, load_config
from hepflow.cosmic.data import load_training_data
from hepflow.cosmic.network import load_flow, make_ensemble
from hepflow.cosmic.pipeline import infer, train
from hepflow.cosmic.posterior import posterior_log_prob, sample_posterior
from hepflow.cosmic.report import make_report
from hepflow.errors import ConfigError, InputError, ModelError, OutputError

from .conftest import TINY_FLOW

#: A likelihood mode as listed in the MCMC summary.
MODE = {"gamma": 1.0, "lg_rcut": 18.7, "f_H": 0.1, "f_He": 0.5, "f_N": 0.3, "f_Si": 0.1, "f_Fe": 0.0}
CONFIG = shipped_config("cosmic")
N_TRAIN = 3000
TINY = {
    "flow": TINY_FLOW,
    "training": {"epochs": 2, "batch_size": 256, "seed": 3, "device": "cpu"},
    "inference": {"samples": 300},
    "mcmc": {"n_walkers": 12, "n_steps": 200, "check_every": 100, "n_starts": 1, "n_candidates": 64},
    "comparison": {"n_mocks": 1, "samples": 300, "n_calibration": 40, "calibration_samples": 60},
}


@pytest.fixture(scope="module")
def tiny_cfg() -> CosmicConfig:
    return from_dict(CosmicConfig, TINY)


@pytest.fixture(scope="module")
def pe_file(tmp_path_factory) -> Path:
    from hepflow.cosmic.generate import generate_cosmic

    path = tmp_path_factory.mktemp("cosmic") / "pe.root"
    generate_cosmic(path, n=N_TRAIN, seed=5, progress=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pe_file, tiny_cfg) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cosmic") / "model"
    return out, train(pe_file, out, config=tiny_cfg, progress=False)


# ---------------------------------------------------------------------------- config
def test_shipped_config_has_the_analysis_sections() -> None:
    cfg = CosmicConfig.from_file(CONFIG)
    assert cfg.flow.summary == "cnn"
    assert cfg.training.epochs >= 1
    assert cfg.comparison.n_mocks >= 20
    assert cfg.comparison.n_calibration >= 200
    assert cfg.comparison.seed != cfg.generation.seed
    assert load_config(None) == cfg


# ---------------------------------------------------------------------------- train / load
def test_training_writes_a_loadable_model(trained) -> None:
    out, summary = trained
    assert summary["pseudo_experiments"] == N_TRAIN
    assert summary["epochs"] == 2
    for name in ("flow/config.json", "flow/model.safetensors", "history.json", "loss.png", "training.json"):
        assert (out / name).stat().st_size > 0, name
    model = load_flow(out)
    assert model.metadata["analysis"] == "auger_sources"
    assert len(model.metadata["features"]["names"]) == 943
    assert load_flow(out / "flow").metadata == model.metadata  # the folder itself works too


def test_training_data_from_processed_features_matches_the_ntuple(pe_file, tmp_path) -> None:
    from hepflow.cosmic.processor import process_cosmic
    from hepflow.processing import RunConfig

    binning = CosmicConfig().model.binning()
    process_cosmic([pe_file], tmp_path / "features", run_config=RunConfig(progress=False, chunksize=1000))
    theta_p, feats_p = load_training_data(tmp_path / "features", binning=binning, max_n=1500)
    theta_n, feats_n = load_training_data(pe_file, binning=binning, max_n=1500)
    order = np.lexsort(theta_p.T), np.lexsort(theta_n.T)
    np.testing.assert_allclose(theta_p[order[0]], theta_n[order[1]])
    np.testing.assert_allclose(feats_p[order[0]], feats_n[order[1]], rtol=1e-6, atol=1e-6)


def test_training_refuses_an_ntuple_of_another_prior(pe_file, tmp_path) -> None:
    cfg = from_dict(CosmicConfig, {**TINY, "prior": {"gamma": [-2.0, 2.0]}})
    with pytest.raises(InputError, match="another prior"):
        train(pe_file, tmp_path / "m", config=cfg, progress=False)


def test_foreign_or_mismatching_models_are_refused(trained, tmp_path) -> None:
    import hepflow

    out, _ = trained
    foreign = hepflow.ConditionalINN(2, 3, depth=1, width=8)
    hepflow.save_model(foreign, tmp_path / "nu", metadata={"analysis": "ttbar_neutrino"})
    with pytest.raises(ModelError, match="ttbar_neutrino"):
        load_flow(tmp_path / "nu")
    with pytest.raises(ModelError, match="no cosmic model"):
        load_flow(tmp_path / "nothing")
    # same analysis, other feature layout
    doc = json.loads((out / "flow" / "config.json").read_text())
    doc["metadata"]["features"]["names"] = doc["metadata"]["features"]["names"][:-1]
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "config.json").write_text(json.dumps(doc))
    (tmp_path / "edited" / "model.safetensors").write_bytes((out / "flow" / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="other features"):
        load_flow(tmp_path / "edited")
    # a config with another prior or forward model
    with pytest.raises(ModelError, match="prior"):
        load_flow(out, config=from_dict(CosmicConfig, {"prior": {"lg_rcut": [17.0, 19.5]}}))
    with pytest.raises(ModelError, match="forward_model"):
        load_flow(out, config=from_dict(CosmicConfig, {"model": {"hadronic_model": "QGSJetII-04"}}))


# ---------------------------------------------------------------------------- inference
def _check_support(x: np.ndarray) -> None:
    fractions = x[:, 2:]
    assert np.isfinite(x).all()
    assert (fractions >= 0).all()
    np.testing.assert_allclose(fractions.sum(axis=1), 1.0, atol=1e-5)
    assert ((x[:, 0] >= -3.0) & (x[:, 0] <= 3.0)).all()
    assert ((x[:, 1] >= 17.5) & (x[:, 1] <= 19.5)).all()


def test_infer_writes_posterior_columns_in_the_support(trained, tmp_path) -> None:
    out, _ = trained
    summary = infer(out, "auger", output_dir=tmp_path / "auger", samples=400, seed=3)
    cols = ak.from_parquet(tmp_path / "auger" / "samples.parquet")
    assert cols.fields[:7] == list(PARAMETERS)
    x = np.stack([ak.to_numpy(cols[p]) for p in PARAMETERS], axis=1)
    assert x.shape == (400, 7)
    _check_support(x)
    tree = uproot.open(tmp_path / "auger" / "samples.root")["Posterior"]
    np.testing.assert_array_equal(tree["f_He"].array(library="np"), x[:, 3])
    written = json.loads((tmp_path / "auger" / "summary.json").read_text())
    assert written["samples"] == 400
    for name in PARAMETERS:
        stats = written["posterior"][name]
        assert {"mean", "median", "std", "q0.16", "q0.84", "mode"} <= set(stats)
        assert stats["mean"] == pytest.approx(x[:, PARAMETERS.index(name)].mean())
    assert summary["seconds"]["to_posterior"] > 0
    # same seed, same samples; an existing output is not replaced silently
    with pytest.raises(OutputError, match="exists"):
        infer(out, "auger", output_dir=tmp_path / "auger", samples=400, seed=3)
    infer(out, "auger", output_dir=tmp_path / "auger", samples=400, seed=3, overwrite=True)
    again = ak.from_parquet(tmp_path / "auger" / "samples.parquet")
    np.testing.assert_array_equal(ak.to_numpy(again.gamma), x[:, 0])


def test_infer_on_a_pseudo_experiment_file(trained, pe_file, tmp_path) -> None:
    out, _ = trained
    summary = infer(out, pe_file, output_dir=tmp_path / "pe", samples=100, entry=7)
    assert summary["entry"] == 7
    cols = ak.from_parquet(tmp_path / "pe" / "samples.parquet")
    _check_support(np.stack([ak.to_numpy(cols[p]) for p in PARAMETERS], axis=1))


# ---------------------------------------------------------------------------- metrics
def test_marginal_metrics_on_gaussians_with_known_answers() -> None:
    g = np.random.default_rng(1)
    n = 200_000
    mcmc = g.normal(0.0, 2.0, size=(n, 2))
    cinn = np.column_stack([g.normal(0.6, 2.0, n), g.normal(0.0, 2.4, n)])
    m = marginal_metrics(cinn, mcmc, ["shifted", "wider"])
    # a shift by 0.3 sigma: mean shift and W1 are 0.3 sigma, widths agree
    assert m["shifted"]["mean_shift"] == pytest.approx(0.3, abs=0.01)
    assert m["shifted"]["wasserstein"] == pytest.approx(0.3, abs=0.01)
    assert m["shifted"]["width_ratio"] == pytest.approx(1.0, abs=0.01)
    # 20 % wider: W1 between N(0, s) and N(0, 1.2 s) is 0.2 s E|Z| = 0.2 sqrt(2 / pi) s
    assert m["wider"]["width_ratio"] == pytest.approx(1.2, abs=0.01)
    assert m["wider"]["wasserstein"] == pytest.approx(0.2 * np.sqrt(2 / np.pi), abs=0.01)
    assert m["wider"]["mean_shift"] == pytest.approx(0.0, abs=0.01)
    with pytest.raises(InputError):
        marginal_metrics(cinn, mcmc[:, :1], ["a", "b"])


def test_summarize_metrics_counts_the_targets() -> None:
    per = [
        {"a": {"mean_shift": -0.1, "width_ratio": 1.1, "wasserstein": 0.1}},
        {"a": {"mean_shift": 0.5, "width_ratio": 0.7, "wasserstein": 0.5}},
        {"a": {"mean_shift": 0.15, "width_ratio": 1.25, "wasserstein": 0.2}},
        {"a": {"mean_shift": float("nan"), "width_ratio": float("nan"), "wasserstein": float("nan")}},
    ]
    s = summarize_metrics(per, ["a"])
    assert s["a"]["abs_mean_shift"]["median"] == pytest.approx(0.15)
    assert s["a"]["abs_mean_shift"]["n"] == 3
    assert s["a"]["mean_within_tol"] == pytest.approx(2 / 3)
    assert s["a"]["width_within_tol"] == pytest.approx(1 / 3)
    assert s["all"]["wasserstein"]["median"] == pytest.approx(0.2)


# ---------------------------------------------------------------------------- compare + report
def test_compare_and_report_on_tiny_inputs(trained, tiny_cfg, tmp_path) -> None:
    out, _ = trained
    comp = compare(out, tmp_path / "cmp", config=tiny_cfg, progress=False)
    assert comp["n_mocks"] == 1
    row = comp["mocks"][0]
    assert set(row["metrics"]) == set(PARAMETERS)
    assert row["time_ratio"] == pytest.approx(row["mcmc_seconds"] / row["cinn_seconds"])
    conv = comp["summary_mcmc_converged"]
    if row["mcmc_converged"]:
        assert conv["all"]["abs_mean_shift"]["n"] == 7
    else:
        assert conv is None
    timing = comp["timing"]
    assert timing["cinn_model_load_seconds"] > 0
    assert timing["time_ratio_median_with_model_load"] == pytest.approx(
        row["mcmc_seconds"] / (row["cinn_seconds"] + timing["cinn_model_load_seconds"])
    )
    assert (tmp_path / "cmp" / "mcmc" / "mock_000.parquet").is_file()
    assert comp["summary"]["all"]["abs_mean_shift"]["n"] == 7
    imp = row["importance"]
    assert 0 < imp["efficiency"] <= 1
    assert imp["ess"] == pytest.approx(imp["efficiency"] * 300)
    assert set(imp["metrics"]) == set(PARAMETERS)
    assert comp["summary_importance"]["all"]["abs_mean_shift"]["n"] == 7
    assert comp["importance"]["time_ratio_median"] == pytest.approx(
        row["mcmc_seconds"] / (row["cinn_seconds"] + imp["seconds"])
    )
    cal = comp["calibration"]
    assert cal["n_observations"] == 40
    assert set(cal["coverage"]) == {"0.68", "0.95"}
    # the deviation from what a calibrated posterior covers with 60 draws (0.95 x 59/61), not 0.95
    assert cal["coverage_target"]["0.95"] == pytest.approx(0.95 * 59 / 61)
    assert cal["max_coverage_deviation"]["0.95"] == pytest.approx(
        max(abs(c - 0.95 * 59 / 61) for c in cal["coverage"]["0.95"].values())
    )
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["n_mocks"] == 1

    # an MCMC output directory of the Auger data (here: the mock's samples stand in for it)
    mcmc_dir = tmp_path / "mcmc_auger"
    mcmc_dir.mkdir()
    (mcmc_dir / "samples.parquet").write_bytes((tmp_path / "cmp" / "mcmc" / "mock_000.parquet").read_bytes())
    (mcmc_dir / "summary.json").write_text(
        json.dumps(
            {
                "wall_time_s": 1.5,
                "converged": False,
                "modes": [MODE],
                "settings": {"observation": "auger", "lg_e_min": tiny_cfg.model.lg_e_min},
            }
        )
    )
    report = make_report(
        out, tmp_path / "report", config=tiny_cfg, mcmc_auger=mcmc_dir, comparison=tmp_path / "cmp"
    )
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["combined_fit_reference"]["values"]["f_He"] == 0.673
    assert any("2014" in c and "2020" in c for c in saved["caveats"])
    assert set(saved["cinn"]["posterior"]) == set(PARAMETERS)
    assert 0 < saved["cinn"]["importance"]["efficiency"] <= 1
    assert saved["comparison"]["summary_importance"]["all"]["abs_mean_shift"]["n"] == 7
    assert saved["time_ratio_mcmc_over_cinn"] == pytest.approx(1.5 / saved["cinn"]["seconds_to_posterior"])
    assert "calibration" in saved
    (closure,) = saved["closure_at_mcmc_modes"]
    assert closure["theta"]["f_He"] == 0.5
    assert len(closure["pull"]) == 2
    assert "comparison" in saved
    for plot in ("corner_auger.png", "corner_auger_wide.png", "comparison_mocks.png"):
        assert (tmp_path / "report" / plot).stat().st_size > 0, plot
    for plot in ("sbc_ranks.png", "coverage.png", "tarp.png"):
        assert (tmp_path / "cmp" / plot).stat().st_size > 0, plot
        assert str(tmp_path / "cmp" / plot) in report["plots"]
    assert len(report["plots"]) >= 5
    with pytest.raises(InputError, match=r"samples\.parquet"):
        make_report(out, tmp_path / "r2", config=tiny_cfg, mcmc_auger=tmp_path / "missing")


def test_compare_reuses_the_mcmc_of_an_earlier_comparison(trained, tiny_cfg, tmp_path) -> None:
    """``mcmc_from`` gives the same comparison without running the MCMC; other mocks are refused."""
    import dataclasses

    out, _ = trained
    first = compare(out, tmp_path / "a", config=tiny_cfg, n_calibration=0, progress=False)
    again = compare(
        out, tmp_path / "b", config=tiny_cfg, n_calibration=0, mcmc_from=tmp_path / "a", progress=False
    )
    (r1,), (r2,) = first["mocks"], again["mocks"]
    assert r2["observation_sha256"] == r1["observation_sha256"]
    for key in ("mcmc_seconds", "mcmc_converged", "mcmc_steps", "mcmc_samples", "mcmc_modes"):
        assert r2[key] == r1[key], key
    assert r2["metrics"] == r1["metrics"]  # same cINN seed, same MCMC samples
    assert again["settings"]["mcmc_from"] == str(tmp_path / "a")
    copied = ak.from_parquet(tmp_path / "b" / "mcmc" / "mock_000.parquet")
    assert ak.to_list(copied) == ak.to_list(ak.from_parquet(tmp_path / "a" / "mcmc" / "mock_000.parquet"))

    other_mcmc = dataclasses.replace(tiny_cfg, mcmc=dataclasses.replace(tiny_cfg.mcmc, seed=99))
    with pytest.raises(InputError, match=r"comparison\.json: MCMC settings differ .*\(seed\)"):
        compare(out, tmp_path / "c", config=other_mcmc, n_calibration=0, mcmc_from=tmp_path / "a")
    other_mocks = dataclasses.replace(tiny_cfg, comparison=dataclasses.replace(tiny_cfg.comparison, seed=5))
    with pytest.raises(InputError, match="mock 0 is not the same observation"):
        compare(out, tmp_path / "c", config=other_mocks, n_calibration=0, mcmc_from=tmp_path / "a")
    with pytest.raises(InputError, match="has 1 mocks; this comparison needs 2"):
        compare(out, tmp_path / "c", config=tiny_cfg, n_mocks=2, n_calibration=0, mcmc_from=tmp_path / "a")
    with pytest.raises(InputError, match=r"missing.comparison\.json: not found"):
        compare(out, tmp_path / "c", config=tiny_cfg, n_calibration=0, mcmc_from=tmp_path / "missing")
    saved = ak.from_parquet(tmp_path / "a" / "mcmc" / "mock_000.parquet")
    ak.to_parquet(
        saved[[f for f in saved.fields if f != "f_Fe"]], tmp_path / "a" / "mcmc" / "mock_000.parquet"
    )
    with pytest.raises(InputError, match=r"mock_000\.parquet: lacks the parameter columns \['f_Fe'\]"):
        compare(out, tmp_path / "c", config=tiny_cfg, n_calibration=0, mcmc_from=tmp_path / "a")
    (tmp_path / "a" / "mcmc" / "mock_000.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(InputError, match=r"mock_000\.parquet: unreadable parquet"):
        compare(out, tmp_path / "c", config=tiny_cfg, n_calibration=0, mcmc_from=tmp_path / "a")
    assert not (tmp_path / "c" / "comparison.json").exists()


def test_read_toml_roundtrip_of_the_tiny_settings(tmp_path) -> None:
    """The tiny settings written as TOML load through the same strict reader as the shipped file."""
    lines = []
    for section, values in TINY.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    assert CosmicConfig.from_file(path) == from_dict(CosmicConfig, read_toml(path))
    assert CosmicConfig.from_file(path).flow.cnn_channels == (4,)


def test_stick_breaking_fractions_train_save_and_load(pe_file, tmp_path) -> None:
    """``[flow] simplex = "stick_breaking"``: trained, saved and loaded with those coordinates."""
    settings = {
        **TINY,
        "flow": {**TINY["flow"], "simplex": "stick_breaking"},
        "training": {**TINY["training"], "epochs": 1},
    }
    cfg = from_dict(CosmicConfig, settings)
    train(pe_file, tmp_path / "m", config=cfg, progress=False)
    model = load_flow(tmp_path / "m", config=cfg)
    (simplex,) = [c for c in model.support.constraints if c.dims == (2, 3, 4, 5, 6)]
    assert simplex.coordinates == "stick_breaking"
    x, _ = sample_posterior(model, Observation.from_auger(), 200, seed=1)
    np.testing.assert_allclose(x[0][:, 2:].sum(1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="simplex"):
        from_dict(CosmicConfig, {"flow": {"simplex": "ilr"}})


def test_importance_weights_of_the_cinn_samples(trained, tiny_cfg, tmp_path) -> None:
    """``infer(importance=True)``: a weight column, ESS, and densities in the prior's measure."""
    from hepflow.cosmic import Likelihood

    out, _ = trained
    summary = infer(out, "auger", output_dir=tmp_path / "w", samples=3000, seed=3, importance=True)
    cols = ak.from_parquet(tmp_path / "w" / "samples.parquet")
    w = ak.to_numpy(cols.weight)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= 0).all()
    imp = summary["importance"]
    assert 1.0 <= imp["ess"] <= 3000
    assert imp["efficiency"] == pytest.approx(imp["ess"] / 3000)
    assert imp["ess"] == pytest.approx(1.0 / np.sum(w**2))
    assert set(summary["posterior_importance"]) == set(PARAMETERS)
    # the weights from the written columns: likelihood x prior / cINN density
    x = np.stack([ak.to_numpy(cols[p]) for p in PARAMETERS], axis=1)
    obs = Observation.from_auger()
    cfg = load_config()
    log_w = Likelihood(obs, model=cfg.model.build(reference=obs))(x) + cfg.prior.build().log_prob(x)
    log_w -= ak.to_numpy(cols.log_prob)
    np.testing.assert_allclose(w, np.exp(log_w - log_w.max()) / np.exp(log_w - log_w.max()).sum(), rtol=1e-6)
    # the cINN density and the prior's are densities in the same coordinates (gamma, lg_rcut and
    # the first four fractions): E_q[prior / q] = 1, the prior being normalised on its support
    model = load_flow(out)
    xs, log_q = sample_posterior(model, obs, 20_000, seed=5)
    ratio = np.exp(cfg.prior.build().log_prob(xs[0]) - log_q[0])
    error = ratio.std() / np.sqrt(ratio.size)
    assert error < 0.04  # the barely trained cINN is broad: the estimate is precise (~0.02)
    assert ratio.mean() == pytest.approx(1.0, abs=max(4 * error, 0.05))


# ---------------------------------------------------------------------------- training proposal
PROPOSAL = {"prior_weight": 0.5, "concentration": 0.3}


class _ProposalDraws:
    """A stand-in for a cINN whose posterior under the proposal is the proposal itself (an
    uninformative observation): the corrected draws must follow the prior."""

    theta_dim = 7

    def __init__(self, proposal, *, sparse_only: bool = False) -> None:
        from hepflow.cosmic import Binning

        self.proposal = proposal
        self.sparse_only = sparse_only
        self.binning = Binning.auger()
        self.metadata = {
            "summary": "cnn",
            "prior": {"gamma": [-3.0, 3.0], "lg_rcut": [17.5, 19.5], "concentration": 1.0},
            "proposal": PROPOSAL,
        }
        self.calls = 0

    def sample(self, m, ctx, *, return_log_prob, generator):
        import torch

        self.calls += 1
        n_obs = len(next(iter(ctx.values())))
        seed = int(torch.randint(2**31, (), generator=generator))
        source = self.proposal._sparse if self.sparse_only else self.proposal
        x = source.sample(n_obs * m, rng=seed)
        lp = source.log_prob(x)
        return torch.from_numpy(x.reshape(n_obs, m, 7)), torch.from_numpy(lp.reshape(n_obs, m))


def test_corrected_draws_follow_the_prior_with_a_normalised_density() -> None:
    from scipy import stats

    from hepflow.cosmic import Prior, Proposal

    prior = Prior()
    stand_in = _ProposalDraws(Proposal(prior, **PROPOSAL))
    obs = [Observation.from_auger()] * 3
    x, log_q = sample_posterior(stand_in, obs, 8000, seed=4)
    assert x.shape == (3, 8000, 7)
    assert log_q.shape == (3, 8000)
    assert stand_in.calls <= 3  # a first round of ~n / lambda draws, at most a short top-up or two
    for i in range(3):
        for k in range(2, 7):  # flat Dirichlet: every fraction is Beta(1, 4)
            assert stats.kstest(x[i, :, k], stats.beta(1, 4).cdf).pvalue > 1e-3
        # the density of the accepted draws is the prior's, up to the estimated acceptance rate
        np.testing.assert_allclose(log_q[i], prior.log_prob(x[i]), atol=0.05)
    assert not np.array_equal(x[0], x[1])
    x2, _ = sample_posterior(stand_in, obs[:1], 8000, seed=4)
    np.testing.assert_array_equal(x2[0], sample_posterior(stand_in, obs[:1], 8000, seed=4)[0][0])
    # draws that (almost) never pass the correction are refused, with their rate
    faces = _ProposalDraws(Proposal(prior, **PROPOSAL), sparse_only=True)
    faces.metadata["proposal"] = {"prior_weight": 0.001, "concentration": 0.3}
    with pytest.raises(ModelError, match=r"observation 0: only \d+ of \d+ cINN draws pass"):
        sample_posterior(faces, obs[:1], 500, seed=1, max_draws=3)


def test_training_on_a_proposal_records_it_and_corrects_the_samples(pe_file, tmp_path) -> None:
    from hepflow.cosmic.generate import generate_cosmic

    settings = {**TINY, "proposal": PROPOSAL, "training": {**TINY["training"], "epochs": 1}}
    cfg = from_dict(CosmicConfig, settings)
    data = tmp_path / "pe_proposal.root"
    generate_cosmic(data, n=1000, seed=5, config=cfg, progress=False)
    meta = json.loads(uproot.open(data)["metadata"])
    assert meta["proposal"] == PROPOSAL
    theta = uproot.open(data)["PseudoExperiments"].arrays(["f_N", "f_Si", "f_Fe"], library="np")
    faces = np.mean((theta["f_N"] < 0.01) & (theta["f_Si"] < 0.01) & (theta["f_Fe"] < 0.01))
    assert faces > 0.004  # 0.5 x 0.021 expected, 1.1e-4 under the flat prior
    # the proposal of the data and of the config must agree, either way round
    with pytest.raises(InputError, match="proposal"):
        train(data, tmp_path / "m0", config=from_dict(CosmicConfig, TINY), progress=False)
    with pytest.raises(InputError, match="proposal"):
        train(pe_file, tmp_path / "m0", config=cfg, progress=False)
    train(data, tmp_path / "m", config=cfg, progress=False)
    model = load_flow(tmp_path / "m", config=cfg)
    assert model.metadata["proposal"] == PROPOSAL
    x, log_q = sample_posterior(model, Observation.from_auger(), 500, seed=2)
    _check_support(x[0])
    assert np.isfinite(log_q).all()
    summary = infer(tmp_path / "m", "auger", output_dir=tmp_path / "post", samples=500, seed=2)
    cols = ak.from_parquet(tmp_path / "post" / "samples.parquet")
    np.testing.assert_allclose(ak.to_numpy(cols.gamma), x[0][:, 0], rtol=1e-6)
    assert summary["samples"] == 500


def test_training_starts_from_a_trained_model(trained, pe_file, tiny_cfg, tmp_path) -> None:
    """``train(init=...)``: the weights of an earlier model; another architecture is refused."""
    import torch

    out, _ = trained
    cfg = from_dict(CosmicConfig, {**TINY, "training": {**TINY["training"], "epochs": 1, "lr": 1e-12}})
    summary = train(pe_file, tmp_path / "warm", config=cfg, progress=False, init=out)
    assert summary["init"] == str(out)
    before, after = load_flow(out).state_dict(), load_flow(tmp_path / "warm").state_dict()
    assert before.keys() == after.keys()
    for k in before:  # a learning rate of 1e-12 leaves the initial weights where they were
        torch.testing.assert_close(after[k].float(), before[k].float(), atol=1e-6, rtol=1e-5)
    assert load_flow(tmp_path / "warm").metadata["training"]["init"] == str(out)
    wider = from_dict(CosmicConfig, {**TINY, "flow": {**TINY["flow"], "width": 24}})
    with pytest.raises(ModelError, match="width"):
        train(pe_file, tmp_path / "w", config=wider, progress=False, init=out)
    other = from_dict(CosmicConfig, {**TINY, "model": {"hadronic_model": "QGSJetII-04"}})
    with pytest.raises(ModelError, match="forward_model"):
        train(pe_file, tmp_path / "p", config=other, progress=False, init=out)


# ---------------------------------------------------------------------------- ensembles
def test_ensemble_of_trained_models_is_used_like_one_model(trained, pe_file, tmp_path) -> None:
    from hepflow.flows import FlowEnsemble

    out, _ = trained
    cfg = from_dict(CosmicConfig, {**TINY, "training": {**TINY["training"], "epochs": 1, "seed": 8}})
    train(pe_file, tmp_path / "second", config=cfg, progress=False)
    ens_dir = make_ensemble([out, tmp_path / "second"], tmp_path / "ens", config=cfg)
    assert sorted(p.name for p in ens_dir.iterdir()) == ["ensemble.json", "member_0", "member_1"]
    ens = load_flow(ens_dir, config=cfg)
    assert isinstance(ens, FlowEnsemble)
    assert ens.metadata["prior"] == load_flow(out).metadata["prior"]
    obs = Observation.from_auger()
    x, log_q = sample_posterior(ens, obs, 400, seed=1)
    _check_support(x[0])
    np.testing.assert_allclose(posterior_log_prob(ens, obs, x), log_q, rtol=1e-5, atol=1e-4)
    x2, none = sample_posterior(ens, obs, 400, seed=1, log_prob=False)
    assert none is None
    np.testing.assert_array_equal(x2, x)
    # the mixture density is the mean of the members' densities
    members = [load_flow(out), load_flow(tmp_path / "second")]
    each = np.stack([posterior_log_prob(m, obs, x) for m in members])
    np.testing.assert_allclose(log_q, np.logaddexp(each[0], each[1]) - np.log(2), rtol=1e-5, atol=1e-4)
    # a single flow's sampling pass gives its density at no cost: returned even without asking
    x1, lq1 = sample_posterior(members[0], obs, 400, seed=1, log_prob=False)
    np.testing.assert_allclose(lq1, posterior_log_prob(members[0], obs, x1), rtol=1e-5, atol=1e-4)
    with pytest.raises(ModelError, match="is an ensemble: initialise from one of its members"):
        train(pe_file, tmp_path / "warm", config=cfg, progress=False, init=ens_dir)
    summary = infer(ens_dir, "auger", output_dir=tmp_path / "post", samples=400, seed=1)
    assert summary["samples"] == 400
    with pytest.raises(OutputError, match="exists"):
        make_ensemble([out, tmp_path / "second"], tmp_path / "ens")
    with pytest.raises(ConfigError, match="an ensemble already"):
        make_ensemble([out, ens_dir], tmp_path / "nested")
    from hepflow.cli import main

    assert (
        main(
            [
                "ensemble",
                "cosmic",
                "--models",
                str(out),
                str(tmp_path / "second"),
                "--output",
                str(ens_dir),
                "--overwrite",
            ]
        )
        == 0
    )
    assert isinstance(load_flow(ens_dir), FlowEnsemble)


def test_ensembles_of_different_posteriors_are_refused(trained, pe_file, tmp_path) -> None:
    out, _ = trained
    mlp = from_dict(
        CosmicConfig,
        {**TINY, "flow": {**TINY["flow"], "summary": "mlp"}, "training": {**TINY["training"], "epochs": 1}},
    )
    train(pe_file, tmp_path / "mlp", config=mlp, progress=False)
    with pytest.raises(ModelError, match="member 1 differs from member 0 in summary"):
        make_ensemble([out, tmp_path / "mlp"], tmp_path / "e1")
    with pytest.raises(ConfigError, match="at least two"):
        make_ensemble([out], tmp_path / "e2")
    assert not (tmp_path / "e1").exists()
    assert not (tmp_path / "e2").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ensemble.json").write_text("{}")
    with pytest.raises(ModelError, match="not an ensemble description"):
        load_flow(tmp_path / "broken")


# ---------------------------------------------------------------------------- closure at a mode
def test_mode_closure_benchmark_runs_cinn_and_mcmc_on_mocks_at_a_mode(trained, tiny_cfg, tmp_path) -> None:
    from tests.conftest import load_benchmark

    bench = load_benchmark("cosmic_mode_closure")
    out, _ = trained
    (tmp_path / "mcmc").mkdir()
    (tmp_path / "mcmc" / "summary.json").write_text(json.dumps({"modes": [{**MODE, "deviance": 250.0}]}))
    theta = bench.mode_parameters(tmp_path / "mcmc", 0)
    np.testing.assert_array_equal(theta, [MODE[p] for p in PARAMETERS])
    with pytest.raises(InputError, match="lists 1 modes; there is no mode 3"):
        bench.mode_parameters(tmp_path / "mcmc", 3)
    with pytest.raises(InputError, match="no MCMC summary"):
        bench.mode_parameters(tmp_path / "nothing", 0)
    (row,) = bench.closure(out, theta, mocks=1, samples=300, config=tiny_cfg)
    assert row["truth"] == MODE
    assert 1.0 <= row["importance_ess"] <= 300
    assert np.isfinite(row["log_likelihood_truth"])
    assert row["cinn_best_log_likelihood"] <= 0
    assert set(row["mcmc_mean"]) == set(PARAMETERS)
    assert -3 <= row["mcmc_mean"]["gamma"] <= 3
    assert sum(row["mcmc_mean"][p] for p in PARAMETERS[2:]) == pytest.approx(1.0)
    assert row["mcmc_modes"]
    # the log posterior density at the truth (its likelihood x prior), the MCMC mean, the cINN mean
    (dens,) = bench.likelihoods_at([row], theta, mocks=1, config=tiny_cfg)
    prior = tiny_cfg.prior.build()
    assert dens["truth"] == pytest.approx(row["log_likelihood_truth"] + float(prior.log_prob(theta[None])[0]))
    assert np.isfinite([dens["mcmc_mean"], dens["cinn_mean"]]).all()
    # the refined posterior for the mock (tiny budget): its columns, and a third method in the summary
    import copy

    (ref,) = bench.refine_rows(
        [copy.deepcopy(row)], theta, out, mocks=1, refine=1, workdir=tmp_path / "ref", samples=200,
        config=tiny_cfg, refine_options={"rounds": 1, "simulations": 100, "epochs": 1, "distill_steps": 0},
    )  # fmt: skip
    assert set(ref["refined_mean"]) == set(PARAMETERS)
    assert ref["refined_seconds"] > 0
    assert ref["refined_efficiency"] is None  # no distillation asked
    assert (tmp_path / "ref" / "mock_000" / "flow").is_dir()
    assert bench.summarize([ref])["refined"]["mocks"] == 1
    assert "refined" not in bench.summarize([row])
    summary = bench.summarize([row, row])
    pull = (row["cinn_mean"]["gamma"] - MODE["gamma"]) / row["cinn_std"]["gamma"]
    assert summary["cinn"]["pull_median"]["gamma"] == pytest.approx(pull)
    assert summary["mcmc"]["coverage_68"] == pytest.approx(np.mean(list(row["mcmc_inside_68"].values())))
    with pytest.raises(InputError, match="mode 0 has no nu_E, nu_X"):
        bench.mode_parameters(tmp_path / "mcmc", 0, nuisances=True)
    # resuming: the finished mock is kept, not run again; every new row is handed on
    seen: list[int] = []
    rows = bench.closure(
        out,
        theta,
        mocks=2,
        samples=300,
        config=tiny_cfg,
        done=[row],
        on_row=lambda so_far: seen.append(len(so_far)),
    )
    assert [r["mock"] for r in rows] == [0, 1]
    assert rows[0] is row
    assert seen == [2]
    assert rows[1]["cinn_mean"] != row["cinn_mean"]  # the second mock is another observation
    # main() resumes only a run with the same options: another --mocks simulates other mocks
    out_json = tmp_path / "rows.json"
    out_json.write_text(
        json.dumps({"mode": 0, "settings": {"mocks": 3}, "theta": theta.tolist(), "rows": rows})
    )
    argv = ["x", "--model", str(out), "--mcmc-auger", str(tmp_path / "mcmc"), "--mocks", "2"]
    argv += ["--output", str(out_json)]
    with mock.patch.object(sys, "argv", argv), pytest.raises(InputError, match="mocks of another run"):
        bench.main()
    out_json.write_text("[]")
    with mock.patch.object(sys, "argv", argv), pytest.raises(InputError, match="not the output of this"):
        bench.main()
