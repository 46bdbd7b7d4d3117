"""Conditioning features: one layout for simulated, shower-list and published observations."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import Binning, ForwardModel, Observation
from hepflow.cosmic.features import (
    feature_columns,
    feature_matrix,
    feature_names,
    histogram_counts,
    observation_features,
    shower_histogram,
    valid_rows,
)
from hepflow.errors import InputError

from .conftest import COMBINED_FIT


def test_names_match_the_vector_layout(auger: Observation) -> None:
    names = feature_names()
    assert len(names) == len(set(names)) == 1 + 15 + 3 * 9 + 9 * 100
    x = observation_features(auger.spectrum, auger.xmax)[0]
    assert x[names.index("lg_n_spectrum")] == pytest.approx(np.log10(1 + auger.n_spectrum))
    assert x[names.index("xmax_lgn0")] == pytest.approx(np.log10(1 + 413))
    # spectrum log fractions: decreasing with energy for the steep Auger spectrum
    spec = x[[names.index(f"spec_lf{i:02d}") for i in range(15)]]
    assert np.all(np.diff(spec[:12]) < 0)
    # fractions of each Xmax energy bin sum to 1; moments in 100 g/cm^2
    p = x[names.index("xmax_p0_00") :].reshape(9, 100)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert 7.0 < x[names.index("xmax_mean0")] < 8.0
    assert 0.3 < x[names.index("xmax_std0")] < 0.8


def test_auger_gives_a_finite_vector_of_the_same_length(auger: Observation, model: ForwardModel) -> None:
    sims = model.simulate(np.repeat(COMBINED_FIT[None], 4, axis=0), rng=2)
    f_sim = observation_features(sims["spectrum"], sims["xmax"])
    f_auger = observation_features(auger.spectrum, auger.xmax)
    assert f_sim.shape == (4, len(feature_names()))
    assert f_auger.shape == (1, f_sim.shape[1])
    assert np.all(np.isfinite(f_auger))
    # flattened Xmax counts give the same features
    assert np.array_equal(observation_features(sims["spectrum"], sims["xmax"].reshape(4, -1)), f_sim)


def test_shower_histogram_equals_from_showers(showers: tuple) -> None:
    lg_e, xmax = showers
    h = shower_histogram()
    h.fill(lg_e=lg_e, xmax=xmax)
    spectrum, counts = histogram_counts(h)
    direct = Observation.from_showers(lg_e, xmax)
    assert np.array_equal(spectrum, direct.spectrum)
    assert np.array_equal(counts, direct.xmax)
    assert np.array_equal(
        observation_features(spectrum, counts), observation_features(direct.spectrum, direct.xmax)
    )


def test_histogram_handles_missing_and_out_of_range_showers() -> None:
    lg_e = np.array([18.65, 18.75, 18.75, 19.95, 20.05, 20.15])
    xmax = np.array([700.0, np.nan, 2100.0, 750.0, 750.0, np.nan])
    h = shower_histogram()
    h.fill(lg_e=lg_e, xmax=xmax)
    spectrum, counts = histogram_counts(h)
    direct = Observation.from_showers(lg_e, xmax)
    assert np.array_equal(spectrum, direct.spectrum)
    assert np.array_equal(counts, direct.xmax)
    assert spectrum.sum() == 5  # 18.65 is below the threshold
    assert counts.sum() == 1  # only 19.95 has an Xmax inside 0..2000 and lg E < 20


def test_other_threshold_binning(showers: tuple) -> None:
    b = Binning.auger(lg_e_min=19.0)
    h = shower_histogram(b)
    h.fill(lg_e=showers[0], xmax=showers[1])
    spectrum, counts = histogram_counts(h, binning=b)
    direct = Observation.from_showers(*showers, binning=b)
    assert np.array_equal(counts, direct.xmax)
    assert observation_features(spectrum, counts, binning=b).shape[1] == len(feature_names(b))
    with pytest.raises(InputError, match="binning"):
        histogram_counts(h)  # the default binning starts at 18.7


def test_empty_xmax_bins_and_zero_counts_stay_finite() -> None:
    x = observation_features(np.zeros(15), np.zeros((9, 100)))
    assert np.all(np.isfinite(x))
    names = feature_names()
    assert x[0, names.index("xmax_mean3")] == 0.0
    assert x[0, names.index("lg_n_spectrum")] == 0.0


def test_zero_rows_give_empty_features() -> None:
    """A chunk (or dask partition) whose pseudo-experiments are all invalid, and the empty
    stand-ins from which dask-awkward learns the output type (before: a reshape ValueError)."""
    spec, xmax = np.zeros((0, 15), np.int32), np.zeros((0, 9, 100), np.int32)
    assert observation_features(spec, xmax).shape == (0, len(feature_names()))
    assert valid_rows(spec, xmax).shape == (0,)
    assert observation_features(spec, xmax.reshape(0, 900)).shape == (0, 943)
    assert valid_rows(np.zeros(0), nonnegative=False).tolist() == []


def test_columns_and_matrix_round_trip() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(5, len(feature_names())))
    truth = rng.random((5, 7))
    cols = feature_columns(feats, truth=truth)
    assert cols.fields[:7] == ["gamma", "lg_rcut", "f_H", "f_He", "f_N", "f_Si", "f_Fe"]
    assert np.array_equal(feature_matrix(cols), feats)
    with pytest.raises(InputError, match="lacks feature column 'xmax_p8_99'"):
        feature_matrix(cols[[f for f in cols.fields if f != "xmax_p8_99"]])


@pytest.mark.parametrize(
    ("spectrum", "xmax", "message"),
    [
        (np.zeros(14), np.zeros((9, 100)), r"shape \(n, 15\)"),
        (np.zeros(15), np.zeros((8, 100)), r"shape \(n, 9, 100\)"),
        (np.zeros((2, 15)), np.zeros((3, 9, 100)), "2 spectra but 3"),
        (-np.ones(15), np.zeros((9, 100)), "finite and >= 0"),
    ],
)
def test_shape_and_value_errors(spectrum: np.ndarray, xmax: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        observation_features(spectrum, xmax)
