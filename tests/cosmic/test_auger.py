"""Published Auger data shipped by astrotools: shapes, units, internal consistency."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic.auger import load_spectrum, load_xmax, xmax_acceptance, xmax_resolution_matrix


def test_spectrum_2020() -> None:
    spec = load_spectrum()
    assert spec.counts.shape == (18,)
    np.testing.assert_allclose(spec.lg_e_edges, np.linspace(18.4, 20.2, 19), atol=1e-9)
    np.testing.assert_allclose(spec.exposure, 60425.7)
    assert spec.counts[0] == 83143
    assert spec.counts[-1] == 6
    # J = c N / (exposure dE): checks units and the meaning of the unfolding column
    de = 10.0 ** spec.lg_e_edges[1:] - 10.0 ** spec.lg_e_edges[:-1]
    np.testing.assert_allclose(spec.unfolding * spec.counts / (spec.exposure * de), spec.flux, rtol=0.01)
    assert not spec.counts.flags.writeable


def test_xmax_2014() -> None:
    x = load_xmax()
    assert x.counts.shape == (18, 100)
    assert x.lg_e_edges.shape == (19,)
    assert x.lg_e_edges[0] == 17.8
    assert x.lg_e_edges[-1] == 20.0
    np.testing.assert_allclose(x.xmax_edges, np.arange(0.0, 2001.0, 20.0))
    np.testing.assert_array_equal(x.counts.sum(axis=1), x.n_events)
    assert x.resolution.shape == (18, 3)
    assert x.acceptance.shape == (18, 4)
    b = 12  # 19.0 .. 19.1
    assert x.lg_e_edges[b] == pytest.approx(19.0)
    np.testing.assert_allclose(x.resolution[b], [11.3, 23.6, 0.72], atol=0.05)
    np.testing.assert_allclose(x.acceptance[b], [581.0, 903.0, 387.0, 168.0], atol=1.0)


def test_detector_response_functions() -> None:
    x1, x2, l1, l2 = 581.0, 903.0, 387.0, 168.0
    acc = xmax_acceptance(np.array([x1 - 1e-9, x1, 800.0, x2, x2 + 1e-9, x2 + l2]), x1, x2, l1, l2)
    np.testing.assert_allclose(acc, [1.0, 1.0, 1.0, 1.0, 1.0, np.exp(-1.0)], atol=1e-9)
    edges = np.arange(0.0, 2001.0, 20.0)
    m = xmax_resolution_matrix(np.array([300.0, 750.0, 1200.0]), edges, 11.3, 23.6, 0.72)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    centres = 0.5 * (edges[1:] + edges[:-1])
    np.testing.assert_allclose(m @ centres, [300.0, 750.0, 1200.0], atol=1e-9)
    var = m @ centres**2 - (m @ centres) ** 2
    # k s1^2 + (1 - k) s2^2 plus the bin-width term 20^2 / 12
    np.testing.assert_allclose(var, 0.72 * 11.3**2 + 0.28 * 23.6**2 + 400.0 / 12.0, rtol=0.02)
