"""Forward model: shapes, normalisation, physics direction, simulator determinism and batching."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import Binning, ForwardModel, Observation, Prior
from hepflow.errors import ConfigError

from .conftest import COMBINED_FIT

PROTON = np.array([2.0, 19.5, 1.0, 0.0, 0.0, 0.0, 0.0])
IRON = np.array([1.0, 18.5, 0.0, 0.0, 0.0, 0.0, 1.0])  # Fe cut at 10^19.9: no light fragments
CENTRES = np.arange(10.0, 2000.0, 20.0)


def test_expected_shapes_and_normalisation(model: ForwardModel, auger: Observation) -> None:
    theta = Prior().sample(64, rng=3)
    mu = model.expected(theta)
    assert mu["spectrum"].shape == (64, 15)
    assert mu["xmax"].shape == (64, 9, 100)
    np.testing.assert_allclose(mu["spectrum"].sum(axis=1), auger.n_spectrum)
    np.testing.assert_allclose(mu["xmax"].sum(axis=2), np.broadcast_to(auger.n_xmax, (64, 9)))
    # vectorised == row by row
    row = model.expected(theta[5])
    np.testing.assert_allclose(row["spectrum"][0], mu["spectrum"][5], rtol=1e-12)
    np.testing.assert_allclose(row["xmax"][0], mu["xmax"][5], rtol=1e-12, atol=1e-300)
    scaled = model.expected(theta[:2], n_spectrum=10.0, n_xmax=np.ones(9))
    np.testing.assert_allclose(scaled["spectrum"].sum(axis=1), 10.0)


def test_proton_deeper_than_iron(model: ForwardModel) -> None:
    pdf = model.xmax_pdf(np.stack([PROTON, IRON]))
    mean = pdf @ CENTRES
    assert np.all(mean[0] - mean[1] > 60.0)  # ~100 g/cm^2 (Gumbel) after resolution/acceptance
    width = np.sqrt(pdf @ CENTRES**2 - mean**2)
    # above 10^19 eV the iron fragments (nucleons at E/56) are gone: narrow iron showers
    assert np.all(width[0, 3:] > width[1, 3:] + 20.0)
    comp = model.composition(np.stack([PROTON, IRON]))
    assert np.all(comp[0, :, 0] > 0.999)
    assert np.all(comp[1, :, 4] > 0.55)
    assert np.all(comp[1, 3:, :2].sum(axis=-1) < 0.05)
    lna = model.mean_ln_a(np.stack([PROTON, IRON]))
    assert np.all(lna[0] < 0.01)
    assert np.all(lna[1, 3:] > 3.5)


def test_qgsjet_shallower_than_epos(model: ForwardModel, auger: Observation) -> None:
    qgs = ForwardModel(auger, hadronic_model="QGSJetII-04")
    theta = COMBINED_FIT[None]
    assert np.all(qgs.xmax_pdf(theta) @ CENTRES < model.xmax_pdf(theta) @ CENTRES)


def test_spectrum_softens_with_gamma(model: ForwardModel) -> None:
    soft = model.spectrum_shape([3.0, 20.0, 1, 0, 0, 0, 0])[0]
    hard = model.spectrum_shape([1.0, 20.0, 1, 0, 0, 0, 0])[0]
    assert soft[0] > hard[0]
    assert soft[-1] < hard[-1]


def test_simulator_deterministic_and_batched(model: ForwardModel, auger: Observation) -> None:
    theta = Prior().sample(256, rng=11)
    a = model.simulate(theta, rng=42)
    b = model.simulate(theta, rng=np.random.default_rng(42))
    c = model.simulate(theta, rng=43)
    for key in ("spectrum", "xmax"):
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
    assert a["spectrum"].shape == (256, 15)
    assert a["xmax"].shape == (256, 9, 100)
    assert a["spectrum"].dtype.kind == "i"
    assert a["xmax"].dtype.kind == "i"
    np.testing.assert_array_equal(a["xmax"].sum(axis=2), np.broadcast_to(auger.n_xmax, (256, 9)))
    obs = model.observation(a, 3)
    assert obs.binning == auger.binning
    assert obs.n_spectrum == a["spectrum"][3].sum()


def test_simulator_mean_matches_expected(model: ForwardModel) -> None:
    theta = np.repeat(COMBINED_FIT[None], 2000, axis=0)
    sim = model.simulate(theta, rng=0)
    mu = model.expected(COMBINED_FIT)
    np.testing.assert_allclose(sim["spectrum"].mean(axis=0), mu["spectrum"][0], rtol=0.02, atol=0.3)
    np.testing.assert_allclose(sim["xmax"].mean(axis=0), mu["xmax"][0], atol=0.5)


def test_configuration_errors(auger: Observation) -> None:
    with pytest.raises(ConfigError, match="'SIBYLL'"):
        ForwardModel(auger, hadronic_model="SIBYLL")
    odd = Binning(auger.binning.spectrum_edges, auger.binning.xmax_energy_edges, np.arange(0.0, 2001.0, 10.0))
    with pytest.raises(ConfigError, match="Auger binning"):
        ForwardModel(Observation(odd, auger.spectrum, np.zeros((9, 200))))
    with pytest.raises(ConfigError, match="n_xmax"):
        ForwardModel(auger).simulate(COMBINED_FIT, rng=0, n_xmax=np.full(9, 1.5))
    with pytest.raises(ConfigError, match="row 0"):
        ForwardModel(auger).expected([1.0, 19.0, 0.5, 0.0, 0.0, 0.0, 0.0])
