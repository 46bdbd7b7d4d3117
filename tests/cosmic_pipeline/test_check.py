"""The posterior predictive model check (hepflow.cosmic.ppc) and the cINN-vs-MCMC verdict
(hepflow.cosmic.verdict), alone and in ``hepflow infer|report cosmic``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from hepflow.cli import main
from hepflow.config import from_dict
from hepflow.cosmic import ForwardModel, Likelihood, Observation
from hepflow.cosmic.config import PARAMETERS, CosmicConfig, VerdictConfig, load_config
from hepflow.cosmic.ppc import format_p, predictive_check
from hepflow.cosmic.report import corner_plot, make_report
from hepflow.cosmic.verdict import verdict
from hepflow.errors import ConfigError, InputError

from .conftest import INTERIOR, TINY_FLOW

TINY = {
    "flow": TINY_FLOW,
    "training": {"epochs": 1, "batch_size": 256, "seed": 3, "device": "cpu"},
    "inference": {"samples": 300},
    "mcmc": {
        "n_walkers": 12,
        "n_steps": 300,
        "check_every": 100,
        "n_starts": 2,
        "n_candidates": 128,
        "mode_draws": 2000,
    },
    "check": {"n_replicas": 100, "seed": 5},
}
#: a data set the model describes: one pseudo-experiment at INTERIOR
RNG_OBS = 21


@pytest.fixture(scope="module")
def observed(model: ForwardModel) -> Observation:
    return model.observation(model.simulate(INTERIOR[None], rng=RNG_OBS))


def _shift_xmax(obs: Observation, bins: int) -> Observation:
    """The observation with every Xmax shifted by ``bins`` x 20 g/cm^2 (deeper)."""
    xmax = np.zeros_like(obs.xmax)
    xmax[:, bins:] = obs.xmax[:, :-bins]
    xmax[:, -1] += obs.xmax[:, -bins:].sum(axis=1)
    return Observation(obs.binning, obs.spectrum, xmax)


# ------------------------------------------------------------------------------------ model check
def test_p_values_are_uniform_for_data_simulated_at_the_posterior(model: ForwardModel) -> None:
    """Posterior = the true parameters, data simulated there: every p-value is uniform."""
    sims = model.simulate(np.repeat(INTERIOR[None], 30, axis=0), rng=4)
    samples = np.repeat(INTERIOR[None], 50, axis=0)
    p = {part: [] for part in ("total", "spectrum", "xmax")}
    for i in range(30):
        check = predictive_check(model.observation(sims, i), samples, model=model, n_replicas=200, seed=i)
        for part, values in p.items():
            values.append(check.p_value(part))
    for part, values in p.items():
        assert stats.kstest(values, "uniform").pvalue > 0.01, (part, sorted(values))
        assert 0.3 < np.mean(values) < 0.7, part


def test_xmax_shifted_by_40_g_cm2_fails_the_xmax_part_only(
    model: ForwardModel, observed: Observation
) -> None:
    samples = np.repeat(INTERIOR[None], 20, axis=0)
    good = predictive_check(observed, samples, model=model, n_replicas=200, seed=1)
    assert good.warnings(threshold=0.01) == []
    shifted = predictive_check(_shift_xmax(observed, 2), samples, model=model, n_replicas=200, seed=1)
    assert shifted.p_value("xmax") == 0.0
    assert shifted.p_value("total") == 0.0
    assert shifted.p_value("spectrum") == good.p_value("spectrum")  # the spectrum is the same
    assert shifted.warnings(threshold=0.01) == ["the model does not describe the data (Xmax part, p < 0.005)"]
    s = shifted.summary()["xmax"]
    assert s["observed_mean"] > s["replica_mean"] + 10 * s["replica_std"]
    assert s["p_value_below"] == pytest.approx(1 / 200)


def test_a_tilted_spectrum_fails_the_spectrum_part(model: ForwardModel, observed: Observation) -> None:
    tilt = np.linspace(0.7, 1.3, observed.spectrum.size)
    obs = Observation(observed.binning, np.rint(observed.spectrum * tilt), observed.xmax)
    check = predictive_check(obs, np.repeat(INTERIOR[None], 20, axis=0), model=model, n_replicas=100, seed=2)
    assert check.p_value("spectrum") == 0.0
    assert "spectrum part, p < 0.01" in check.warnings(threshold=0.01)[0]


def test_deviances_are_those_of_the_likelihood_at_each_draw(
    model: ForwardModel, observed: Observation
) -> None:
    """D_obs at the draws is Likelihood.deviance; each replica is scored at its own draw."""
    rows = np.array([INTERIOR, [1.0, 18.7, 0.1, 0.5, 0.3, 0.1, 0.0], [0.5, 18.9, 0.3, 0.3, 0.2, 0.1, 0.1]])
    like = Likelihood(observed, model=model)
    expected = like.deviance(rows)
    check = predictive_check(observed, rows, model=model, n_replicas=60, seed=3)
    for part in ("spectrum", "xmax"):
        obs = getattr(check.observed, part)
        hits = np.isclose(obs[:, None], getattr(expected, part)[None, :], rtol=1e-12)
        assert hits.any(axis=1).all()
        assert set(np.flatnonzero(hits.any(axis=0))) == {0, 1, 2}  # all three rows drawn
    # a replica is a pseudo-observation like any other: score one by hand
    one = predictive_check(observed, rows[:1], model=model, n_replicas=10, seed=3)
    gen = np.random.default_rng(3)
    gen.choice(1, size=10, replace=True)
    sims = model.simulate(
        np.repeat(rows[:1], 10, axis=0), gen, n_spectrum=observed.n_spectrum, n_xmax=observed.n_xmax
    )
    by_hand = Likelihood(model.observation(sims, 4), model=model).deviance(rows[:1])
    assert one.replicated.xmax[4] == pytest.approx(by_hand.xmax[0], rel=1e-12)
    assert one.replicated.spectrum[4] == pytest.approx(by_hand.spectrum[0], rel=1e-12)
    # reproducible with the seed, another seed gives other replicas
    again = predictive_check(observed, rows, model=model, n_replicas=60, seed=3)
    np.testing.assert_array_equal(again.replicated.total, check.replicated.total)
    other = predictive_check(observed, rows, model=model, n_replicas=60, seed=4)
    assert not np.array_equal(other.replicated.total, check.replicated.total)


def test_importance_weights_choose_the_draws(model: ForwardModel, observed: Observation) -> None:
    rows = np.array([INTERIOR, [0.5, 18.9, 0.3, 0.3, 0.2, 0.1, 0.1]])
    check = predictive_check(observed, rows, model=model, n_replicas=20, seed=0, weights=np.array([0.0, 2.0]))
    at_second = Likelihood(observed, model=model).deviance(rows[1:]).total[0]
    np.testing.assert_allclose(check.observed.total, at_second, rtol=1e-12)


def test_summary_lines_and_p_value_format(model: ForwardModel, observed: Observation) -> None:
    check = predictive_check(observed, INTERIOR[None], model=model, n_replicas=50, seed=0)
    s = check.summary()
    assert s["n_replicas"] == 50
    assert s["seed"] == 0
    assert s["seconds"] > 0
    assert set(s) >= {"total", "spectrum", "xmax"}
    assert s["total"]["observed_mean"] == pytest.approx(
        s["spectrum"]["observed_mean"] + s["xmax"]["observed_mean"]
    )
    assert s["xmax"]["exceeding"] == round(s["xmax"]["p_value"] * 50)
    lines = check.lines()
    assert lines[2].startswith("Xmax part")
    assert "in 50 replicas" in lines[2]
    assert format_p(0.0, 1000) == "p < 0.001"
    assert format_p(0.022, 1000) == "p = 0.022"


def test_bad_check_inputs_are_one_line_errors(model: ForwardModel, observed: Observation) -> None:
    with pytest.raises(ConfigError, match=r"^n_replicas must be an integer >= 10, got 5$"):
        predictive_check(observed, INTERIOR[None], model=model, n_replicas=5)
    with pytest.raises(InputError, match="weights must be 1 finite non-negative numbers"):
        predictive_check(observed, INTERIOR[None], model=model, n_replicas=10, weights=np.array([1.0, 2.0]))
    with pytest.raises(ConfigError, match="unknown deviance part 'mass'"):
        predictive_check(observed, INTERIOR[None], model=model, n_replicas=10).p_value("mass")


# ------------------------------------------------------------------------------------ verdict
def _gauss(shift: float = 0.0, scale: float = 1.0, seed: int = 0, n: int = 4000) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, scale, (n, len(PARAMETERS)))


def test_identical_sample_sets_agree() -> None:
    mc = _gauss()
    v = verdict(mc, mc, efficiency=0.9)
    assert v.agree
    assert v.use == "cINN"
    assert v.reasons == ()
    assert v.line().startswith("cINN and MCMC agree: use the cINN (max |shift| 0.00 MCMC sigma")
    assert "ESS 3600 of 4000 (0.9)" in v.line()
    assert v.banner() is None
    d = v.to_dict()
    assert (d["verdict"], d["use"], d["efficiency"]) == ("agree", "cINN", pytest.approx(0.9))
    assert set(d["per_parameter"]) == set(PARAMETERS)


def _one_changed(column: str, *, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    x = _gauss(seed=2)
    j = PARAMETERS.index(column)
    x[:, j] = shift + scale * x[:, j]
    return x


def test_shifted_and_far_off_samples_disagree() -> None:
    mc = _gauss(seed=1)
    v = verdict(_one_changed("lg_rcut", shift=0.5), mc)
    assert not v.agree
    assert v.use == "MCMC"
    shift = v.metrics["lg_rcut"]["mean_shift"]
    assert shift == pytest.approx(0.5, abs=0.05)
    assert v.reasons == (f"cINN means shifted: lg_rcut {shift:.2f} MCMC sigma",)
    assert (
        v.line()
        == f"cINN and MCMC disagree: use the MCMC (cINN means shifted: lg_rcut {shift:.2f} MCMC sigma)"
    )
    far = verdict(_gauss(seed=2) + 8.0, mc, ess=1.0)
    top = sorted(PARAMETERS, key=lambda p: -abs(far.metrics[p]["mean_shift"]))[:3]
    listed = ", ".join(f"{p} {far.metrics[p]['mean_shift']:.1f}" for p in top)
    assert far.reasons == (f"cINN misses the mode: {listed} MCMC sigma off and 4 more", "ESS 1 of 4000")
    assert far.banner() == f"cINN and MCMC disagree: {'; '.join(far.reasons)}. Use the MCMC."
    # the importance-weighted cINN (its draws resampled by their weights) says so in every message
    weighted = verdict(_one_changed("lg_rcut", shift=0.5), mc, subject="importance-weighted cINN")
    assert weighted.line().startswith(
        "importance-weighted cINN and MCMC disagree: use the MCMC (importance-weighted cINN means shifted:"
    )
    assert (
        verdict(mc, mc, efficiency=0.9, subject="importance-weighted cINN")
        .line()
        .startswith("importance-weighted cINN and MCMC agree: use the importance-weighted cINN (")
    )


def test_narrow_and_wide_samples_disagree() -> None:
    mc = _gauss(seed=1)
    narrow = verdict(_one_changed("f_Si", scale=0.5), mc)
    ratio = narrow.metrics["f_Si"]["width_ratio"]
    assert narrow.reasons == (f"cINN too narrow: width ratio f_Si {ratio:.2f}",)
    wide = verdict(_one_changed("gamma", scale=1.5), mc)
    ratio = wide.metrics["gamma"]["width_ratio"]
    assert wide.reasons == (f"cINN too wide: width ratio gamma {ratio:.1f}",)
    assert verdict(_one_changed("gamma", scale=1.1), mc).agree  # within 20 %


def test_the_ess_rule() -> None:
    mc = _gauss(seed=1)
    same = _gauss(seed=2)
    assert verdict(same, mc, efficiency=0.25).agree
    low = verdict(same, mc, efficiency=0.1)
    assert low.reasons == ("ESS 400 of 4000",)
    unmeasured = verdict(same, mc)
    assert unmeasured.agree
    assert "ESS not measured" in unmeasured.line()
    with pytest.raises(InputError, match="ess or efficiency, not both"):
        verdict(same, mc, ess=3.0, efficiency=0.1)
    # resampled draws of one sample (ESS 1) have no spread: said, never "agree"
    flat = verdict(same, np.repeat(same[:1], 50, axis=0), ess=1.0, reference="importance-weighted cINN")
    assert flat.line().startswith("cINN and importance-weighted cINN disagree: use the MCMC (")
    assert "have no spread in gamma" in flat.reasons[0]


def test_thresholds_come_from_the_verdict_config() -> None:
    mc, cinn = _gauss(seed=1), _gauss(0.5, seed=2)
    loose = VerdictConfig(max_abs_shift=0.6, max_width_deviation=0.5, min_efficiency=0.05)
    v = verdict(cinn, mc, efficiency=0.1, thresholds=loose)
    assert v.agree
    assert v.to_dict()["thresholds"]["max_abs_shift"] == 0.6
    assert load_config().verdict == VerdictConfig(
        max_abs_shift=0.3, max_width_deviation=0.2, min_efficiency=0.2
    )
    assert load_config().check.threshold == 0.01


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[verdict]\nmax_width_deviation = 1.5\n",
            "[verdict].max_width_deviation: expected a number in (0, 1), got 1.5",
        ),
        ("[verdict]\nmax_abs_shift = 0\n", "[verdict].max_abs_shift: expected a positive number, got 0.0"),
        ("[check]\nn_replicas = 5\n", "[check].n_replicas: expected an integer >= 10, got 5"),
        ("[check]\nthreshold = 0\n", "[check].threshold: expected a number in (0, 1), got 0.0"),
        ("[check]\nreplicas = 50\n", "[check]: unknown key 'replicas' for CheckConfig"),
    ],
)
def test_bad_check_and_verdict_settings_are_one_line(tmp_path: Path, capsys, toml: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    rc = main(
        [
            "infer",
            "cosmic",
            "--model",
            str(tmp_path),
            "--output",
            str(tmp_path / "o"),
            "--config",
            str(config),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"hepflow: error: {config} {message}")
    assert "\n" not in err


# ------------------------------------------------------------------------------------ in the commands
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, CosmicConfig]:
    """A barely trained cINN and the TOML of its settings."""
    from hepflow.cosmic.generate import generate_cosmic
    from hepflow.cosmic.pipeline import train

    d = tmp_path_factory.mktemp("check")
    generate_cosmic(d / "pe.root", n=400, seed=9, progress=False)
    cfg = from_dict(CosmicConfig, TINY)
    train(d / "pe.root", d / "model", config=cfg, progress=False)
    (d / "tiny.toml").write_text(
        "".join(
            f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            for section, values in TINY.items()
        )
    )
    assert CosmicConfig.from_file(d / "tiny.toml") == cfg
    return d, cfg


@pytest.fixture(scope="module")
def mcmc_auger(tiny) -> Path:
    from hepflow.cosmic.mcmc import mcmc_cosmic

    d, cfg = tiny
    mcmc_cosmic("auger", d / "mcmc_auger", config=cfg, progress=False)
    return d / "mcmc_auger"


def test_infer_prints_the_check_and_the_verdict(tiny, mcmc_auger, tmp_path, capsys) -> None:
    d, _ = tiny
    argv = ["infer", "cosmic", "--model", str(d / "model"), "--config", str(d / "tiny.toml"), "--importance"]
    assert main([*argv, "--output", str(tmp_path / "a"), "--mcmc", str(mcmc_auger)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    v = summary["verdict"]
    assert f"verdict: {v['line']}" in out
    assert v["reference"] == "MCMC"
    assert v["ess"] == pytest.approx(summary["importance"]["ess"])
    assert v["line"].startswith(
        f"cINN and MCMC {'agree' if v['verdict'] == 'agree' else 'disagree'}: use the "
    )
    assert set(summary["model_check"]) == {"cinn", "mcmc"}
    assert summary["model_check"]["mcmc"]["n_replicas"] == 100
    assert "model check (cINN posterior, posterior predictive deviance):" in out
    assert "model check (MCMC posterior, posterior predictive deviance):" in out
    for method, lines in summary["model_check_warnings"].items():
        name = "cINN" if method == "cinn" else "MCMC"
        for line in lines:
            assert f"WARNING ({name} posterior): {line}" in out
    # without --mcmc: the verdict against the importance-resampled draws; without --importance none
    assert main([*argv, "--output", str(tmp_path / "b")]) == 0
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["verdict"]["reference"] == "importance-weighted cINN"
    assert set(b["model_check"]) == {"cinn"}
    assert f"verdict: {b['verdict']['line']}" in capsys.readouterr().out
    assert main([*argv[:-1], "--output", str(tmp_path / "c")]) == 0
    assert "verdict" not in json.loads((tmp_path / "c" / "summary.json").read_text())
    out = capsys.readouterr().out
    assert "verdict:" not in out
    assert "model check (cINN posterior" in out


def test_infer_refuses_the_mcmc_of_another_observation(tiny, mcmc_auger, tmp_path, capsys) -> None:
    from hepflow.cosmic.generate import generate_cosmic

    d, _ = tiny
    generate_cosmic(tmp_path / "pe.root", n=3, seed=4, progress=False)
    out = tmp_path / "o"
    argv = ["infer", "cosmic", "--model", str(d / "model"), "--observation", str(tmp_path / "pe.root")]
    rc = main([*argv, "--output", str(out), "--mcmc", str(mcmc_auger)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == (
        f"hepflow: error: {mcmc_auger} holds the MCMC of observation 'auger' above lg(E/eV) = 18.7, not of "
        f"observation {str(tmp_path / 'pe.root')!r} above lg(E/eV) = 18.7 that this inference is about "
        f"(run `hepflow mcmc cosmic --observation {tmp_path / 'pe.root'}` with the same config)"
    )
    assert not out.exists()


def test_report_states_the_verdict_checks_both_and_marks_the_corner_plot(tiny, mcmc_auger, tmp_path) -> None:
    d, cfg = tiny
    rep = make_report(d / "model", tmp_path / "r", config=cfg, mcmc_auger=mcmc_auger, samples=300)
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    v = saved["verdict"]
    assert v == rep["verdict"]
    assert v["ess"] == pytest.approx(saved["cinn"]["importance"]["ess"])
    assert set(saved["model_check"]) == {"cinn", "mcmc"}
    assert not any("second mode appears only in the cINN" in c for c in saved["caveats"])
    # the barely trained cINN misses the MCMC's posterior: said in the caveats and on the plot
    assert v["verdict"] == "disagree", v["line"]
    assert any(
        c.startswith("FAILED: the cINN and the MCMC disagree on these data (") for c in saved["caveats"]
    )
    assert _red_pixels(tmp_path / "r" / "corner_auger.png") > 5000
    assert _red_pixels(tmp_path / "r" / "corner_auger_wide.png") > 5000


def _red_pixels(path: Path) -> int:
    """Pixels of the banner red (#cc0000, not the MCMC colour) in the top fifth of a PNG."""
    img = matplotlib.image.imread(path)[..., :3]
    top = img[: img.shape[0] // 5]
    red = np.array([0xCC, 0x00, 0x00]) / 255
    return int(np.count_nonzero(np.all(np.abs(top - red) < 0.02, axis=-1)))


def test_corner_plot_banner_only_when_given(tmp_path) -> None:
    g = np.random.default_rng(0)
    sets = {"cINN": g.normal(size=(500, 3)), "MCMC": g.normal(size=(500, 3))}
    plain = corner_plot(sets, ["a", "b", "c"], tmp_path / "plain.png")
    marked = corner_plot(
        sets, ["a", "b", "c"], tmp_path / "marked.png", banner="cINN and MCMC disagree: test"
    )
    assert _red_pixels(plain) == 0
    assert _red_pixels(marked) > 2000


def test_mcmc_checks_its_samples_and_prints_the_check(tiny, mcmc_auger, tmp_path, capsys) -> None:
    d, _ = tiny
    saved = json.loads((mcmc_auger / "summary.json").read_text())
    check = saved["model_check"]["mcmc"]
    assert check["n_replicas"] == 100
    assert set(check) >= {"total", "spectrum", "xmax"}
    assert saved["model_check_threshold"] == 0.01
    argv = ["mcmc", "cosmic", "--observation", "auger", "--config", str(d / "tiny.toml"), "--no-progress"]
    assert main([*argv, "--output", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    again = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert again["model_check"] == {
        **saved["model_check"],
        "mcmc": {**check, "seconds": again["model_check"]["mcmc"]["seconds"]},
    }
    assert "model check (MCMC posterior, posterior predictive deviance):" in out
    for line in again["model_check_warnings"]["mcmc"]:
        assert f"WARNING (MCMC posterior): {line}" in out
    # without the nuisances, an MCMC of the Auger data says what Auger's own fits include
    from hepflow.cli import AUGER_WITHOUT_SYSTEMATICS

    assert again["settings"]["systematics"] is None
    assert AUGER_WITHOUT_SYSTEMATICS in out


def test_a_posterior_marginalised_over_the_nuisances_is_checked_at_their_conditional_posterior() -> None:
    """A cINN trained with systematics gives (n, 7) draws. Its check draws each replica's
    nuisances from p(nu | theta, x): for data simulated at the draws' source parameters (and
    nuisances two prior standard deviations out) it passes, at the deviance the data have at the
    truth, and its nuisances lie where the data put them. Nuisances from their priors instead
    (the (n, 9) draws below) give an observed deviance three times as large and fail it."""
    from hepflow.cosmic import Systematics
    from hepflow.cosmic.marginal import MarginalLikelihood

    model = ForwardModel(systematics=Systematics())
    truth = np.r_[INTERIOR, 2.0, 1.5]
    observed = model.observation(model.simulate(truth[None], rng=7))
    samples = np.repeat(INTERIOR[None], 40, axis=0)
    check = predictive_check(observed, samples, model=model, n_replicas=40, seed=2)
    assert check.p_value("total") > 0.5
    assert check.warnings(threshold=0.01) == []
    with_prior_nu = np.c_[samples, Systematics().sample(40, np.random.default_rng(3))]
    naive = predictive_check(observed, with_prior_nu, model=model, n_replicas=40, seed=2)
    assert naive.p_value("total") <= 0.05
    assert naive.summary()["total"]["observed_mean"] > 3 * check.summary()["total"]["observed_mean"]
    nu = MarginalLikelihood(Likelihood(observed, model=model)).conditional_sample(samples, rng=1)
    assert np.all(np.abs(nu.mean(axis=0) - truth[7:]) < 0.3)
    assert np.all((nu.std(axis=0) > 0.03) & (nu.std(axis=0) < 0.3))  # draws, not the mode
