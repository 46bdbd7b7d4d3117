"""Nuisance parameters in the pipeline: config, MCMC, generator, model metadata, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.cli import main
from hepflow.config import to_dict
from hepflow.cosmic import ForwardModel, Observation, Systematics
from hepflow.cosmic.config import PARAMETERS, CosmicConfig
from hepflow.cosmic.data import load_training_data
from hepflow.cosmic.generate import generate_cosmic
from hepflow.cosmic.mcmc import UnconstrainedPosterior, mcmc_cosmic, run_mcmc
from hepflow.cosmic.network import check_model, model_metadata
from hepflow.cosmic.pipeline import train
from hepflow.cosmic.report import _read_mcmc
from hepflow.errors import ConfigError, InputError, ModelError

from .conftest import INTERIOR

ON = {"systematics": {"enabled": True}}
TINY_MCMC = {"n_walkers": 16, "n_steps": 20, "check_every": 10, "n_starts": 1, "n_candidates": 64}


@pytest.fixture(scope="module")
def shifted(model: ForwardModel) -> ForwardModel:
    return ForwardModel(Observation(model.binning, np.ones(15), np.ones((9, 100))), systematics=Systematics())


@pytest.fixture(scope="module")
def pe_syst(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cosmic") / "pe_syst.root"
    generate_cosmic(path, n=400, seed=11, config=CosmicConfig.from_dict(ON), progress=False)
    return path


# ---------------------------------------------------------------------------- config
def test_systematics_section_is_off_by_default_and_read_strictly(tmp_path: Path) -> None:
    cfg = CosmicConfig.from_file(None)
    assert cfg.systematics.enabled is False
    assert cfg.systematics.build() is None
    assert cfg.systematics.metadata() is None
    on = CosmicConfig.from_dict({"systematics": {"enabled": True, "xmax_scale": 9.0, "energy_scale": 0.1}})
    assert on.systematics.build() == Systematics(energy_scale=0.1, xmax_scale=9.0)
    assert on.systematics.metadata()["parameters"] == ["nu_E", "nu_X"]
    for text, message in [
        ("[systematics]\nenable = true\n", "unknown key 'enable'"),
        ("[systematics]\nenergy_scale = -0.14\n", "energy_scale must be > 0"),
        ("[systematics]\nxmax_scale = 'auger2019'\n", "xmax_scale must be"),
        ("[systematics]\nenabled = 'yes'\n", "enabled"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as err:
            CosmicConfig.from_file(path)
        assert str(path) in str(err.value)


def test_cli_refuses_a_bad_systematics_section_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[systematics]\nenabled = true\nnu_max = 20\n")
    rc = main(
        ["mcmc", "cosmic", "--observation", "auger", "--output", str(tmp_path / "o"), "--config", str(path)]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert str(path) in err
    assert "nu_max must be between 1 and 10" in err


# ---------------------------------------------------------------------------- MCMC
def test_sampled_density_adds_the_nuisance_priors(auger: Observation, model: ForwardModel) -> None:
    from hepflow.cosmic import Likelihood, Prior

    syst_model = ForwardModel(auger, systematics=Systematics())
    plain = UnconstrainedPosterior(Likelihood(auger, model=model), Prior())
    with_nu = UnconstrainedPosterior(Likelihood(auger, model=syst_model), Prior())
    assert with_nu.ndim == 8
    assert with_nu.names[-2:] == ("nu_E", "nu_X")
    z = plain.to_unconstrained(INTERIOR)
    z8 = with_nu.to_unconstrained(INTERIOR)
    np.testing.assert_array_equal(z8[0, 6:], [0.0, 0.0])
    # at nu = 0 the only difference is the normalised N(0, 1) x N(0, 1) density at zero
    assert with_nu(z8)[0] == pytest.approx(plain(z)[0] - np.log(2 * np.pi), abs=1e-9)
    z8[0, 7] = 1.0
    assert np.isfinite(with_nu(z8)[0])
    z8[0, 7] = 4.5  # outside the truncation
    assert with_nu(z8)[0] == -np.inf


def test_mode_search_with_nuisances_finds_both_auger_minima(auger: Observation) -> None:
    from hepflow.cosmic import Likelihood, Prior
    from hepflow.cosmic.modes import find_modes

    post = UnconstrainedPosterior(
        Likelihood(auger, model=ForwardModel(auger, systematics=Systematics())), Prior()
    )
    modes = find_modes(post, 1)  # the [mcmc] defaults: 4096 candidates, 8 starts
    gammas = [m.theta[0] for m in modes]
    assert any(g < 0 for g in gammas)
    assert any(g > 0 for g in gammas)
    # both fit better than the deepest minimum without nuisances (D = 216, docs/cosmic_model.md)
    assert min(m.deviance for m in modes if m.theta[0] < 0) < 200
    assert min(m.deviance for m in modes if m.theta[0] > 0) < 200
    assert all(m.theta.size == 9 for m in modes)


def test_mcmc_recovers_an_xmax_shift_of_two_sigma(model: ForwardModel, shifted: ForwardModel) -> None:
    """Expected counts (10x the Auger statistics) at an interior point with nu_X = +2, nu_E = 0."""
    truth = np.concatenate([INTERIOR, [0.0, 2.0]])
    mu = shifted.expected(truth, n_spectrum=10 * model.n_spectrum, n_xmax=10 * model.n_xmax)
    mock = Observation(model.binning, mu["spectrum"][0], mu["xmax"][0])
    result = run_mcmc(
        mock,
        model=ForwardModel(mock, systematics=Systematics()),
        seed=2,
        n_walkers=20,
        n_steps=800,
        initial=INTERIOR,  # the nuisances start at 0, 25 posterior sd from nu_X = 2
        ball=0.05,
        check_every=400,
        stop_when_converged=False,
        progress=False,
    )
    assert result.names[-2:] == ("nu_E", "nu_X")
    nu = result.nuisances()
    late = nu[ak.to_numpy(result.samples["step"]) >= 400]
    mean, sd = late.mean(axis=0), late.std(axis=0)
    assert 0 < sd[1] < 0.5
    assert abs(mean[1] - 2.0) < 3 * sd[1] + 0.1, (mean, sd)
    assert abs(mean[0]) < 3 * sd[0] + 0.1, (mean, sd)
    summary = result.summary()
    assert set(summary["posterior"]) >= {"nu_E", "nu_X", "gamma"}
    assert summary["settings"]["systematics"]["energy_scale"] == 0.14
    assert result.theta().shape[1] == 7


def test_mcmc_cli_writes_the_nuisance_columns(pe_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text("[mcmc]\n" + "".join(f"{k} = {v}\n" for k, v in TINY_MCMC.items()))
    result = mcmc_cosmic(
        pe_file, tmp_path / "on", config=config, systematics=True, chain=True, progress=False
    )
    cols = ak.from_parquet(tmp_path / "on" / "samples.parquet").fields
    assert cols[:9] == ["gamma", "lg_rcut", "f_H", "f_He", "f_N", "f_Si", "f_Fe", "nu_E", "nu_X"]
    assert "nu_X" in ak.from_parquet(tmp_path / "on" / "chain.parquet").fields
    summary = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert summary["settings"]["systematics"]["xmax_scale"] == "auger2014"
    assert "nu_X" in summary["tau"]
    assert summary["model_check"]["mcmc"]["n_replicas"] >= 10  # replicas at the drawn nuisances
    assert "nu_E" in str(result)
    off = mcmc_cosmic(pe_file, tmp_path / "off", config=config, progress=False)
    assert off.nuisances() is None
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["settings"]["systematics"] is None
    with pytest.raises(ConfigError, match="at least 16"):
        run_mcmc(
            Observation.from_auger(),
            model=ForwardModel(systematics=Systematics()),
            seed=1,
            n_walkers=12,
            n_steps=5,
            progress=False,
        )


def test_report_takes_only_an_mcmc_with_its_nuisances(tmp_path: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text("[mcmc]\n" + "".join(f"{k} = {v}\n" for k, v in TINY_MCMC.items()))
    mcmc_cosmic("auger", tmp_path / "on", config=config, systematics=True, progress=False)
    with pytest.raises(
        InputError, match=r"holds an MCMC with systematics .* the report's config has systematics off"
    ):
        _read_mcmc(tmp_path / "on", 18.7)
    on = CosmicConfig.from_dict(ON).systematics.metadata()
    theta, _ = _read_mcmc(tmp_path / "on", 18.7, on)  # a report with the same [systematics] takes it
    assert theta.shape[1] == 9


# ---------------------------------------------------------------------------- generator, models
def test_generator_draws_the_nuisances_per_pseudo_experiment(pe_syst: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.root"
    generate_cosmic(plain, n=400, seed=11, progress=False)
    with uproot.open(pe_syst) as f, uproot.open(plain) as g:
        meta = json.loads(f["metadata"])
        assert meta["systematics"]["parameters"] == ["nu_E", "nu_X"]
        assert "systematics" not in json.loads(g["metadata"])
        assert "nu_E" not in g["PseudoExperiments"]
        a = f["PseudoExperiments"].arrays(library="np")
        b = g["PseudoExperiments"].arrays(library="np")
    nu = np.column_stack([a["nu_E"], a["nu_X"]])
    assert np.abs(nu).max() <= 4.0
    assert np.all(np.abs(nu.mean(axis=0)) < 0.2)
    assert np.all(np.abs(nu.std(axis=0) - 1.0) < 0.12)
    assert abs(np.corrcoef(nu.T)[0, 1]) < 0.15
    np.testing.assert_array_equal(a["gamma"], b["gamma"])  # same parameters, other pseudo-experiments
    assert not np.array_equal(a["xmax"], b["xmax"])


def test_training_data_and_models_must_agree_on_systematics(
    pe_syst: Path, pe_file: Path, tmp_path: Path
) -> None:
    off, on = CosmicConfig(), CosmicConfig.from_dict(ON)
    binning = off.model.binning()
    with pytest.raises(InputError, match="generated with systematics"):
        load_training_data(pe_syst, binning=binning, prior=to_dict(on.prior), systematics=None)
    with pytest.raises(InputError, match="generated with systematics off"):
        train(pe_file, tmp_path / "m", config=on, progress=False)
    with pytest.raises(InputError, match="generated with systematics"):
        train(pe_syst, tmp_path / "m", config=off, progress=False)
    meta_on, meta_off = model_metadata(on, binning), model_metadata(off, binning)
    assert meta_on["systematics"] == on.systematics.metadata()
    assert "systematics" not in meta_off  # models trained without keep their metadata
    check_model(meta_on, Path("m"), config=on)
    with pytest.raises(ModelError, match=r"trained with systematics .* the config's \[systematics\] is off"):
        check_model(meta_on, Path("m"), config=off)
    with pytest.raises(ModelError, match="trained with systematics off"):
        check_model(meta_off, Path("m"), config=on)


TINY_ON = {
    **ON,
    "flow": {
        "depth": 1,
        "width": 8,
        "bins": 4,
        "summary_width": 8,
        "flat_embedding": 4,
        "xmax_embedding": 4,
        "cnn_channels": [2],
        "mlp_embedding": 4,
    },
    "training": {"epochs": 1, "batch_size": 128, "device": "cpu"},
    "check": {"n_replicas": 100},  # the model checks of infer and report: the workflow, fast
}


@pytest.fixture(scope="module")
def model_syst(pe_syst: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cINN trained with [systematics] on ``pe_syst``."""
    path = tmp_path_factory.mktemp("cosmic") / "m"
    train(pe_syst, path, config=CosmicConfig.from_dict(TINY_ON), progress=False)
    return path


