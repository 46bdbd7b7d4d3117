"""Injection spectrum, E^-1 reweighting convention, distance models."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic.propagation import Propagation, fixed_distance_weights, homogeneous_distance_weights
from hepflow.cosmic.source import as_params, cutoff, injected_flux, injection_weights
from hepflow.errors import ConfigError

EDGES = np.linspace(18.5, 21.0, 126)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])


def test_cutoff_shape() -> None:
    lg = np.array([18.0, 19.0, 19.0 + np.log10(2.0), 19.0 + np.log10(7.0) + 0.3])
    c = cutoff(lg, 19.0, 1)
    np.testing.assert_allclose(c[:3], [1.0, 1.0, np.exp(-1.0)])
    # Z R_cut scaling: N (Z=7) is cut at 7x the proton energy
    assert cutoff(19.0 + np.log10(7.0), 19.0, 7) == pytest.approx(1.0)
    assert injected_flux(np.array([19.0]), [2.0, 19.0, 0.5, 0.5, 0, 0, 0]).shape == (1, 5, 1)


def test_one_node_matches_astrotools_reweighting() -> None:
    """astrotools multiplies the E^-1 table by 10^((g+1)(lgE-19)) with g the signed exponent (= -gamma)."""
    for gamma in (-1.5, 0.5, 2.0):
        w = injection_weights([gamma, 22.0, 1, 0, 0, 0, 0], EDGES, n_nodes=1)[0, 0]
        astrotools = 10.0 ** ((-gamma + 1.0) * (CENTRES - 19.0))
        np.testing.assert_allclose(w / astrotools, (w / astrotools)[0], rtol=1e-12)
    # more nodes: the bin integral, close to the centre value for 0.02 bins
    fine = injection_weights([2.0, 22.0, 0.2, 0.2, 0.2, 0.2, 0.2], EDGES, n_nodes=8)
    coarse = injection_weights([2.0, 22.0, 0.2, 0.2, 0.2, 0.2, 0.2], EDGES, n_nodes=1)
    np.testing.assert_allclose(fine, coarse, rtol=2e-4)
    # with a cut-off the integral is smooth in R_cut, the centre value is not; 4 nodes are
    # exact to 1e-3 in the bin holding the kink at Z R_cut
    four = injection_weights([2.0, 18.6, 0.2, 0.2, 0.2, 0.2, 0.2], EDGES, n_nodes=4)
    eight = injection_weights([2.0, 18.6, 0.2, 0.2, 0.2, 0.2, 0.2], EDGES, n_nodes=8)
    np.testing.assert_allclose(four, eight, rtol=1e-3, atol=1e-9 * eight.max())


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_sign_convention_with_unattenuated_protons(gamma: float) -> None:
    """Protons from 1 Mpc barely lose energy: counts per lg E bin must follow E^(1 - gamma)."""
    prop = Propagation.build(distance=1.0)
    inj = injection_weights([gamma, 22.0, 1, 0, 0, 0, 0], EDGES)
    arriving = prop(inj)[0]
    assert np.all(arriving[1:] == 0.0)
    sel = (CENTRES > 18.6) & (CENTRES < 19.6)
    slope = np.polyfit(CENTRES[sel], np.log10(arriving[0, sel]), 1)[0]
    assert slope == pytest.approx(1.0 - gamma, abs=0.03)


def test_distance_weights() -> None:
    d = np.geomspace(1.0, 1500.0, 100)
    w = homogeneous_distance_weights(d)
    assert w.sum() == pytest.approx(1.0)
    # uniform in distance: weight density per Mpc is flat away from the ends
    edges = np.concatenate([[d[0]], np.sqrt(d[1:] * d[:-1]), [d[-1]]])
    np.testing.assert_allclose(w / np.diff(edges), w[50] / np.diff(edges)[50], rtol=1e-12)
    assert homogeneous_distance_weights(d, d_max=100.0)[d > 110].sum() == 0.0
    f = fixed_distance_weights(d, 10.0)
    assert f.sum() == pytest.approx(1.0)
    assert np.count_nonzero(f) == 2
    assert np.exp(np.sum(f * np.log(d))) == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="3000"):
        fixed_distance_weights(d, 3000.0)
    with pytest.raises(ConfigError, match="d_max=2000"):
        homogeneous_distance_weights(d, d_max=2000.0)
    with pytest.raises(ConfigError, match="'flat'"):
        Propagation.build(distance="flat")


def test_parameter_validation() -> None:
    assert as_params([1.0, 19.0, 1, 0, 0, 0, 0]).shape == (1, 7)
    with pytest.raises(ConfigError, match=r"shape \(n, 7\)"):
        as_params(np.zeros((3, 6)))
    with pytest.raises(ConfigError, match="row 1"):
        as_params([[1.0, 19.0, 1, 0, 0, 0, 0], [1.0, 19.0, 0.5, 0.6, 0, 0, 0]])
    with pytest.raises(ConfigError, match="row 0"):
        as_params([np.nan, 19.0, 1, 0, 0, 0, 0])
