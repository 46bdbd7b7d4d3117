"""Energy-scale and Xmax-scale nuisances: priors, published band, forward-model shifts."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import ForwardModel, Likelihood, Observation, Systematics
from hepflow.cosmic.systematics import load_xmax_systematics, split_params
from hepflow.errors import ConfigError

from .conftest import COMBINED_FIT

INTERIOR = np.array([1.2, 18.75, 0.15, 0.35, 0.3, 0.15, 0.05])
THETA = np.stack([COMBINED_FIT, INTERIOR, np.array([-1.5, 18.2, 0.6, 0.35, 0.04, 0.01, 0.0])])


@pytest.fixture(scope="module")
def shifted(auger: Observation) -> ForwardModel:
    return ForwardModel(auger, systematics=Systematics())


def _with(theta: np.ndarray, nu_e: float, nu_x: float) -> np.ndarray:
    return np.column_stack([theta, np.tile([nu_e, nu_x], (len(theta), 1))])


# ---------------------------------------------------------------------------- priors, band
def test_prior_is_a_truncated_standard_normal() -> None:
    syst = Systematics(nu_max=2.0)
    nu = syst.sample(40_000, rng=3)
    assert np.abs(nu).max() <= 2.0
    # truncated at 2: sd = sqrt(1 - 2 * 2 phi(2) / (2 Phi(2) - 1)) = 0.880
    np.testing.assert_allclose(nu.std(axis=0), 0.880, atol=0.01)
    np.testing.assert_allclose(
        syst.log_prob(np.array([[0.0, 0.0], [1.0, -1.0]])), [-np.log(2 * np.pi), -1 - np.log(2 * np.pi)]
    )
    assert syst.log_prob(np.array([[2.5, 0.0]]))[0] == -np.inf
    assert np.array_equal(syst.sample(5, rng=1), syst.sample(5, rng=1))


def test_published_xmax_band_is_read_per_energy_bin() -> None:
    edges, up, low = load_xmax_systematics()
    assert edges.size == 19
    assert up.size == low.size == 18
    assert (up[9], low[9]) == (7.427, 8.299)  # 10^18.7 .. 10^18.8 eV: +7.427 / -8.299 g/cm^2
    assert (up[17], low[17]) == (9.32, 6.762)  # 10^19.5 .. 10^20 eV
    s_up, s_low = Systematics().xmax_sigma(np.array([18.7, 18.9, 19.5, 20.0]))
    np.testing.assert_allclose(s_up, [(7.427 + 7.589) / 2, up[11:17].mean(), 9.32])
    np.testing.assert_allclose(s_low, [(8.299 + 7.957) / 2, low[11:17].mean(), 6.762])
    c_up, c_low = Systematics(xmax_scale=10.0).xmax_sigma(np.array([18.7, 18.8, 20.0]))
    assert c_up.tolist() == c_low.tolist() == [10.0, 10.0]
    with pytest.raises(ConfigError, match="not bins of the published table"):
        Systematics().xmax_sigma(np.array([18.75, 18.9]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"energy_scale": 0.0}, "energy_scale must be > 0"),
        ({"energy_scale": 0.3}, "energy_scale \\* nu_max < 0.9"),
        ({"xmax_scale": "auger2019"}, 'xmax_scale must be "auger2014"'),
        ({"xmax_scale": -5.0}, "xmax_scale must be in"),
        ({"nu_max": 0.5}, "nu_max must be between 1 and 10"),
    ],
)
def test_bad_sizes_are_refused(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Systematics(**options)


def test_parameter_widths_are_checked() -> None:
    p, nu = split_params(np.zeros(9), nuisances=True)
    assert p.shape == (1, 7)
    assert nu is not None
    assert nu.shape == (1, 2)
    assert split_params(np.zeros((2, 7)), nuisances=True)[1] is None
    with pytest.raises(ConfigError, match="nuisances need a forward model with systematics"):
        split_params(np.zeros((2, 9)), nuisances=False)


# ---------------------------------------------------------------------------- forward model
def test_zero_nuisances_reproduce_the_model_bit_for_bit(model: ForwardModel, shifted: ForwardModel) -> None:
    plain = model.expected(THETA)
    for params in (THETA, _with(THETA, 0.0, 0.0)):
        got = shifted.expected(params)
        assert np.array_equal(got["spectrum"], plain["spectrum"])
        assert np.array_equal(got["xmax"], plain["xmax"])
    # rows with zero nuisances stay bit-identical next to rows with nuisances
    mixed = np.concatenate([_with(THETA, 0.0, 0.0), _with(THETA, 1.0, -1.0)])
    spec, pdf = shifted.predict(mixed)
    assert np.array_equal(spec[:3], model.spectrum_shape(THETA))
    assert np.array_equal(pdf[:3], model.xmax_pdf(THETA))
    # the same seed draws the same pseudo-experiments
    a = model.simulate(THETA, rng=4)
    b = shifted.simulate(_with(THETA, 0.0, 0.0), rng=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_the_shifted_path_is_continuous_at_zero(model: ForwardModel, shifted: ForwardModel) -> None:
    spec, pdf = shifted._shifted(THETA, np.zeros((3, 2)))  # forced through the nuisance path
    np.testing.assert_allclose(spec, model.spectrum_shape(THETA), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pdf, model.xmax_pdf(THETA), rtol=0, atol=1e-12)
    spec, pdf = shifted.predict(_with(THETA, 1e-6, -1e-6))
    np.testing.assert_allclose(spec, model.spectrum_shape(THETA), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(pdf, model.xmax_pdf(THETA), rtol=0, atol=1e-6)


def _power_law_cells(model: ForwardModel, k: float, cut: float) -> np.ndarray:
    """Arriving numbers per extended cell of dN/dlgE = 10^(-k lgE) below ``cut`` (all in group 0)."""
    e = model._ext_edges
    lo, hi = e[:-1], np.minimum(e[1:], cut)
    cells = np.where(hi > lo, (10 ** (-k * lo) - 10 ** (-k * hi)) / (k * np.log(10)), 0.0)
    out = np.zeros((1, 5, cells.size))
    out[0, 0] = cells
    return out


@pytest.mark.parametrize("delta", [0.04, -0.06, 0.0513])
def test_energy_shift_moves_a_power_law_spectrum_analytically(
    shifted: ForwardModel, monkeypatch: pytest.MonkeyPatch, delta: float
) -> None:
    """dN/dlgE = 10^(-k lgE) cut at lg E = 19.5: reconstructed counts per bin are the integral over
    [e_lo - delta, e_hi - delta] below the cut, times the bin's exposure (then normalised)."""
    k, cut = 2.0, 19.5
    monkeypatch.setattr(shifted, "_arriving_extended", lambda p: _power_law_cells(shifted, k, cut))
    nu_e = (10**delta - 1.0) / shifted.systematics.energy_scale
    spec, _ = shifted._shifted(THETA[:1], np.array([[nu_e, 0.0]]))
    e = shifted.binning.spectrum_edges
    lo, hi = e[:-1] - delta, np.minimum(e[1:] - delta, cut)
    expected = np.where(hi > lo, 10 ** (-k * lo) - 10 ** (-k * hi), 0.0) * shifted._exposure
    expected /= expected.sum()
    # a shift by whole 0.02 cells is exact; otherwise a cell cut by a bin edge is split uniformly
    # (k = 2: up to 0.4 % in the bin the moved cut-off leaves mostly empty)
    tol = 1e-12 if abs(delta / 0.02 - round(delta / 0.02)) < 1e-9 else 5e-3
    np.testing.assert_allclose(spec[0], expected, rtol=tol, atol=1e-15)
    first_empty = int(np.searchsorted(e, cut + delta, side="right"))  # bins above the moved cut
    assert np.all(spec[0, first_empty:] == 0)
    assert spec[0, first_empty - 1] > 0