def test_a_model_trained_with_systematics_records_them(model_syst: Path, tmp_path: Path) -> None:
    from hepflow.cosmic.network import load_flow
    from hepflow.cosmic.pipeline import infer

    tiny = TINY_ON
    on = CosmicConfig.from_dict(tiny)
    meta = load_flow(model_syst, config=on).metadata
    assert meta["systematics"] == on.systematics.metadata()
    with pytest.raises(ModelError, match="the config's \\[systematics\\] is off"):
        load_flow(
            model_syst,
            config=CosmicConfig.from_dict({k: v for k, v in tiny.items() if k != "systematics"}),
        )
    summary = infer(model_syst, "auger", output_dir=tmp_path / "post", samples=50, config=on)
    assert summary["systematics"] == on.systematics.metadata()  # the output says it is marginalised
    # the MCMC it is compared with must carry the same nuisances
    mcmc_cfg = tmp_path / "mcmc.toml"
    mcmc_cfg.write_text("[mcmc]\n" + "".join(f"{k} = {v}\n" for k, v in TINY_MCMC.items()))
    mcmc_cosmic("auger", tmp_path / "mc_off", config=mcmc_cfg, progress=False)
    with pytest.raises(InputError, match="holds an MCMC with systematics off"):
        infer(
            model_syst,
            "auger",
            output_dir=tmp_path / "p2",
            samples=50,
            config=on,
            mcmc=tmp_path / "mc_off",
        )
    mcmc_cosmic("auger", tmp_path / "mc_on", config=mcmc_cfg, systematics=True, progress=False)
    both = infer(
        model_syst, "auger", output_dir=tmp_path / "p3", samples=50, config=on, mcmc=tmp_path / "mc_on"
    )
    assert set(both["model_check"]) == {"cinn", "mcmc"}
    assert "verdict" in both
    # importance weights with the likelihood marginalised over nu_E, nu_X (hepflow.cosmic.marginal)
    iw = infer(model_syst, "auger", output_dir=tmp_path / "post_iw", samples=50, importance=True, config=on)
    assert iw["importance"]["marginal_likelihood"]["draws"] == 32
    assert len(iw["importance"]["marginal_likelihood"]["mode_median"]) == 2
    weights = ak.to_numpy(ak.from_parquet(tmp_path / "post_iw" / "samples.parquet").weight)
    assert np.all(np.isfinite(weights))
    assert weights.sum() == pytest.approx(1.0)
    assert iw["verdict"]["reference"] == "importance-weighted cINN"
    # the report: the MCMC with the nuisances, the importance weights with the marginal likelihood
    from hepflow.cosmic.report import make_report

    rep = make_report(model_syst, tmp_path / "rep", config=on, mcmc_auger=tmp_path / "mc_on", samples=50)
    assert rep["systematics"] == on.systematics.metadata()
    assert rep["cinn"]["importance"]["marginal_likelihood"]["draws"] == 32
    assert set(rep["deviance_at"]["mcmc_best_sample"]["nuisances"]) == {"nu_E", "nu_X"}
    # the MCMC's best sample scored at its own nuisances: its recorded log-likelihood
    best_ll = ak.max(ak.from_parquet(tmp_path / "mc_on" / "samples.parquet").log_likelihood)
    assert rep["deviance_at"]["mcmc_best_sample"]["deviance"] == pytest.approx(-2.0 * best_ll, rel=1e-9)
    assert set(rep["deviance_at"]["cinn_mode"]["nuisances"]) == {"nu_E", "nu_X"}  # its conditional mode
    assert set(rep["model_check"]) == {"cinn", "mcmc"}
    assert rep["mcmc"]["samples"] == len(ak.from_parquet(tmp_path / "mc_on" / "samples.parquet"))
    # the mode-closure benchmark with the nuisances: mocks at the mode's nu, the MCMC samples them
    from tests.conftest import load_benchmark

    bench = load_benchmark("cosmic_mode_closure")
    mode = bench.mode_parameters(tmp_path / "mc_on", 0, nuisances=True)
    assert mode.shape == (9,)
    with pytest.raises(ConfigError, match="the mode must have 9 values"):
        bench.closure(model_syst, mode[:7], mocks=1, samples=50, config=on)
    (row,) = bench.closure(model_syst, mode, mocks=1, samples=50, config=on, mcmc_options=TINY_MCMC)
    assert row["truth"] == dict(zip(PARAMETERS, mode[:7].tolist(), strict=True))
    assert np.isfinite(row["log_likelihood_truth"])
    assert row["mcmc_mass_at_truth"] == 1.0  # one start: one mode
    assert 0 <= row["importance_mass_at_truth"] <= 1
    # with the nuisances the density is the marginal one (nu integrated out)
    (dens,) = bench.likelihoods_at([row], mode, mocks=1, config=on)
    assert np.isfinite([dens["truth"], dens["mcmc_mean"], dens["cinn_mean"]]).all()
    # the mock comparison: mocks with nuisances from their priors, the MCMC samples them
    from hepflow.cosmic.compare import compare

    small = CosmicConfig.from_dict({**tiny, "mcmc": TINY_MCMC, "comparison": {"samples": 50}})
    comp = compare(model_syst, tmp_path / "cmp", config=small, n_mocks=1, n_calibration=0, progress=False)
    (mock,) = comp["mocks"]
    assert set(mock["nuisances_true"]) == {"nu_E", "nu_X"}
    assert comp["settings"]["systematics"] == on.systematics.metadata()
    assert 1.0 <= mock["importance"]["ess"] <= 50.0
    assert "nu_E" in ak.from_parquet(tmp_path / "cmp" / "mcmc" / "mock_000.parquet").fields
    plain = CosmicConfig.from_dict(
        {k: v for k, v in tiny.items() if k != "systematics"} | {"mcmc": TINY_MCMC}
    )
    from hepflow.cosmic.compare import _ReusedMcmc, simulate_mocks

    _, plain_mocks = simulate_mocks(plain, 1, plain.comparison.seed, stream=0)
    with pytest.raises(
        InputError, match=r"comparison.json holds an MCMC with systematics \{.*the config has systematics off"
    ):
        _ReusedMcmc(tmp_path / "cmp", plain, plain_mocks)  # compare(..., mcmc_from=) of another config
    with pytest.raises(InputError, match="the report's config has systematics"):
        make_report(model_syst, tmp_path / "rep2", config=on, mcmc_auger=tmp_path / "mc_off", samples=50)


