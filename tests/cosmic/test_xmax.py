"""Generalized Gumbel Xmax: normalisation, moments against the reference values, sampler."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic.xmax import gumbel_cdf, gumbel_moments, gumbel_pdf, sample_xmax
from hepflow.errors import ConfigError

# EPOS-LHC at 10^19 eV: <Xmax>, sigma(Xmax) [g/cm^2] (reference moments)
REFERENCE = {1: (806.0, 58.0), 14: (744.0, 26.0), 56: (709.0, 17.5)}
# moment parametrisation (Abreu et al. 2013): X0, D, xi, delta
MOMENTS = {"EPOS-LHC": (806.1, 55.6, 0.15, 0.83), "QGSJetII-04": (790.4, 54.4, -0.31, 0.24)}


@pytest.mark.parametrize("mass", [1, 14, 56])
def test_sampler_moments_match_reference(mass: int) -> None:
    x = sample_xmax(19.0, np.log(mass), np.random.default_rng(mass), size=200_000)
    mean, std = REFERENCE[mass]
    assert x.mean() == pytest.approx(mean, abs=2.0)
    assert x.std() == pytest.approx(std, rel=0.10)
    m, s = gumbel_moments(19.0, np.log(mass))
    assert x.mean() == pytest.approx(float(m), abs=0.5)
    assert x.std() == pytest.approx(float(s), rel=0.02)


@pytest.mark.parametrize("model", ["EPOS-LHC", "QGSJetII-04"])
def test_mean_matches_moment_parametrisation(model: str) -> None:
    x0, d, xi, delta = MOMENTS[model]
    for lg_e in (18.7, 19.0, 19.5):
        for mass in (1, 4, 14, 28, 56):
            ln_a = np.log(mass)
            l = lg_e - 19.0
            expected = x0 + d * l + (xi - d / np.log(10.0) + delta * l) * ln_a
            assert float(gumbel_moments(lg_e, ln_a, model=model)[0]) == pytest.approx(expected, abs=3.0)


@pytest.mark.parametrize("model", ["EPOS-LHC", "QGSJetII-04"])
def test_pdf_normalised_and_consistent_with_cdf(model: str) -> None:
    x = np.arange(0.0, 2000.0, 0.25) + 0.125
    for lg_e in (18.7, 19.3, 20.0):
        for mass in (1, 4, 14, 28, 56):
            pdf = gumbel_pdf(x, lg_e, np.log(mass), model=model)
            assert pdf.sum() * 0.25 == pytest.approx(1.0, abs=1e-6)
            cdf = gumbel_cdf(x + 0.125, lg_e, np.log(mass), model=model)  # upper cell edges
            assert np.all(np.diff(cdf) >= 0)
            np.testing.assert_allclose(np.cumsum(pdf) * 0.25, cdf, atol=1e-5)
    # far tails: no overflow, exact zeros
    assert gumbel_pdf(np.array([-1e5, 5e5]), 19.0, 0.0, model=model).tolist() == [0.0, 0.0]


def test_sampler_deterministic_and_model_checked() -> None:
    a = sample_xmax(19.0, 0.0, 7, size=10)
    b = sample_xmax(19.0, 0.0, np.random.default_rng(7), size=10)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="'Sibyll'"):
        gumbel_pdf(700.0, 19.0, 0.0, model="Sibyll")
