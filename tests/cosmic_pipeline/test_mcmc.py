"""emcee baseline: sampled density, support, determinism, accuracy on Asimov data, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepflow.cosmic import PARAMETER_NAMES, ForwardModel, Likelihood, Observation, Prior
from hepflow.cosmic.mcmc import McmcResult, UnconstrainedPosterior, mcmc_cosmic, run_mcmc
from hepflow.cosmic.modes import find_modes
from hepflow.errors import ConfigError, OutputError

from .conftest import COMBINED_FIT, INTERIOR

FAST = {"check_every": 20, "progress": False}


class _Flat:
    """A likelihood that is 1 everywhere on the support: the posterior is the prior."""

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return np.where(Prior().in_support(theta), 0.0, -np.inf)


@pytest.fixture(scope="module")
def asimov(model: ForwardModel) -> Observation:
    """Expected counts at an interior point with 10x the Auger statistics."""
    mu = model.expected(INTERIOR, n_spectrum=10 * model.n_spectrum, n_xmax=10 * model.n_xmax)
    return Observation(model.binning, mu["spectrum"][0], mu["xmax"][0])


@pytest.fixture(scope="module")
def tiny(auger: Observation, model: ForwardModel) -> McmcResult:
    return run_mcmc(auger, model=model, seed=3, n_walkers=12, n_steps=60, initial=COMBINED_FIT, **FAST)


def test_log_jacobian_matches_finite_differences() -> None:
    prior = Prior(gamma=(-2.0, 3.0), lg_rcut=(18.0, 19.5), concentration=0.7)
    post = UnconstrainedPosterior(_Flat(), prior)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    z = rng.normal(scale=1.5, size=(5, 6))
    h = 1e-6
    for row in z:
        jac = np.empty((6, 6))
        for j in range(6):
            dz = np.zeros(6)
            dz[j] = h
            up, down = post.theta(row + dz)[0, :6], post.theta(row - dz)[0, :6]
            jac[:, j] = (up - down) / (2 * h)
        assert post.log_jacobian(row[None])[0] == pytest.approx(np.log(abs(np.linalg.det(jac))), abs=1e-5)


def test_flat_likelihood_samples_the_prior() -> None:
    """With the Jacobian, emcee in z reproduces the prior marginals (wrong Jacobians do not)."""
    import emcee

    prior = Prior()
    post = UnconstrainedPosterior(_Flat(), prior)  # type: ignore[arg-type]
    sampler = emcee.EnsembleSampler(32, 6, post, vectorize=True)
    sampler.random_state = np.random.RandomState(1).get_state()
    z0 = prior.to_unconstrained(prior.sample(32, rng=2))
    sampler.run_mcmc(z0, 3000, progress=False)
    theta = post.theta(sampler.get_chain(discard=500, flat=True))
    assert abs(theta[:, 0].mean()) < 0.15  # uniform on [-3, 3]
    assert theta[:, 1].mean() == pytest.approx(18.5, abs=0.06)
    assert np.allclose(theta[:, 2:].mean(axis=0), 0.2, atol=0.02)  # Dirichlet(1)
    assert np.allclose(theta[:, 2:].std(axis=0), np.sqrt(0.2 * 0.8 / 6), atol=0.02)


def test_chain_respects_the_support(tiny: McmcResult) -> None:
    theta = tiny.theta()
    assert theta.shape == (len(tiny.samples), 7)
    assert tiny.chain.shape == (60, 12, 7)
    assert np.all(tiny.chain[..., 2:] >= 0)
    assert np.allclose(tiny.chain[..., 2:].sum(axis=-1), 1.0, atol=1e-9)
    assert Prior().in_support(tiny.chain.reshape(-1, 7)).all()
    assert tiny.samples.fields == [*PARAMETER_NAMES, "log_likelihood", "step", "walker", "mode"]
    assert np.all(ak.to_numpy(tiny.samples["mode"]) == 0)
    assert np.all(np.isfinite(ak.to_numpy(tiny.samples["log_likelihood"])))
    assert 0 < tiny.acceptance_fraction.mean() < 1
    assert not tiny.converged  # 60 steps cannot be 50 autocorrelation times
    assert tiny.modes == ()


def test_deterministic_for_a_seed(auger: Observation, model: ForwardModel, tiny: McmcResult) -> None:
    again = run_mcmc(auger, model=model, seed=3, n_walkers=12, n_steps=60, initial=COMBINED_FIT, **FAST)
    other = run_mcmc(auger, model=model, seed=4, n_walkers=12, n_steps=60, initial=COMBINED_FIT, **FAST)
    assert np.array_equal(again.chain, tiny.chain)
    assert np.array_equal(again.log_prob, tiny.log_prob)
    assert not np.array_equal(other.chain, tiny.chain)


def test_both_minima_of_the_auger_fit_are_found(auger: Observation, model: ForwardModel) -> None:
    post = UnconstrainedPosterior(Likelihood(auger, model=model), Prior())
    modes = find_modes(post, 1, n_candidates=2048, n_starts=8)
    gammas = [m.theta[0] for m in modes]
    assert gammas[0] < 0  # the deepest: hard spectrum (docs/cosmic_model.md: D ~ 215 at gamma -1.7)
    assert any(0.7 < g < 1.3 for g in gammas)  # the combined-fit-like soft minimum
    soft = next(m for m in modes if 0.7 < m.theta[0] < 1.3)
    assert modes[0].deviance < soft.deviance < 290
    assert soft.theta[1] == pytest.approx(18.65, abs=0.05)
    assert all(np.isclose(m.theta[2:].sum(), 1.0) for m in modes)


def test_posterior_mean_near_truth_on_asimov_data(asimov: Observation, model: ForwardModel) -> None:
    start = INTERIOR.copy()
    start[0] += 0.3  # > 10 posterior standard deviations away
    start[1] -= 0.1
    result = run_mcmc(
        asimov,
        model=model,
        seed=5,
        n_walkers=16,
        n_steps=1000,
        initial=start,
        ball=0.05,
        stop_when_converged=False,
        check_every=500,
        progress=False,
    )
    theta = result.theta()
    late = theta[ak.to_numpy(result.samples["step"]) >= 500]
    for i in (0, 1):  # gamma, lg_rcut
        mean, sd = late[:, i].mean(), late[:, i].std()
        assert 0 < sd < 0.1
        assert abs(mean - INTERIOR[i]) < 3 * sd + 0.01, (PARAMETER_NAMES[i], mean, sd)


def test_convergence_stops_the_run(asimov: Observation, model: ForwardModel) -> None:
    result = run_mcmc(
        asimov,
        model=model,
        seed=2,
        n_walkers=12,
        n_steps=2000,
        initial=INTERIOR,
        ball=0.05,
        tau_factor=2.0,  # a loose criterion so that a short test run meets it
        tau_rtol=0.5,
        **FAST,
    )
    assert result.converged
    assert result.n_steps < 2000
    assert result.n_steps % 20 == 0
    assert np.all(result.tau[np.isfinite(result.tau)] * 2 < result.n_steps)
    assert result.burn_in <= result.n_steps // 2
    assert result.thin >= 1


def test_write_outputs(tiny: McmcResult, tmp_path: Path) -> None:
    files = tiny.write(tmp_path / "out", chain=True)
    assert sorted(files) == ["chain.parquet", "samples.parquet", "samples.root", "summary.json"]
    back = ak.from_parquet(files["samples.parquet"])
    assert np.array_equal(ak.to_numpy(back["f_He"]), ak.to_numpy(tiny.samples["f_He"]))
    with uproot.open(files["samples.root"]) as f:
        assert f.classname_of("Posterior") == "TTree"
        assert f["Posterior"].num_entries == len(tiny.samples)
    summary = json.loads(files["summary.json"].read_text())
    assert summary["converged"] is False
    assert summary["n_steps"] == 60
    assert set(summary["tau"]) == set(PARAMETER_NAMES)
    assert summary["posterior"]["gamma"]["mean"] == pytest.approx(tiny.theta()[:, 0].mean())
    assert summary["wall_time_s"] > 0
    assert len(ak.from_parquet(files["chain.parquet"])) == 60 * 12
    with pytest.raises(OutputError, match="exists"):
        tiny.write(tmp_path / "out")
    assert "NOT converged" in str(tiny)


def test_cli_entry_point_on_a_pseudo_experiment(pe_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg.toml"
    config.write_text(
        "[mcmc]\nn_walkers = 12\nn_steps = 40\ncheck_every = 20\nn_candidates = 64\nn_starts = 2\nseed = 9\n"
    )
    result = mcmc_cosmic(pe_file, tmp_path / "mcmc", config=config, entry=3, progress=False)
    assert result.n_steps == 40
    assert len(result.modes) >= 1
    summary = json.loads((tmp_path / "mcmc" / "summary.json").read_text())
    assert summary["settings"]["entry"] == 3
    assert summary["settings"]["seed"] == 9
    assert summary["settings"]["observation"] == str(pe_file)
    with pytest.raises(OutputError, match="exists"):
        mcmc_cosmic(pe_file, tmp_path / "mcmc", config=config, progress=False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_walkers": 10}, "at least 12"),
        ({"initial": "random"}, "initial must be"),
        ({"initial": np.array([5.0, 18.7, 1, 0, 0, 0, 0])}, "outside the prior support"),
        ({"initial": np.zeros((3, 7))}, r"shape \(7,\) or \(12, 7\)"),
        ({"tau_rtol": 0.0}, "tau_rtol must be a positive number"),
    ],
)
def test_bad_settings(auger: Observation, model: ForwardModel, options: dict, message: str) -> None:
    kw = {"n_walkers": 12, "n_steps": 10, "progress": False, **options}
    with pytest.raises(ConfigError, match=message):
        run_mcmc(auger, model=model, seed=1, **kw)


@pytest.mark.slow
def test_auger_run_converges(auger: Observation, model: ForwardModel) -> None:
    """The default settings on the published data: converged, both modes listed (minutes)."""
    result = run_mcmc(auger, model=model, seed=1, progress=False)
    assert result.converged
    assert result.modes[0].theta[0] < 0
    assert 0.2 < result.acceptance_fraction.mean() < 0.7


def test_identical_walkers_are_refused(auger: Observation, model: ForwardModel) -> None:
    with pytest.raises(ConfigError, match="initial walker positions"):
        run_mcmc(
            auger,
            model=model,
            seed=1,
            n_walkers=12,
            n_steps=10,
            initial=np.tile(INTERIOR, (12, 1)),
            progress=False,
        )