def test_refine_a_model_trained_with_systematics(model_syst: Path, tmp_path: Path) -> None:
    """Refined with its nuisances: seeds from the joint mode search are source parameters, the
    refined model records the systematics and infer --importance marginalises them."""
    from hepflow.cosmic.pipeline import infer
    from hepflow.cosmic.refine import refine_model
    from hepflow.flows.serialization import read_config

    on = CosmicConfig.from_dict({**TINY_ON, "mcmc": {"n_starts": 1, "n_candidates": 64}})
    summary = refine_model(
        model_syst,
        "auger",
        output_dir=tmp_path / "r",
        config=on,
        rounds=1,
        simulations=100,
        epochs=1,
        distill_steps=1,
        distill_samples=30,
        distill_epochs=1,
        progress=False,
    )
    assert summary["seeds"]["modes"]
    # the tiny model covers no posterior: the distillation says so and the refined model is kept
    assert "does not cover the posterior" in summary["distillation"]["skipped"]
    assert summary["distillation"]["min_ess"] == 10.0
    # half of the step's draws came from the weighing's proposal, marginalised over the nuisances
    assert "with the proposal does not cover" in summary["distillation"]["skipped"]
    assert summary["distillation"]["proposal"] == {"kind": "ModeProposal", "share": 0.5}
    assert all(len(p) == len(PARAMETERS) for p in summary["seed_points"])
    meta = read_config(tmp_path / "r" / "flow")["metadata"]
    assert meta["systematics"] == on.systematics.metadata()
    res = infer(tmp_path / "r", "auger", output_dir=tmp_path / "inf", samples=50, importance=True, config=on)
    assert res["systematics"] == on.systematics.metadata()
    assert res["importance"]["marginal_likelihood"]["draws"] == 32


