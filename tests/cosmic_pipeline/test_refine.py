"""``hepflow refine cosmic`` end to end on a tiny model: refine, infer, report, and the refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hepflow.cli import main
from hepflow.config import from_dict
from hepflow.cosmic import Observation
from hepflow.cosmic.compare import compare
from hepflow.cosmic.config import PARAMETERS, CosmicConfig
from hepflow.cosmic.mcmc import mcmc_cosmic
from hepflow.cosmic.pipeline import train
from hepflow.cosmic.refine import refine_model
from hepflow.cosmic.report import make_report
from hepflow.errors import ConfigError, ModelError
from hepflow.flows.serialization import read_config

from .conftest import TINY_FLOW

TINY = {
    "flow": TINY_FLOW,
    "training": {"epochs": 2, "batch_size": 256, "seed": 3, "device": "cpu"},
    "inference": {"samples": 300},
    "mcmc": {
        "n_walkers": 12,
        "n_steps": 200,
        "check_every": 100,
        "n_starts": 2,
        "n_candidates": 128,
        "mode_draws": 2000,
    },
    "comparison": {"n_mocks": 1, "samples": 300, "n_calibration": 40, "calibration_samples": 60},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, CosmicConfig, Path]:
    """(a TOML of the tiny settings, the config, a tiny trained model)."""
    from hepflow.cosmic.generate import generate_cosmic

    d = tmp_path_factory.mktemp("refine")
    lines = []
    for section, values in TINY.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    toml = d / "tiny.toml"
    toml.write_text("\n".join(lines) + "\n")
    cfg = from_dict(CosmicConfig, TINY)
    generate_cosmic(d / "pe.root", n=2000, seed=5, progress=False)
    train(d / "pe.root", d / "model", config=cfg, progress=False)
    return toml, cfg, d


def test_refine_cli_writes_a_model_that_infer_and_report_accept(tiny, tmp_path, capsys) -> None:
    toml, cfg, d = tiny
    out = tmp_path / "refined"
    argv = ["refine", "cosmic", "--model", str(d / "model"), "--observation", "auger", "--output", str(out)]
    argv += ["--rounds", "2", "--simulations", "150", "--epochs", "1", "--config", str(toml), "--seed", "4"]
    argv += ["--min-acceptance", "0.01"]
    assert main(argv) == 0
    assert "2 rounds, 300 simulations" in capsys.readouterr().out

    # what produced it, in the model's metadata and in refinement.json
    meta = read_config(out / "flow")["metadata"]
    ref = meta["refinement"]
    assert ref["observation"] == "auger"
    assert ref["observation_digest"] == Observation.from_auger().digest()
    assert ref["simulations"] == 300
    assert ref["simulations_per_round"] == 150
    assert [r["round"] for r in ref["rounds"]] == [1, 2]
    # the modes of the exact posterior, weighed; the seeds are those the cINN's region misses
    modes = ref["seeds"]["modes"]
    assert modes
    assert all("deviance" in m and "mass" in m and "in_cinn_region" in m for m in modes)
    assert ref["rounds"][0]["seeds"] == len(ref["seed_points"]) == sum(m["seed"] for m in modes)
    assert ref["regions"] == ("union" if ref["seed_points"] else "estimate")
    assert ref["correct"] is bool(ref["seed_points"])  # the 1/W pass only where seeds make W vary
    assert (ref["correction"] is not None) is bool(ref["seed_points"])
    # the refined cINN's share of every weighed mode against its exact mass, with a verdict
    judged = ref["modes"]
    assert judged["modes"]
    assert all(0 <= m["refined_share"] <= 1 for m in judged["modes"])
    assert ("disagree" in judged["verdict"]) is (not judged["agree"])
    assert ref["wall_seconds"] >= ref["seconds"] >= ref["train_seconds"] > 0
    assert ref["seed"] == 4
    assert ref["min_acceptance"] == 0.01
    assert ref["epochs"] == 1
    assert ref["base_model"] == str(d / "model")
    assert meta["parameters"] == list(PARAMETERS)
    assert "proposal" not in meta
    assert json.loads((out / "refinement.json").read_text())["simulations"] == 300

    # infer --importance and report take it like any cosmic model
    inf = tmp_path / "infer"
    assert (
        main(
            [
                "infer",
                "cosmic",
                "--model",
                str(out),
                "--observation",
                "auger",
                "--output",
                str(inf),
                "--importance",
                "--config",
                str(toml),
                "--samples",
                "300",
            ]
        )
        == 0
    )
    summary = json.loads((inf / "summary.json").read_text())
    assert 0 < summary["importance"]["efficiency"] <= 1
    mc = tmp_path / "mcmc"
    mcmc_cosmic("auger", mc, config=cfg, progress=False)
    make_report(out, tmp_path / "report", config=cfg, mcmc_auger=mc)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(saved["cinn"]["posterior"]) == set(PARAMETERS)

    # refused: another observation, a comparison on mocks, refining it again, an existing output
    capsys.readouterr()
    rc = main(
        [
            "infer",
            "cosmic",
            "--model",
            str(out),
            "--observation",
            str(d / "pe.root"),
            "--output",
            str(tmp_path / "other"),
            "--config",
            str(toml),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1
    assert "was refined for the observation auger" in err
    assert str(d / "pe.root") in err
    with pytest.raises(ModelError, match="no amortized posterior"):
        compare(out, tmp_path / "cmp", config=cfg, progress=False)
    with pytest.raises(ModelError, match="refined model already"):
        refine_model(
            out, "auger", output_dir=tmp_path / "again", config=cfg, rounds=1, simulations=10, epochs=1
        )
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


class _Everywhere:
    """A region that holds everything (``inside=True``) or nothing."""

    def __init__(self, inside: bool) -> None:
        self.inside = inside

    def contains(self, theta: np.ndarray) -> np.ndarray:
        return np.full(len(theta), self.inside)


def test_seeds_are_the_weighed_modes_the_cinn_region_misses(tiny) -> None:
    """A mode is a seed when it holds >= min_mass of the exact posterior and the cINN's region
    misses it; its share of the seeded simulations is its mass. Without masses
    ([mcmc] mode_draws = 0) every maximum is a seed, the deepest with half of the share."""
    from hepflow.cosmic.refine import cosmic_seeds

    _toml, cfg, _ = tiny
    fwd, prior, obs = cfg.model.build(), cfg.prior.build(), Observation.from_auger()
    common = {"model": fwd, "prior": prior, "seed": 2, "n_starts": 2, "n_candidates": 128, "mode_draws": 2000}
    missed = cosmic_seeds(obs, region=_Everywhere(False), min_mass=0.0, **common)
    info = missed.info
    masses = np.array([m["mass"] for m in info["modes"]])
    assert masses.sum() == pytest.approx(1.0)
    assert len(missed.points) == len(info["modes"]) == len(missed.shares)
    assert np.array_equal(missed.shares, masses)
    assert all(m["in_cinn_region"] == 0.0 and m["seed"] for m in info["modes"])
    # the source parameters of the weighed modes, heaviest first
    assert missed.points.shape[1] == len(PARAMETERS)
    assert np.allclose(missed.points[0], [info["modes"][0][p] for p in PARAMETERS])
    covered = cosmic_seeds(obs, region=_Everywhere(True), min_mass=0.0, **common)
    assert covered.points.shape == (0, len(PARAMETERS))
    assert len(covered.shares) == 0
    assert all(m["in_cinn_region"] == 1.0 and not m["seed"] for m in covered.info["modes"])
    # min_mass: a missed mode lighter than it is no seed
    light = cosmic_seeds(obs, region=_Everywhere(False), min_mass=0.999, **common)
    assert len(light.points) == sum(m["mass"] >= 0.999 for m in light.info["modes"])
    old = cosmic_seeds(obs, region=_Everywhere(True), **{**common, "mode_draws": 0})
    assert len(old.points) == len(old.info["modes"])
    assert "mode_draws = 0" in old.info["rule"]
    assert old.shares[0] == max(len(old.points) - 1.0, 1.0)
    assert old.weights is None

    assert missed.weights is not None
    assert len(missed.weights.masses) == len(info["modes"])


def test_mode_shares_judge_a_posterior_s_draws_against_the_exact_masses() -> None:
    """Two modes of exact masses 0.7 +- 0.01 and 0.3 +- 0.01: draws in those proportions agree,
    draws all at the first disagree and the verdict names the mode; a mode below min_mass and a
    screened one are not judged."""
    from hepflow.cosmic.modes import ModeWeights, StudentMixture
    from hepflow.cosmic.priors import Prior
    from hepflow.cosmic.refine import Seeds, mode_shares

    prior = Prior()
    theta = np.array([[1.2, 18.6, 0.1, 0.4, 0.3, 0.15, 0.05], [-1.0, 18.2, 0.12, 0.84937, 0.03, 6e-4, 3e-5]])
    z = np.c_[prior.to_unconstrained(theta), np.zeros((2, 2))]  # with the nuisances' coordinates
    weights = ModeWeights(
        regions=((0,), (1,), (2,)), masses=np.array([0.7, 0.3 - 1e-9, 1e-9]),
        errors=np.array([0.01, 0.01, np.nan]), methods=("importance", "importance", "laplace"),
        region_ess=np.array([900.0, 400.0, np.nan]), ess=1300.0,
        draws=2000, log_evidence=0.0, centres=z, covariances=np.stack([np.eye(8) * 0.01] * 2),
        proposal=StudentMixture(z, np.stack([np.eye(8) * 0.015] * 2), np.array([0.7, 0.3])),
    )  # fmt: skip
    found = Seeds(np.zeros((0, 7)), np.zeros(0), {}, weights)
    mixed = mode_shares(found, np.repeat(theta, [70, 30], axis=0), prior=prior)
    assert [r["refined_share"] for r in mixed["modes"]] == [0.7, 0.3]
    assert [round(r["gamma"], 6) for r in mixed["modes"]] == [1.2, -1.0]
    assert mixed["agree"]
    assert "agree with the exact masses" in mixed["verdict"]
    one = mode_shares(found, np.repeat(theta[:1], 100, axis=0), prior=prior)
    assert not one["agree"]
    assert "disagree" in one["verdict"]
    assert "1 against 0.7 +- 0.01 at gamma 1.2;" in one["verdict"]
    assert [r["agrees"] for r in one["modes"]] == [False, False]
    # tolerance: 3 standard errors when they are the larger
    wide = Seeds(found.points, found.shares, {}, replace(weights, errors=np.array([0.1, 0.1, np.nan])))
    assert mode_shares(wide, np.repeat(theta, [90, 10], axis=0), prior=prior)["agree"]
    # draws far from both modes: in no mode's region
    beside = theta[:1].copy()
    beside[0, 1] = 19.4
    away = mode_shares(found, np.repeat(np.r_[theta, beside], [66, 26, 8], axis=0), prior=prior)
    assert away["elsewhere"] == pytest.approx(0.08)
    assert away["agree"]  # reported, not judged: the runs' Gaussians can be too narrow
    assert mixed["elsewhere"] == 0.0
    # the verdict cites a mode that fails, not the one furthest off that passes within 3 SE
    loose = Seeds(found.points, found.shares, {}, replace(weights, errors=np.array([0.04, 0.001, np.nan])))
    cited = mode_shares(loose, np.repeat(theta, [80, 20], axis=0), prior=prior)
    assert [r["agrees"] for r in cited["modes"]] == [True, False]
    assert "0.2 against 0.3" in cited["verdict"]
    light = mode_shares(found, np.repeat(theta[:1], 100, axis=0), prior=prior, min_mass=0.5)
    assert [r["mass"] for r in light["modes"]] == [0.7]
    # the screened maximum (method "laplace") has no region and is never judged
    none = mode_shares(found, np.repeat(theta, [70, 30], axis=0), prior=prior, min_mass=0.0)
    assert len(none["modes"]) == 2
    with pytest.raises(ValueError, match="needs weighed modes"):
        mode_shares(Seeds(found.points, found.shares, {}, None), theta, prior=prior)


def test_coverage_of_each_mode_is_reported_heaviest_first() -> None:
    """_covered: the share of each weighed mode's Gaussian inside the cINN's region, in the order
    of weigh_modes (heaviest first), whatever the order of the regions in ModeWeights."""
    from hepflow.cosmic.mcmc import UnconstrainedPosterior
    from hepflow.cosmic.modes import ModeWeights, StudentMixture
    from hepflow.cosmic.priors import Prior
    from hepflow.cosmic.refine import _covered

    prior = Prior()
    theta = np.array([[1.2, 18.6, 0.1, 0.4, 0.3, 0.15, 0.05], [-1.0, 18.2, 0.12, 0.84937, 0.03, 6e-4, 3e-5]])
    z = prior.to_unconstrained(theta)
    weights = ModeWeights(
        regions=((0,), (1,), (2,)), masses=np.array([0.3, 0.7 - 1e-9, 1e-9]),
        errors=np.array([0.01, 0.01, np.nan]), methods=("importance", "importance", "laplace"),
        region_ess=np.array([400.0, 900.0, np.nan]), ess=1300.0, draws=2000, log_evidence=0.0,
        centres=z, covariances=np.stack([np.eye(6) * 1e-4] * 2),
        proposal=StudentMixture(z, np.stack([np.eye(6) * 1.5e-4] * 2), np.array([0.3, 0.7])),
    )  # fmt: skip

    class SoftOnly:  # holds the first region's mode (gamma > 0) only
        def contains(self, t: np.ndarray) -> np.ndarray:
            return t[:, 0] > 0

    density = UnconstrainedPosterior(lambda t: np.zeros(len(t)), prior)
    shares = _covered(density, weights, SoftOnly(), np.random.default_rng(0), n=200)
    # heaviest first: the second region (0.7, not held), the first (0.3, held), the screened one
    assert shares[0] == 0.0
    assert shares[1] == 1.0
    assert np.isnan(shares[2])


def _refine_mock(tiny, output: Path, **options) -> dict:
    """The tiny model refined for pseudo-experiment 3 without seeds, fine-tuned (``options``
    override the small budget)."""
    _toml, cfg, d = tiny
    settings = {"rounds": 1, "simulations": 100, "epochs": 1, "seeds": False, "fine_tune": True}
    return refine_model(
        d / "model",
        d / "pe.root",
        entry=3,
        output_dir=output,
        config=cfg,
        progress=False,
        **(settings | options),
    )


def test_refine_for_a_mock_observation_without_seeds(tiny, tmp_path) -> None:
    """Any observation file; --no-seeds: the first region is the cINN's HPR alone."""
    _toml, cfg, d = tiny
    summary = _refine_mock(tiny, tmp_path / "m")
    assert summary["entry"] == 3
    assert summary["seeds"] is None
    assert summary["seed_points"] == []
    assert summary["fine_tune"] is True
    assert summary["rounds"][0]["seeds"] == 0
    from hepflow.cosmic.generate import load_observation
    from hepflow.cosmic.pipeline import infer

    res = infer(tmp_path / "m", d / "pe.root", entry=3, output_dir=tmp_path / "inf", config=cfg)
    assert np.isfinite([res["posterior"][p]["mean"] for p in PARAMETERS]).all()
    assert summary["observation_digest"] == load_observation(d / "pe.root", entry=3).digest()
    with pytest.raises(ModelError, match="refined for the observation"):
        infer(tmp_path / "m", d / "pe.root", entry=4, output_dir=tmp_path / "inf4", config=cfg)


