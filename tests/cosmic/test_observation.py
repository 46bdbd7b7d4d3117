"""Binning and observations (published data, lists of showers)."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import Binning, Observation
from hepflow.errors import ConfigError, InputError


def test_from_auger(auger: Observation) -> None:
    assert auger.binning.shape == (15, 9, 100)
    np.testing.assert_allclose(auger.binning.spectrum_edges[[0, -1]], [18.7, 20.2])
    np.testing.assert_allclose(
        auger.binning.xmax_energy_edges, [*np.arange(18.7, 19.55, 0.1), 20.0], atol=1e-9
    )
    assert auger.n_spectrum == 55730
    assert auger.n_xmax.tolist() == [413, 297, 230, 165, 114, 87, 63, 40, 37]
    wide = Observation.from_auger(lg_e_min=18.5)
    assert wide.binning.shape == (17, 11, 100)
    with pytest.raises(ConfigError, match=r"lg_e_min=18\.75"):
        Binning.auger(lg_e_min=18.75)
    with pytest.raises(ConfigError, match=r"lg_e_min=18\b"):
        Binning.auger(lg_e_min=18.0)


def test_from_showers_reproduces_histograms(auger: Observation) -> None:
    """Showers placed at the bin centres of the published data are binned back to the same counts."""
    b = auger.binning
    e_centres = 0.5 * (b.spectrum_edges[1:] + b.spectrum_edges[:-1])
    lg_e = np.repeat(e_centres, auger.spectrum.astype(int))
    xmax = np.full(lg_e.size, np.nan)
    xm_e = 0.5 * (b.xmax_energy_edges[1:] + b.xmax_energy_edges[:-1])
    xm_x = 0.5 * (b.xmax_edges[1:] + b.xmax_edges[:-1])
    m, x = np.nonzero(auger.xmax)
    k = auger.xmax[m, x].astype(int)
    extra_e, extra_x = np.repeat(xm_e[m], k), np.repeat(xm_x[x], k)
    # Xmax showers are a separate (hybrid) sample: add them without a spectrum entry by
    # binning them on their own and summing
    obs_spec = Observation.from_showers(lg_e, xmax, binning=b)
    obs_x = Observation.from_showers(extra_e, extra_x, binning=b)
    np.testing.assert_array_equal(obs_spec.spectrum, auger.spectrum)
    np.testing.assert_array_equal(obs_x.xmax, auger.xmax)
    assert obs_spec.xmax.sum() == 0


def test_from_showers_edges_and_errors() -> None:
    obs = Observation.from_showers([18.69, 18.7, 20.19, 20.3], [700.0, 700.0, np.nan, 800.0])
    assert obs.n_spectrum == 2  # 18.69 and 20.3 are outside
    assert obs.xmax.sum() == 1
    with pytest.raises(InputError, match="3 entries"):
        Observation.from_showers([19.0, 19.1, 19.2], [700.0])
    with pytest.raises(InputError, match="shape"):
        Observation(Binning.auger(), np.zeros(14), np.zeros((9, 100)))
    with pytest.raises(InputError, match=">= 0"):
        Observation(Binning.auger(), -np.ones(15), np.zeros((9, 100)))