def test_a_pretrained_cosmic_model_is_installed_with_its_card_and_selected_by_name(
    model_syst: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """tools/build_pretrained_cosmic.py installs a model with its card (config, seed, what infer
    measured on the Auger data); `infer cosmic` without --model then uses it with the config it
    was trained with; an altered or unlisted file, a config without its systematics, or no
    installed model is refused in one line."""
    from hepflow.cosmic import pretrained
    from hepflow.cosmic.pipeline import infer
    from tests.conftest import load_tool

    on = CosmicConfig.from_dict(TINY_ON)
    toml = tmp_path / "on.toml"
    toml.write_text(
        "[systematics]\nenabled = true\n[mcmc]\n" + "".join(f"{k} = {v}\n" for k, v in TINY_MCMC.items())
    )
    mcmc_cosmic("auger", tmp_path / "mc", config=toml, progress=False)
    both = infer(
        model_syst,
        "auger",
        output_dir=tmp_path / "inf",
        samples=50,
        importance=True,
        mcmc=tmp_path / "mc",
        config=on,
    )
    # two verdicts: the plain cINN and the importance-weighted cINN, each against the MCMC
    assert both["verdict"]["line"].startswith("cINN and MCMC ")
    assert both["verdict_importance"]["subject"] == "importance-weighted cINN"
    assert both["verdict_importance"]["line"].startswith("importance-weighted cINN and MCMC ")
    assert both["verdict_importance"]["ess"] == pytest.approx(both["importance"]["ess"])
    tool = load_tool("build_pretrained_cosmic")
    target = tmp_path / "shipped"
    cfg_toml = tmp_path / "train.toml"
    cfg_toml.write_text(_toml(TINY_ON))
    argv = [
        "--model",
        str(model_syst),
        "--config",
        str(cfg_toml),
        "--seed",
        "11",
        "--infer",
        str(tmp_path / "inf"),
    ]
    assert tool.main([*argv, "--target", str(target)]) == 0
    assert "importance weights: ESS" in capsys.readouterr().out
    card = json.loads((target / "card.json").read_text())
    assert card["training_data"]["seed"] == 11
    assert card["training_data"]["pseudo_experiments"] == 400
    assert card["config"]["systematics"]["enabled"] is True
    # the card's config makes the training sample again
    assert (card["config"]["generation"]["n"], card["config"]["generation"]["seed"]) == (400, 11)
    assert set(card["auger"]["per_parameter"]) == set(PARAMETERS)
    assert "ESS" in (target / "card.md").read_text()
    assert sorted(card["files"]) == sorted(pretrained.MODEL_FILES)
    # --update-auger: only the Auger section changes, the model files are verified and kept
    record = json.loads((tmp_path / "inf" / "summary.json").read_text())
    record["model_check"]["cinn"]["total"] = {"p_value": 0.5}
    (tmp_path / "inf2").mkdir()
    (tmp_path / "inf2" / "summary.json").write_text(json.dumps(record))
    assert tool.main(["--update-auger", "--infer", str(tmp_path / "inf2"), "--target", str(target)]) == 0
    updated = json.loads((target / "card.json").read_text())
    assert "model check (cINN posterior): posterior predictive p 0.500" in updated["auger"]["lines"]
    assert updated["auger"]["model_check"]["cinn"] == {"p_value": 0.5, "p_value_below": None}
    assert {k: v for k, v in updated.items() if k != "auger"} == {
        k: v for k, v in card.items() if k != "auger"
    }
    assert "posterior predictive p 0.500" in (target / "card.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tool.main(["--infer", str(tmp_path / "inf2")])  # neither a model nor --update-auger
    assert "--model, --config and --seed are required" in capsys.readouterr().err

    monkeypatch.setattr(pretrained, "LOCATION", target)
    out = tmp_path / "post"
    assert main(["infer", "cosmic", "--observation", "auger", "--output", str(out), "--samples", "50"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        f"pretrained cosmic model {target}: trained on 400 pseudo-experiments (seed 11)"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["systematics"] == on.systematics.metadata()  # the card's config: systematics on
    assert summary["model"].startswith(str(target))
    # a config without the nuisances disagrees with the shipped model
    off = tmp_path / "off.toml"
    off.write_text("[systematics]\nenabled = false\n")
    argv = ["infer", "cosmic", "--output", str(tmp_path / "p2"), "--config", str(off)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "systematics" in err
    # an altered file, an unlisted file, no model at all
    weights = target / "flow" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert main(["infer", "cosmic", "--output", str(tmp_path / "p3")]) == 2
    assert "differs from the model card" in capsys.readouterr().err
    weights.write_bytes(original)
    (target / "extra.txt").write_text("x")
    assert main(["infer", "cosmic", "--output", str(tmp_path / "p4")]) == 2
    assert "is not listed in the model card" in capsys.readouterr().err
    monkeypatch.setattr(pretrained, "LOCATION", tmp_path / "nothing")
    assert main(["infer", "cosmic", "--output", str(tmp_path / "p5")]) == 2
    assert "no pretrained cosmic model ships" in capsys.readouterr().err


def _toml(sections: dict) -> str:
    """A TOML text of ``{section: {key: value}}`` (values as JSON, which TOML reads for these)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"
