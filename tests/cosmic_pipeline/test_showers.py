"""Shower lists: drawn consistently with the forward model, written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot

from hepflow.cosmic import ForwardModel, Observation
from hepflow.cosmic.generate import (
    SHOWER_TREE,
    generate_showers,
    load_observation,
    read_showers,
    sample_showers,
    write_showers,
)
from hepflow.errors import ConfigError, InputError

from .conftest import COMBINED_FIT


@pytest.mark.parametrize(
    "theta",
    [
        COMBINED_FIT,
        np.array([2.0, 19.3, 0.5, 0.1, 0.1, 0.1, 0.2]),
        np.array([-1.2, 18.2, 0.29, 0.686, 0.022, 0.001, 0.001]),
    ],
)
def test_binned_showers_follow_the_model(model: ForwardModel, theta: np.ndarray) -> None:
    n_s, n_x = 10 * model.n_spectrum, 10 * model.n_xmax
    lg_e, xmax = sample_showers(theta, 7, model=model, n_spectrum=n_s, n_xmax=n_x)
    obs = Observation.from_showers(lg_e, xmax)
    assert np.array_equal(obs.n_xmax, n_x)
    mu = model.expected(theta, n_spectrum=n_s)["spectrum"][0]
    used = mu > 5
    chi2 = (((obs.spectrum - mu) ** 2 / mu)[used]).sum()
    assert chi2 < used.sum() + 5 * np.sqrt(2 * used.sum())
    # mean and width of Xmax per energy bin within 4 standard errors of the model's detected
    # distribution (acceptance and resolution included)
    centres = 0.5 * (model.binning.xmax_edges[1:] + model.binning.xmax_edges[:-1])
    pdf = model.xmax_pdf(theta)[0]
    mean_m = pdf @ centres
    sd_m = np.sqrt(pdf @ centres**2 - mean_m**2)
    mean_o = obs.xmax @ centres / obs.n_xmax
    sd_o = np.sqrt(obs.xmax @ centres**2 / obs.n_xmax - mean_o**2)
    assert np.all(np.abs(mean_o - mean_m) < 4 * sd_m / np.sqrt(obs.n_xmax))
    assert np.all(np.abs(sd_o - sd_m) < 4 * sd_m / np.sqrt(2 * obs.n_xmax) + 0.5)


def test_iron_showers_are_shallower_than_protons(model: ForwardModel) -> None:
    p = np.array([2.0, 19.5, 1.0, 0, 0, 0, 0])
    fe = np.array([2.0, 19.5, 0, 0, 0, 0, 1.0])
    mean = [np.nanmean(sample_showers(t, 1, model=model, n_spectrum=5000)[1]) for t in (p, fe)]
    assert mean[0] - mean[1] > 60.0  # ~100 g/cm^2 at 10^19 eV


def test_sampling_is_deterministic_and_sorted(model: ForwardModel, showers: tuple) -> None:
    again = sample_showers(COMBINED_FIT, 5, model=model)
    assert np.array_equal(showers[0], again[0])
    assert np.array_equal(showers[1], again[1], equal_nan=True)
    assert np.all(np.diff(showers[0]) >= 0)
    other = sample_showers(COMBINED_FIT, 6, model=model)
    assert showers[0].size != other[0].size or not np.array_equal(showers[0], other[0])


def test_round_trip_through_a_showers_file(shower_file: Path, showers: tuple) -> None:
    lg_e, xmax = read_showers(shower_file)
    assert np.array_equal(lg_e, showers[0])
    assert np.array_equal(xmax, showers[1], equal_nan=True)
    with uproot.open(shower_file) as f:
        assert f.classname_of(SHOWER_TREE) == "TTree"
        assert json.loads(str(f["metadata"]))["theta"] == COMBINED_FIT.tolist()
    obs = load_observation(shower_file)
    assert np.array_equal(obs.spectrum, Observation.from_showers(*showers).spectrum)


def test_generate_showers_records_parameters(tmp_path: Path) -> None:
    path = generate_showers(tmp_path / "s.root", theta=COMBINED_FIT, seed=3, n_spectrum=2000)
    lg_e, _ = read_showers(path)
    assert abs(lg_e.size - 2000) < 5 * np.sqrt(2000)
    with uproot.open(path) as f:
        meta = json.loads(str(f["metadata"]))
    assert meta["theta"]["f_He"] == pytest.approx(0.673)
    assert meta["seed"] == 3


def test_bad_inputs(tmp_path: Path, model: ForwardModel) -> None:
    with pytest.raises(InputError, match="lg_e has 2 entries but xmax has 1"):
        write_showers(tmp_path / "a.root", [19.0, 19.1], [700.0])
    with pytest.raises(InputError, match="finite"):
        write_showers(tmp_path / "a.root", [np.nan], [700.0])
    with pytest.raises(ConfigError, match="one parameter vector"):
        sample_showers(np.stack([COMBINED_FIT, COMBINED_FIT]), 1, model=model)
    with pytest.raises(ConfigError, match="n_xmax"):
        sample_showers(COMBINED_FIT, 1, model=model, n_xmax=[1, 2])
    with pytest.raises(InputError, match="does not exist"):
        load_observation(tmp_path / "nothing.root")
    (tmp_path / "text.root").write_text("not root")
    with pytest.raises(InputError, match="cannot read"):
        load_observation(tmp_path / "text.root")