def test_energy_scale_moves_the_real_spectrum(model: ForwardModel, shifted: ForwardModel) -> None:
    """nu_E < 0 by two whole cells (lg E shift -0.04): each reconstructed bin [a, b] holds the
    arriving numbers of the true interval [a + 0.04, b + 0.04], counted here with the plain model."""
    delta = -0.04
    nu_e = (10**delta - 1.0) / shifted.systematics.energy_scale
    spec, _ = shifted.predict(_with(THETA, nu_e, 0.0))
    per_cell = model.arriving(THETA).sum(axis=1)  # (3, cells above lg_e_min)
    e = model.binning.spectrum_edges
    k = np.searchsorted(e - delta, model.lg_e_centers) - 1  # reconstructed bin of each true cell
    inside = (k >= 0) & (k < e.size - 1)
    mu = np.stack([np.bincount(k[inside], weights=row[inside], minlength=e.size - 1) for row in per_cell])
    mu *= shifted._exposure
    np.testing.assert_allclose(spec, mu / mu.sum(axis=1, keepdims=True), rtol=1e-9, atol=1e-15)
    assert np.abs(spec - model.spectrum_shape(THETA)).max() > 1e-3  # and it did move


@pytest.mark.parametrize("nu_x", [1.0, -1.0, 2.5])
def test_xmax_shift_moves_the_mean_by_the_published_band(shifted: ForwardModel, nu_x: float) -> None:
    x = shifted.binning.xmax_edges
    c = 0.5 * (x[1:] + x[:-1])
    nominal = shifted.xmax_pdf(THETA) @ c
    moved = shifted.predict(_with(THETA, 0.0, nu_x))[1] @ c
    up, low = Systematics().xmax_sigma(shifted.binning.xmax_energy_edges)
    expected = nu_x * (low if nu_x > 0 else up)  # bias b: up to |sigmaLow| deeper, sigmaUp shallower
    np.testing.assert_allclose(moved - nominal, np.broadcast_to(expected, moved.shape), atol=0.02)
    # the width does not change
    sd = lambda pdf, m: np.sqrt(pdf @ c**2 - m**2)  # noqa: E731
    np.testing.assert_allclose(
        sd(shifted.predict(_with(THETA, 0.0, nu_x))[1], moved),
        sd(shifted.xmax_pdf(THETA), nominal),
        atol=0.05,
    )


def test_out_of_range_nuisances_and_tables(
    auger: Observation, shifted: ForwardModel, model: ForwardModel
) -> None:
    with pytest.raises(ConfigError, match=r"\|nu\| <= 4"):
        shifted.predict(_with(THETA, 5.0, 0.0))
    with pytest.raises(ConfigError, match="nuisances need a forward model with systematics"):
        model.predict(_with(THETA, 0.0, 0.0))
    like = Likelihood(auger, model=shifted)
    ll = like(np.concatenate([_with(THETA[:1], 0.0, 0.0), _with(THETA[:1], 0.0, 4.5)]))
    assert np.isfinite(ll[0])
    assert ll[1] == -np.inf
    assert ll[0] == Likelihood(auger, model=model)(THETA[:1])[0]
    with pytest.raises(ConfigError, match="tables down to lg E"):
        ForwardModel(Observation.from_auger(lg_e_min=18.5), systematics=Systematics())
