"""Modes of the posterior: their masses (importance sampling) and the MCMC that samples each."""

from __future__ import annotations

from types import SimpleNamespace

import awkward as ak
import numpy as np
import pytest

from hepflow.cosmic import Observation, Prior, mcmc
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


def test_maxima_of_one_region_are_merged_and_a_negligible_one_is_screened() -> None:
    centres = np.array([[0.0, 0.0], [6.0, 6.0]])
    density = _bumps((1 - 1e-6, 1e-6), centres, (1.0, 1.0))
    starts = np.array([[0.0, 0.0], [0.3, -0.2], [6.0, 6.0]])  # two starts in the heavy bump
    w = weigh(density, starts, rng=1, draws=2000, steps=100)
    assert w.regions == ((0, 1), (2,))
    assert w.methods == ("importance", "laplace")
    assert w.masses[1] == pytest.approx(1e-6, rel=0.05)  # exact for a Gaussian, but relative to an estimate
    assert w.masses[0] == pytest.approx(1 - 1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"draws": 10}, "draws >= 100"), ({"steps": 5}, "steps >= 20"), ({"screen": 1.0}, "screen < 1")],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        weigh(_bumps((1.0,), np.zeros((1, 2)), (1.0,)), np.zeros((1, 2)), **options)


class _TwoSpectra:
    """A likelihood with two separated modes in (gamma, lg_rcut), ``weight`` of the mass in the
    hard one (gamma -1) and the rest in the soft one (gamma 1); the fractions are free (prior)."""

    model = SimpleNamespace(description="two separated spectra (test)", systematics=None)

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)

        def bump(g: float, r: float, w: float) -> np.ndarray:
            return -0.5 * ((theta[:, 0] - g) / w) ** 2 - 0.5 * ((theta[:, 1] - r) / 0.05) ** 2 - np.log(w)

        with np.errstate(divide="ignore"):
            hard = np.log(self.weight) + bump(-1.0, 18.2, 0.05)
            soft = np.log1p(-self.weight) + bump(1.0, 18.7, 0.15)
        return np.where(Prior().in_support(theta), np.logaddexp(hard, soft), -np.inf)

    def deviance(self, theta: np.ndarray) -> SimpleNamespace:
        dev = -2 * self(theta)
        return SimpleNamespace(total=dev, spectrum=dev, xmax=np.zeros_like(dev))


@pytest.fixture
def two_spectra(monkeypatch: pytest.MonkeyPatch):
    """``run_mcmc`` on the two-mode likelihood (its observation is not used)."""

    def run(weight: float, **options):
        monkeypatch.setattr(mcmc, "Likelihood", lambda observation, model=None: _TwoSpectra(weight))
        return mcmc.run_mcmc(
            Observation.from_auger(),
            seed=4,
            n_walkers=16,
            n_steps=400,
            stop_when_converged=False,
            **FAST,
            **options,
        )

    return run


def test_mcmc_samples_each_mode_in_proportion_to_its_mass(two_spectra) -> None:
    result = two_spectra(0.3, mode_draws=4000)
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
    assert set(np.unique(mode)) == set(result.sampled_modes)
    summary = result.summary()
    assert summary["mode_weights"]["ess"] > 100
    assert "% of the posterior mass, sampled" in str(result)
    assert "2 ensembles of 16 walkers (one per mode)" in str(result)


def test_a_light_mode_is_weighed_but_not_sampled(two_spectra) -> None:
    result = two_spectra(0.3, mode_draws=4000, min_mode_mass=0.5)
    assert result.sampled_modes == (0,)
    assert result.modes[0].mass == pytest.approx(0.7, abs=0.03)  # the heaviest first
    assert np.all(ak.to_numpy(result.samples["gamma"]) > 0)
    assert result.chain.shape[1] == 16


def test_without_weighing_the_highest_density_mode_is_sampled(two_spectra) -> None:
    # the hard mode is 3x narrower in gamma: higher density with 30 % of the mass
    result = two_spectra(0.3, mode_draws=0)
    assert all(m.mass is None for m in result.modes)
    assert result.modes[0].theta[0] < 0
    assert np.all(ak.to_numpy(result.samples["gamma"]) < 0)
