"""Modes of the posterior: their masses (importance sampling) and the MCMC that samples each."""

from __future__ import annotations

from types import SimpleNamespace

import awkward as ak
import numpy as np
import pytest

from hepflow.cosmic import Observation, Prior, mcmc, modes
from hepflow.cosmic.modes import weigh
from hepflow.errors import ConfigError

FAST = {"check_every": 100, "progress": False, "n_candidates": 512, "n_starts": 8}


def _bumps(masses: tuple[float, ...], centres: np.ndarray, widths: tuple[float, ...]):
    """A normalised mixture of isotropic Gaussians: log density (n, d) -> (n,)."""

    def density(z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z)
        d = z.shape[1]
        parts = [
            np.log(m) - 0.5 * np.sum(((z - c) / w) ** 2, axis=1) - d * np.log(w * np.sqrt(2 * np.pi))
            for m, c, w in zip(masses, centres, widths, strict=True)
        ]
        return np.logaddexp.reduce(parts, axis=0)

    return density


@pytest.mark.parametrize("light", [0.5, 0.2, 0.03])
def test_masses_of_two_separated_bumps(light: float) -> None:
    centres = np.array([[-4.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    # the light bump is the narrower: its density is the higher for light >= 0.03
    density = _bumps((1 - light, light), centres, (1.0, 0.3))
    w = weigh(density, centres, rng=2, draws=5000, steps=200)
    assert w.methods == ("importance", "importance")
    assert w.regions == ((0,), (1,))
    assert abs(w.masses[1] - light) < 3 * w.errors[1]
    assert 0 < w.errors[1] < 0.15 * light
    assert w.masses.sum() == pytest.approx(1.0)
    assert w.log_evidence == pytest.approx(0.0, abs=0.05)
    assert w.ess > 500


@pytest.mark.parametrize("light", [0.5, 0.03])
def test_the_adapted_proposal_covers_both_bumps_with_their_masses(light: float) -> None:
    """The weighing's last proposal: one Student t per run region, shares by mass (with the
    floor), centred on its bump; as an importance proposal of the density it is efficient."""
    centres = np.array([[-4.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    density = _bumps((1 - light, light), centres, (1.0, 0.3))
    w = weigh(density, centres, rng=2, draws=5000, steps=200)
    g = w.proposal
    assert g.means.shape == (2, 3)
    assert g.covariances.shape == (2, 3, 3)
    np.testing.assert_allclose(g.means, centres, atol=0.1)
    assert g.weights.sum() == pytest.approx(1.0)
    assert g.weights[1] == pytest.approx(max(light, 0.05) / (1 - light + max(light, 0.05)), abs=0.03)
    z = g.sample(4000, rng=3)
    log_w = density(z) - g.log_prob(z)
    ratio = np.exp(log_w - log_w.max())
    assert ratio.sum() ** 2 / np.sum(ratio**2) > 0.5 * 4000  # ESS / n
    share = np.sum(ratio[z[:, 0] > 0]) / ratio.sum()
    assert share == pytest.approx(light, abs=0.03)


def test_a_narrow_maximum_starts_its_walkers_inside_its_leash() -> None:
    """A bump 1e-3 wide: its Laplace ellipsoid (the run's leash) is narrower than the walkers'
    1e-2 scatter; walkers outside it made emcee compare -inf with -inf (a warning, an error
    under pytest). They start inside now, and the masses come out."""
    centres = np.array([[-3.0, 0.0], [3.0, 0.0]])
    density = _bumps((0.6, 0.4), centres, (1.0, 1e-3))
    w = weigh(density, centres, rng=1, draws=4000, steps=100)
    assert w.methods == ("importance", "importance")
    assert w.masses[1] == pytest.approx(0.4, abs=3 * w.errors[1] + 0.01)


def test_a_student_mixture_is_normalised_and_its_marginal_integrates_the_rest() -> None:
    from scipy import integrate

    g = modes.StudentMixture(
        np.array([[0.0, 1.0], [3.0, -1.0]]),
        np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.3, 0.0], [0.0, 0.5]]]),
        np.array([0.6, 0.4]),
    )
    total = integrate.dblquad(lambda y, x: np.exp(g.log_prob(np.array([[x, y]]))[0]), -60, 60, -60, 60)[0]
    assert total == pytest.approx(1.0, abs=2e-3)
    x = 0.7
    inner = integrate.quad(lambda y: np.exp(g.log_prob(np.array([[x, y]]))[0]), -200, 200)[0]
    assert np.exp(g.marginal(1).log_prob(np.array([[x]]))[0]) == pytest.approx(inner, rel=1e-4)
    # the draws follow the density
    draws = g.sample(20_000, rng=1)
    above = integrate.quad(lambda t: np.exp(g.marginal(1).log_prob(np.array([[t]]))[0]), 1.5, 400)[0]
    assert np.mean(draws[:, 0] > 1.5) == pytest.approx(above, abs=0.01)


def test_maxima_of_one_region_are_merged_and_a_negligible_one_is_screened() -> None:
    centres = np.array([[0.0, 0.0], [6.0, 6.0]])
    density = _bumps((1 - 1e-8, 1e-8), centres, (1.0, 1.0))
    starts = np.array([[0.0, 0.0], [0.3, -0.2], [6.0, 6.0]])  # two starts in the heavy bump
    w = weigh(density, starts, rng=1, draws=2000, steps=100)
    assert w.regions == ((0, 1), (2,))
    assert w.methods == ("importance", "laplace")
    assert w.masses[1] == pytest.approx(1e-8, rel=0.05)  # exact for a Gaussian, against an estimate
    assert np.isnan(w.errors[1])
    assert np.isnan(w.region_ess[1])
    assert w.log_evidence == pytest.approx(0.0, abs=0.05)  # the density is normalised
    assert w.summary()["errors"][1] is None


@pytest.mark.parametrize("edge", [5e-3, 5e-5])
def test_a_maximum_at_the_support_s_edge_is_weighed(edge: float) -> None:
    """A bump cut off just past its maximum: the Laplace stencil at step 1e-2 crosses the edge.
    At 5e-3 a finer stencil gives the Laplace estimate; at 5e-5 none does, and the maximum is run
    all the same (it was screened with mass 0 before)."""
    from scipy import stats

    centres = np.array([[0.0, 0.0], [6.0, 6.0]])
    bumps = _bumps((0.7, 0.3), centres, (1.0, 0.5))

    def density(z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z)
        return np.where(z[:, 0] <= 6.0 + edge, bumps(z), -np.inf)

    cut = 0.3 * stats.norm.cdf(edge / 0.5)
    exact = cut / (0.7 + cut)
    w = weigh(density, centres, rng=3, draws=5000, steps=200)
    assert w.methods == ("importance", "importance")
    assert abs(w.masses[1] - exact) < 3 * w.errors[1]
    laplace = modes._laplace(density, centres[1])[0]
    assert bool(np.isfinite(laplace)) is (edge > 1e-4)


def test_two_peaks_on_one_plateau_are_one_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # two narrow peaks (5 % each) 4 apart on a broad plateau (90 %): no valley between them (the
    # path dips 1.9 in log density), so one region; their leashed runs alone stay apart
    bumps = np.array([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    density = _bumps((0.05, 0.9, 0.05), bumps, (0.3, 3.0, 0.3))
    peaks = bumps[[0, 2]]
    w = weigh(density, peaks, rng=1, draws=2000, steps=100)
    assert w.regions == ((0, 1),)
    assert w.masses.tolist() == [1.0]
    monkeypatch.setattr(modes, "_BARRIER", -np.inf)  # no path test: two regions
    assert weigh(density, peaks, rng=1, draws=2000, steps=100).regions == ((0,), (1,))


def test_a_light_mode_keeps_its_own_region() -> None:
    # 1e-4 of the mass, 8.5 sd away: an unleashed ensemble run from it crosses to the heavy bump
    centres = np.array([[0.0, 0.0], [6.0, 6.0]])
    density = _bumps((1 - 1e-4, 1e-4), centres, (1.0, 1.0))
    w = weigh(density, centres, rng=1, draws=5000, steps=200)
    assert w.regions == ((0,), (1,))
    assert w.methods == ("importance", "importance")
    assert abs(w.masses[1] - 1e-4) < 3 * w.errors[1]
    assert w.region_ess[1] > 100
    assert w.region_of(centres).tolist() == [0, 1]
    # draws of a marginal (here the first coordinate) are judged by the Gaussians' marginals
    assert w.region_of(np.array([[0.2], [5.8]]), dims=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="points of 2 coordinates, expected 1"):
        w.region_of(centres, dims=1)


def test_mass_of_a_curved_heavy_tailed_mode() -> None:
    """A banana with Student-t tails (30 %) next to a Gaussian (70 %): not what the proposal's
    t components are, so the adaptation and the weights carry the estimate. (Its tails, 6 degrees
    of freedom, are lighter than the proposal's 4, as importance sampling needs; the cosmic
    posterior's are lighter still: Gaussian nuisance priors, logistic coordinates.)"""
    from scipy import stats

    def density(z: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(z)
        banana = (
            np.log(0.3)
            + stats.t(df=6, scale=2.0).logpdf(z[:, 0])
            + stats.norm(scale=0.5).logpdf(z[:, 1] - 0.3 * z[:, 0] ** 2)
            + stats.norm.logpdf(z[:, 2])
        )
        gauss = np.log(0.7) + stats.norm.logpdf(z - np.array([12.0, -8.0, 0.0])).sum(axis=1)
        return np.logaddexp(banana, gauss)

    starts = np.array([[12.0, -8.0, 0.0], [0.0, 0.0, 0.0]])
    w = weigh(density, starts, rng=3, draws=10_000, steps=300)
    assert w.regions == ((0,), (1,))
    assert abs(w.masses[1] - 0.3) < max(3 * w.errors[1], 0.02)
    assert w.log_evidence == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"draws": 10}, "draws >= 100"), ({"steps": 5}, "steps >= 20"), ({"screen": 1.0}, "screen < 1")],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        weigh(_bumps((1.0,), np.zeros((1, 2)), (1.0,)), np.zeros((1, 2)), **options)


class _Spectra:
    """A likelihood with separated modes in (gamma, lg_rcut): ``(mass, gamma, lg_rcut, width in
    gamma)`` each; the fractions are free (prior)."""

    model = SimpleNamespace(description="separated spectra (test)", systematics=None)

    def __init__(self, bumps: tuple[tuple[float, float, float, float], ...]) -> None:
        self.bumps = bumps

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        parts = [
            np.log(m) - 0.5 * ((theta[:, 0] - g) / w) ** 2 - 0.5 * ((theta[:, 1] - r) / 0.05) ** 2 - np.log(w)
            for m, g, r, w in self.bumps
        ]
        return np.where(Prior().in_support(theta), np.logaddexp.reduce(parts, axis=0), -np.inf)

    def deviance(self, theta: np.ndarray) -> SimpleNamespace:
        dev = -2 * self(theta)
        return SimpleNamespace(total=dev, spectrum=dev, xmax=np.zeros_like(dev))


def _two(hard: float) -> tuple[tuple[float, float, float, float], ...]:
    """``hard`` of the mass in a narrow hard mode (gamma -1), the rest in a soft one (gamma 1)."""
    return ((hard, -1.0, 18.2, 0.05), (1 - hard, 1.0, 18.7, 0.15))


@pytest.fixture
def spectra(monkeypatch: pytest.MonkeyPatch):
    """``run_mcmc`` on a likelihood of separated modes (its observation is not used)."""

    def run(bumps: tuple[tuple[float, float, float, float], ...], **options):
        monkeypatch.setattr(mcmc, "Likelihood", lambda observation, model=None: _Spectra(bumps))
        kw = {"seed": 4, "n_walkers": 16, "n_steps": 400, "stop_when_converged": False, **FAST, **options}
        return mcmc.run_mcmc(Observation.from_auger(), **kw)

    return run


def test_mcmc_samples_each_mode_in_proportion_to_its_mass(spectra) -> None:
    result = spectra(_two(0.3), mode_draws=4000)
    gammas = sorted(m.theta[0] for m in result.modes)
    assert gammas[0] == pytest.approx(-1.0, abs=0.05)
    assert gammas[-1] == pytest.approx(1.0, abs=0.1)
    hard = next(m for m in result.modes if m.theta[0] < 0)
    assert hard.mass == pytest.approx(0.3, abs=0.03)
    assert len(result.sampled_modes) == 2
    assert result.chain.shape[1] == 32  # one ensemble per mode
    gamma = ak.to_numpy(result.samples["gamma"])
    assert np.mean(gamma < 0) == pytest.approx(0.3, abs=0.03)
    mode = ak.to_numpy(result.samples["mode"])
    hard_index = next(i for i, m in enumerate(result.modes) if m is hard)
    assert np.array_equal(mode == hard_index, gamma < 0)  # the column names each sample's mode
    assert all(p > 0.99 for p in result.mode_purity)
    summary = result.summary()
    assert summary["mode_weights"]["ess"] > 100
    assert summary["mode_warnings"] == []
    assert "% of the posterior mass, sampled" in str(result)
    assert "2 ensembles of 16 walkers (one per mode)" in str(result)
    again = spectra(_two(0.3), mode_draws=4000)
    assert np.array_equal(ak.to_numpy(again.samples["gamma"]), gamma)  # the seed fixes everything


def test_a_light_mode_is_weighed_but_not_sampled_and_said(spectra) -> None:
    bumps = ((0.3, -1.0, 18.2, 0.05), (0.65, 1.0, 18.7, 0.15), (0.05, 2.5, 19.2, 0.05))
    result = spectra(bumps, mode_draws=4000, min_mode_mass=0.1)
    assert [round(m.theta[0]) for m in result.modes] == [1, -1, 2]  # heaviest first
    assert result.modes[2].mass == pytest.approx(0.05, abs=0.01)
    assert result.sampled_modes == (0, 1)
    assert np.all(ak.to_numpy(result.samples["gamma"]) < 2)
    (warning,) = result.mode_warnings()
    assert "holding 4.8 %" in warning
    assert "not sampled" in warning
    assert "WARNING: modes holding" in str(result)


def test_a_run_that_stops_early_continues_to_the_others_length(spectra, monkeypatch) -> None:
    calls = []
    original = mcmc._run_ensemble

    def first_stops_early(*args, **kw):
        calls.append(kw["n_steps"])
        return original(*args, **{**kw, "n_steps": 200 if len(calls) == 1 else kw["n_steps"]})

    monkeypatch.setattr(mcmc, "_run_ensemble", first_stops_early)
    result = spectra(_two(0.3), mode_draws=4000)
    assert len(calls) == 2
    assert result.chain.shape == (400, 32, 7)
    assert np.all(np.isfinite(result.log_prob))
    # the continued run goes on where it stopped, in its own mode
    first = result.chain[:, :16, 0]
    assert np.all(np.sign(first[190:210]) == np.sign(first[0]))
    assert all(p > 0.99 for p in result.mode_purity)
    assert np.mean(ak.to_numpy(result.samples["gamma"]) < 0) == pytest.approx(0.3, abs=0.03)


def test_without_weighing_the_highest_density_mode_is_sampled(spectra) -> None:
    # the hard mode is 3x narrower in gamma: higher density with 30 % of the mass
    result = spectra(_two(0.3), mode_draws=0)
    assert all(m.mass is None for m in result.modes)
    assert result.modes[0].theta[0] < 0
    assert np.all(ak.to_numpy(result.samples["gamma"]) < 0)


def test_the_mode_closure_benchmark_weighs_the_truth_s_mode() -> None:
    from tests.conftest import load_benchmark

    bench = load_benchmark("cosmic_mode_closure")
    modes = [
        SimpleNamespace(theta=np.array([1.2]), mass=0.8),
        SimpleNamespace(theta=np.array([-1.0]), mass=0.2),
    ]
    gamma = np.array([1.1, 1.3, -0.9, 0.2])  # the last one nearer the soft maximum
    weights = np.array([0.1, 0.1, 0.7, 0.1])
    out = bench.at_truth_mode(modes, -1.2, gamma, weights)
    assert out == pytest.approx(
        {"mcmc_mass_at_truth": 0.2, "cinn_mass_at_truth": 0.25, "importance_mass_at_truth": 0.7}
    )
    assert bench.at_truth_mode(modes[:1], -1.2, gamma, weights)["mcmc_mass_at_truth"] == 1.0  # one mode found
    unweighed = [SimpleNamespace(theta=m.theta, mass=None) for m in modes]
    assert bench.at_truth_mode(unweighed, 1.0, gamma, weights)["mcmc_mass_at_truth"] is None