def test_refine_cli_refuses_bad_options(tiny, tmp_path, capsys) -> None:
    _toml, _, d = tiny
    base = ["refine", "cosmic", "--model", str(d / "model"), "--output", str(tmp_path / "x")]
    for extra, match in (
        (["--rounds", "0"], "positive integer"),
        (["--lr", "-1"], "positive number"),
        (["--temperature", "nan"], "positive number"),
        (["--seed-share", "1.5"], "between 0 and 1"),
        (["--min-acceptance", "0"], "between 0 and 1"),
        (["--regions", "all"], "invalid choice"),
        (["--distill-proposal", "1"], "expected a number in [0, 1)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(base + extra)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert match in err
        assert err.count("\n") == 1
    assert main(["refine", "cosmic", "--model", str(tmp_path / "none"), "--output", str(tmp_path / "y")]) == 2
    assert "no cosmic model" in capsys.readouterr().err
    assert main(["refine", "cosmic", "--model", str(d / "model"), "--output", str(d / "model")]) == 2
    assert "is the input model" in capsys.readouterr().err


def test_refinement_simulator_draws_the_nuisances_of_a_model_with_systematics() -> None:
    """A model trained with [systematics] learnt the posterior marginalised over nu_E, nu_X: its
    refinement simulations each draw their own nuisances (the energy scale spreads the spectrum
    far beyond its Poisson scatter), a model without systematics simulates without."""
    from hepflow.cosmic import ForwardModel, Systematics
    from hepflow.cosmic.refine import refinement_simulator

    on, off = ForwardModel(systematics=Systematics()), ForwardModel()
    theta = np.tile([[1.0, 18.7, 0.2, 0.2, 0.2, 0.2, 0.2]], (2000, 1))
    with_nu = refinement_simulator(on, binning=on.binning)(theta, np.random.default_rng(1))
    without = refinement_simulator(off, binning=off.binning)(theta, np.random.default_rng(1))
    assert with_nu.shape == without.shape
    assert with_nu.dtype == np.float32
    from hepflow.cosmic.features import feature_names

    spec = [i for i, name in enumerate(feature_names()) if name.startswith("spec_")]
    ratio = with_nu[:, spec].std(0) / without[:, spec].std(0)
    assert np.median(ratio) > 2.0


def test_refine_with_distillation_records_it_and_infer_accepts_the_model(tiny, tmp_path) -> None:
    """--distill: after the rounds the network is tuned to the likelihood-weighted draws; the
    steps (effective draws, efficiency, seconds) are recorded and the model is used as any other.
    The tiny model covers no posterior (a handful of effective draws), so the floor on the
    effective draws is lowered here to run the steps; the full-size run is in docs/refine.md."""
    _toml, cfg, d = tiny
    summary = _refine_mock(
        tiny,
        tmp_path / "m",
        simulations=200,
        epochs=2,
        distill_steps=2,
        distill_samples=300,
        distill_epochs=2,
        distill_min_ess=0.0,
    )
    record = summary["distillation"]
    assert [s["step"] for s in record["steps"]] == [1, 2], record
    assert all(0 < s["efficiency"] <= 1 and s["samples"] == 300 for s in record["steps"])
    assert 0 < record["efficiency_after"] <= 1
    meta = read_config(tmp_path / "m" / "flow")["metadata"]
    assert meta["refinement"]["distillation"]["steps"] == record["steps"]
    from hepflow.cosmic.pipeline import infer

    res = infer(tmp_path / "m", d / "pe.root", entry=3, output_dir=tmp_path / "inf", config=cfg)
    assert np.isfinite([res["posterior"][p]["mean"] for p in PARAMETERS]).all()
    # without --distill the record says so; the same rounds (same seed), distilled: another network
    plain = _refine_mock(tiny, tmp_path / "p", simulations=200, epochs=2, distill_steps=0)
    assert plain["distillation"] is None
    from hepflow.cosmic.generate import load_observation
    from hepflow.cosmic.posterior import load_posterior

    obs = load_observation(d / "pe.root", entry=3)
    a, _ = load_posterior(tmp_path / "m", config=cfg).sample(200, obs, seed=1)
    b, _ = load_posterior(tmp_path / "p", config=cfg).sample(200, obs, seed=1)
    assert not np.allclose(a, b)


def test_a_refined_cinn_that_misses_the_posterior_is_saved_untuned_with_the_reason(
    tiny, tmp_path, capsys
) -> None:
    """A one-epoch cINN refined on 100 simulations for the Auger data does not cover the exact
    posterior: the distillation cannot start, the refined model is saved, and the record and
    the printout say why."""
    _toml, cfg, d = tiny
    summary = refine_model(
        d / "model", "auger", output_dir=tmp_path / "m", config=cfg, rounds=1, simulations=100,
        epochs=1, seeds=False, distill_samples=500,
    )  # fmt: skip
    record = summary["distillation"]
    assert "does not cover the posterior" in record["skipped"]
    assert (tmp_path / "m" / "flow").is_dir()
    assert "distillation skipped:" in capsys.readouterr().out


def test_the_mode_proposal_is_a_normalised_density_of_the_parameters() -> None:
    """ModeProposal maps the weighing's t mixture to the 7 parameters with the Jacobian of the
    prior's bijection: the prior's density over it has expectation 1 (both densities in the
    measure of Prior.log_prob), and its draws lie in the support."""
    from hepflow.cosmic.modes import StudentMixture
    from hepflow.cosmic.priors import Prior
    from hepflow.cosmic.refine import ModeProposal

    prior = Prior()
    wide = StudentMixture(np.zeros((1, 6)), 2.0 * np.eye(6)[None], np.ones(1))
    g = ModeProposal(wide, prior)
    theta = g.sample(200_000, rng=1)
    assert prior.in_support(theta).all()
    ratio = np.exp(prior.log_prob(theta) - g.log_prob(theta))
    assert ratio.mean() == pytest.approx(1.0, abs=3 * ratio.std() / np.sqrt(len(ratio)))
    assert ratio.std() / np.sqrt(len(ratio)) < 0.01
    # a wrong Jacobian (the t density of z taken as the parameters') is far off
    naive = np.exp(prior.log_prob(theta) - wide.log_prob(prior.to_unconstrained(theta)))
    assert abs(naive.mean() - 1.0) > 0.5
    outside = theta[:3].copy()
    outside[0, 0] = 5.0  # gamma beyond the prior's range
    outside[1, 2:] = [0.5, 0.5, 0.5, -0.5, 0.0]  # off the simplex: -inf, not an error
    outside[2, 3] = np.nan
    assert np.all(g.log_prob(outside) == -np.inf)
    assert np.all(np.isfinite(g.log_prob(theta[:100])))
    # every draw is one a cINN, which computes in float32, can evaluate
    assert np.all(theta[:, 2:].astype(np.float32) > 0)
    with pytest.raises(ConfigError, match=r"shape \(n, 6\)"):
        prior.log_jacobian(np.zeros((2, 8)))


def test_the_distillation_of_a_refinement_with_seeds_draws_from_the_mode_proposal(tiny, tmp_path) -> None:
    """With the modes weighed, a share of every distillation step's draws comes from the
    weighing's proposal, and the record says so; --distill-proposal 0 leaves the cINN's alone."""
    options = {
        "simulations": 200, "epochs": 1, "seeds": True, "distill_steps": 1, "distill_samples": 300,
        "distill_epochs": 1, "distill_min_ess": 0.0,
    }  # fmt: skip
    with_g = _refine_mock(tiny, tmp_path / "g", **options)
    assert with_g["seeds"]["weights"] is not None
    assert "skipped" not in with_g["distillation"], with_g["distillation"]
    assert with_g["distillation"]["proposal"] == {"kind": "ModeProposal", "share": 0.5}
    without = _refine_mock(tiny, tmp_path / "n", distill_proposal=0.0, **options)
    assert without["distillation"]["proposal"] is None
    with pytest.raises(ConfigError, match=r"proposal share must lie in \[0, 1\), got 1.0"):
        _refine_mock(tiny, tmp_path / "x", distill_proposal=1.0, **options)
    assert not (tmp_path / "x").exists()


def test_bad_distillation_options_are_refused_before_the_rounds(tiny, tmp_path) -> None:
    _toml, cfg, d = tiny
    for bad in ({"distill_samples": 5}, {"distill_epochs": 0}, {"distill_min_ess": 4000.0}):
        with pytest.raises(ConfigError, match="refine: distill steps"):
            refine_model(d / "model", "auger", output_dir=tmp_path / "x", config=cfg, progress=False, **bad)
    assert not (tmp_path / "x").exists()


def test_refine_cli_refuses_a_negative_distill(tiny, tmp_path, capsys) -> None:
    _toml, _, d = tiny
    argv = [
        "refine",
        "cosmic",
        "--model",
        str(d / "model"),
        "--output",
        str(tmp_path / "x"),
        "--distill",
        "-1",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "non-negative integer" in capsys.readouterr().err
