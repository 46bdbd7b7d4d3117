"""The W-mass-constraint neutrino pz: hand-computed cases, on-shell recovery, properties."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hepflow.neutrino.quadratic import (
    M_ELECTRON,
    M_MUON,
    M_TAU,
    M_W,
    lepton_mass,
    reconstruct_w_mass,
    solve_neutrino_pz,
    solve_neutrino_pz_rescaled_met,
)


def _abc(px, py, pz, e, metx, mety, m_w):
    """The textbook coefficients: (l + nu)^2 = m_W^2 with nu_T = MET, a quadratic a pz^2 + b pz + c = 0."""
    m2 = e**2 - px**2 - py**2 - pz**2
    alpha = m_w**2 - m2 + 2 * (px * metx + py * mety)
    return pz**2 - e**2, alpha * pz, alpha**2 / 4 - e**2 * (metx**2 + mety**2)


# --- hand-computed cases ------------------------------------------------------------------------


def test_hand_computed_real_roots():
    # massless lepton p = (40, 0, 30), E = 50; MET = (0, 48); m_W = 80
    # alpha = 80^2 - 0 + 2 (40*0 + 0*48) = 6400
    # a = 30^2 - 50^2 = -1600;  b = 6400 * 30 = 192000
    # c = 6400^2 / 4 - 50^2 * 48^2 = 10,240,000 - 5,760,000 = 4,480,000
    # b^2 - 4ac = 36,864,000,000 + 28,672,000,000 = 65,536,000,000 = 256000^2
    # pz = (-192000 -/+ 256000) / (-3200) = 140 or -20
    # check: nu (0, 48, -20) has E = 52, m^2 = 2 (50*52 - 30*(-20)) = 2 * 3200 = 6400;
    #        nu (0, 48, 140) has E = 148, m^2 = 2 (50*148 - 30*140) = 2 * 3200 = 6400
    sol = solve_neutrino_pz(40.0, 0.0, 30.0, 0.0, 48.0, lep_e=50.0, m_w=80.0)
    assert not sol.is_complex
    assert float(sol.pz_plus) == pytest.approx(140.0, rel=1e-12)
    assert float(sol.pz_minus) == pytest.approx(-20.0, rel=1e-12)
    assert float(sol.pz) == pytest.approx(-20.0, rel=1e-12)  # smaller |pz|
    assert float(sol.pz_alt) == pytest.approx(140.0, rel=1e-12)
    assert float(sol.pz_imag) == 0.0
    assert float(reconstruct_w_mass(40.0, 0.0, 30.0, 50.0, 0.0, 48.0, -20.0)) == pytest.approx(
        80.0, rel=1e-12
    )
    assert float(reconstruct_w_mass(40.0, 0.0, 30.0, 50.0, 0.0, 48.0, 140.0)) == pytest.approx(
        80.0, rel=1e-12
    )


def test_hand_computed_complex_roots_and_rescaling():
    # same lepton, MET = (-60, 0) back to back: alpha = 6400 + 2 (40 * -60) = 1600
    # a = -1600, b = 1600 * 30 = 48000, c = 1600^2 / 4 - 2500 * 3600 = 640,000 - 9,000,000
    # b^2 - 4ac = 2,304,000,000 + 6400 * (-8,360,000) = -51,200,000,000 < 0: complex
    # real part -b / 2a = 48000 / 3200 = 15; imaginary part sqrt(51.2e9) / 3200 = 50 sqrt(2)
    sol = solve_neutrino_pz(40.0, 0.0, 30.0, -60.0, 0.0, lep_e=50.0, m_w=80.0)
    assert sol.is_complex
    for value in (sol.pz, sol.pz_alt, sol.pz_plus, sol.pz_minus):
        assert float(value) == pytest.approx(15.0, rel=1e-12)
    assert float(sol.pz_imag) == pytest.approx(50 * np.sqrt(2), rel=1e-12)
    # rescaling MET by s: alpha(s) = 6400 - 4800 s, disc(s) ∝ (alpha(s)/2)^2 - mT^2 (60 s)^2
    #   = (3200 - 2400 s)^2 - (2400 s)^2 = 0  ->  3200 - 2400 s = 2400 s  ->  s = 2/3, MET = (-40, 0)
    # double root pz = -b / 2a = (1600 * 30) / 1600 = 30; nu (-40, 0, 30), E = 50:
    # m^2 = 2 (50 * 50 - (40 * -40 + 30 * 30)) = 2 * 3200 = 6400
    res = solve_neutrino_pz_rescaled_met(40.0, 0.0, 30.0, -60.0, 0.0, lep_e=50.0, m_w=80.0)
    assert res.is_complex
    assert float(res.scale) == pytest.approx(2 / 3, rel=1e-12)
    assert float(res.met_px) == pytest.approx(-40.0, rel=1e-12)
    assert float(res.met_py) == 0.0
    assert float(res.pz) == pytest.approx(30.0, rel=1e-12)


def test_real_events_keep_met_in_rescaled_variant():
    res = solve_neutrino_pz_rescaled_met(40.0, 0.0, 30.0, 0.0, 48.0, lep_e=50.0, m_w=80.0)
    assert not res.is_complex
    assert float(res.scale) == 1.0
    assert (float(res.met_px), float(res.met_py)) == (0.0, 48.0)
    assert float(res.pz) == pytest.approx(-20.0, rel=1e-12)


# --- physics: on-shell W, textbook formula -----------------------------------------------------


def _on_shell_w_decays(n, m_lep, rng):
    """Lepton and neutrino from W decays with m(l, nu) = m_W exactly: decay at rest, then boost."""
    p_star = (M_W**2 - m_lep**2) / (2 * M_W)
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    lep_rest, nu_rest = p_star * u, -p_star * u
    e_lep_rest, e_nu_rest = np.sqrt(p_star**2 + m_lep**2), np.full(n, p_star)
    w_p = rng.normal(scale=[60.0, 60.0, 300.0], size=(n, 3))
    w_e = np.sqrt(np.sum(w_p**2, axis=1) + M_W**2)

    def boost(p, e):
        pw = np.sum(p * w_p, axis=1)
        p_lab = p + w_p * (pw / (M_W * (w_e + M_W)) + e / M_W)[:, None]
        return p_lab, (w_e * e + pw) / M_W

    return boost(lep_rest, e_lep_rest), boost(nu_rest, e_nu_rest)


@pytest.mark.parametrize("m_lep", [M_ELECTRON, M_MUON])
def test_exact_recovery_for_on_shell_w(m_lep):
    rng = np.random.default_rng(7)
    (lep, e_lep), (nu, _) = _on_shell_w_decays(2000, m_lep, rng)
    np.testing.assert_allclose(reconstruct_w_mass(*lep.T, e_lep, *nu.T), M_W, rtol=1e-10)
    sol = solve_neutrino_pz(*lep.T, nu[:, 0], nu[:, 1], lep_e=e_lep)
    by_mass = solve_neutrino_pz(*lep.T, nu[:, 0], nu[:, 1], lep_mass=m_lep)
    # an exactly on-shell W always has real roots (up to rounding at the branch point)
    assert np.mean(sol.is_complex) < 0.01
    for s in (sol, by_mass):
        ok = ~s.is_complex
        err = np.minimum(np.abs(s.pz_plus - nu[:, 2]), np.abs(s.pz_minus - nu[:, 2]))
        assert np.all(err[ok] <= 1e-6 * np.maximum(np.abs(nu[ok, 2]), 1.0)), err[ok].max()
    # the smaller-|pz| choice is right for a good fraction of events, not all
    assert 0.4 < np.mean(np.isclose(sol.pz, nu[:, 2], rtol=1e-6, atol=1e-6)) < 0.95


def test_roots_match_textbook_formula():
    rng = np.random.default_rng(11)
    n = 5000
    p = rng.normal(scale=[40.0, 40.0, 150.0], size=(n, 3))
    e = np.sqrt(np.sum(p**2, axis=1) + M_MUON**2)
    met = rng.normal(scale=40.0, size=(n, 2))
    sol = solve_neutrino_pz(*p.T, *met.T, lep_e=e)
    a, b, c = _abc(*p.T, e, *met.T, M_W)
    disc = b**2 - 4 * a * c
    assert 0.05 < np.mean(sol.is_complex) < 0.95  # both branches exercised
    np.testing.assert_array_equal(sol.is_complex, disc < 0)
    real = disc >= 0
    sq = np.sqrt(np.where(real, disc, 0.0))
    r1, r2 = (-b - sq) / (2 * a), (-b + sq) / (2 * a)
    scale = np.abs(b / a) + np.sqrt(np.abs(c / a)) + 1.0
    np.testing.assert_allclose(sol.pz_plus[real], np.maximum(r1, r2)[real], atol=1e-9 * scale.max())
    np.testing.assert_allclose(sol.pz_minus[real], np.minimum(r1, r2)[real], atol=1e-9 * scale.max())
    chosen = np.where(np.abs(r1) <= np.abs(r2), r1, r2)
    np.testing.assert_allclose(sol.pz[real], chosen[real], atol=1e-9 * scale.max())
    # complex: the real part -b / 2a
    np.testing.assert_allclose(sol.pz[~real], (-b / (2 * a))[~real], rtol=1e-10)
    np.testing.assert_allclose(sol.pz_alt[~real], (-b / (2 * a))[~real], rtol=1e-10)
    np.testing.assert_allclose(
        sol.pz_imag[~real], (np.sqrt(np.maximum(-disc, 0.0)) / np.abs(2 * a))[~real], rtol=1e-8
    )

    res = solve_neutrino_pz_rescaled_met(*p.T, *met.T, lep_e=e)
    cx = sol.is_complex
    assert np.all(res.scale[cx] < 1.0)
    assert np.all(res.scale[cx] > 0.0)
    assert np.all(res.scale[~cx] == 1.0)
    a2, b2, c2 = _abc(*p.T, e, res.met_px, res.met_py, M_W)
    disc2 = b2**2 - 4 * a2 * c2
    # b^2 - 4ac = alpha^2 E^2 - 4 mT^2 E^2 MET^2: zero up to rounding of terms of size alpha^2 E^2
    alpha2 = M_W**2 - M_MUON**2 + 2 * (p[:, 0] * res.met_px + p[:, 1] * res.met_py)
    assert np.all(np.abs(disc2[cx]) <= 1e-9 * (alpha2**2 * e**2)[cx])
    np.testing.assert_allclose(res.pz[cx], (-b2 / (2 * a2))[cx], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reconstruct_w_mass(*p.T, e, res.met_px, res.met_py, res.pz), M_W, rtol=1e-6)


def test_linear_case_lepton_along_beam():
    # massless lepton along +z: a = 0, b pz + c = 0 with alpha = m_W^2 = 6400 (m_W = 80), pz_l = 30
    # pz = -c / b = -(6400^2/4 - 900 * 100) / (6400 * 30) = -(10,240,000 - 90,000) / 192,000
    sol = solve_neutrino_pz(0.0, 0.0, 30.0, 10.0, 0.0, lep_e=30.0, m_w=80.0)
    assert not sol.is_complex
    assert float(sol.pz) == pytest.approx(-10_150_000 / 192_000, rel=1e-12)
    assert float(sol.pz_alt) == float(sol.pz)
    assert float(reconstruct_w_mass(0.0, 0.0, 30.0, 30.0, 10.0, 0.0, sol.pz)) == pytest.approx(
        80.0, rel=1e-12
    )


def test_degenerate_inputs_give_no_nan():
    zeros = np.zeros(3)
    for sol in (
        solve_neutrino_pz(zeros, zeros, zeros, zeros, zeros, lep_mass=0.0),  # no lepton at all
        solve_neutrino_pz(zeros, zeros, zeros, zeros, zeros, lep_e=zeros),
        solve_neutrino_pz(zeros + 40, zeros, zeros, zeros, zeros, lep_mass=M_MUON),  # zero MET
        solve_neutrino_pz(zeros + 1e300, zeros, zeros - 1e300, zeros + 1e300, zeros, lep_mass=0.0),
    ):
        for value in (sol.pz, sol.pz_alt, sol.pz_plus, sol.pz_minus, sol.pz_imag):
            assert np.all(np.isfinite(value))
    # zero MET: nu along z with |pz| fixed by m^2 = 2 E_nu (E_l - +/-pz_l)
    sol = solve_neutrino_pz(40.0, 0.0, 0.0, 0.0, 0.0, lep_mass=0.0, m_w=80.0)
    assert float(sol.pz_plus) == pytest.approx(80.0)  # 6400 = 2 * 80 * 40
    assert float(sol.pz_minus) == pytest.approx(-80.0)
    # non-finite inputs give NaN, no warning
    sol = solve_neutrino_pz(np.array([np.inf, 40.0]), 0.0, 30.0, 0.0, 48.0, lep_mass=0.0, m_w=80.0)
    assert np.isnan(sol.pz[0])
    assert sol.pz[1] == pytest.approx(-20.0)


# --- hypothesis properties ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
moderate = st.floats(min_value=-2000.0, max_value=2000.0, allow_nan=False)
masses = st.sampled_from([0.0, M_ELECTRON, M_MUON])


@settings(max_examples=300, deadline=None)
@given(px=finite, py=finite, pz=finite, e=finite, mx=finite, my=finite, m=masses)
def test_no_nan_for_any_finite_input(px, py, pz, e, mx, my, m):
    for sol in (
        solve_neutrino_pz(px, py, pz, mx, my, lep_e=e),
        solve_neutrino_pz(px, py, pz, mx, my, lep_mass=m),
    ):
        for value in (sol.pz, sol.pz_alt, sol.pz_plus, sol.pz_minus, sol.pz_imag):
            assert np.isfinite(value)
    res = solve_neutrino_pz_rescaled_met(px, py, pz, mx, my, lep_e=e)
    for value in (res.pz, res.met_px, res.met_py, res.scale):
        assert np.isfinite(value)
    assert 0.0 <= res.scale <= 1.0
    assert np.isfinite(reconstruct_w_mass(px, py, pz, e, mx, my, pz))


@settings(max_examples=300, deadline=None)
@given(px=moderate, py=moderate, pz=moderate, mx=moderate, my=moderate, m=masses)
def test_real_roots_satisfy_the_mass_constraint(px, py, pz, mx, my, m):
    assume(px**2 + py**2 + pz**2 + m**2 > 1e-6)
    sol = solve_neutrino_pz(px, py, pz, mx, my, lep_mass=m)
    if not sol.is_complex:
        for root in (sol.pz_plus, sol.pz_minus, sol.pz):
            mass = reconstruct_w_mass(px, py, pz, None, mx, my, root, lep_mass=m)
            assert mass == pytest.approx(M_W, rel=1e-6)
        assert abs(sol.pz) <= abs(sol.pz_alt)
        assert sol.pz_minus <= sol.pz_plus
    else:
        assert sol.pz == sol.pz_alt
        assert sol.pz_imag > 0
    # after rescaling, every event satisfies the constraint
    res = solve_neutrino_pz_rescaled_met(px, py, pz, mx, my, lep_mass=m)
    assert res.scale <= 1.0
    mass = reconstruct_w_mass(px, py, pz, None, res.met_px, res.met_py, res.pz, lep_mass=m)
    assert mass == pytest.approx(M_W, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(px=moderate, py=moderate, pz=moderate, mx=moderate, my=moderate, m=masses)
def test_chosen_root_satisfies_the_mass_constraint_given_energy(px, py, pz, mx, my, m):
    # with E instead of m the lepton mass is only known to ~E ulp(E): the chosen (smaller |pz|)
    # root does not depend on it, the far-forward alternative root can (see reconstruct_w_mass)
    e = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    assume(e > 1e-3)
    sol = solve_neutrino_pz(px, py, pz, mx, my, lep_e=e)
    if not sol.is_complex:
        assert reconstruct_w_mass(px, py, pz, e, mx, my, sol.pz) == pytest.approx(M_W, rel=1e-6)


# --- awkward ------------------------------------------------------------------------------------


def test_awkward_optional_propagates_none():
    lep_px = ak.Array([40.0, None, 40.0])
    lep_e = ak.Array([50.0, 50.0, None])
    sol = solve_neutrino_pz(lep_px, 0.0, 30.0, np.array([0.0, 0.0, -60.0]), 48.0, lep_e=lep_e, m_w=80.0)
    assert sol.pz.tolist()[1:] == [None, None]
    assert sol.pz.tolist()[0] == pytest.approx(-20.0)
    assert sol.is_complex.tolist() == [False, None, None]
    res = solve_neutrino_pz_rescaled_met(
        lep_px, 0.0, 30.0, ak.Array([0.0, 0.0, -60.0]), 48.0, lep_e=lep_e, m_w=80.0
    )
    assert res.met_px.tolist()[1:] == [None, None]
    masked = ak.mask(ak.Array([40.0, 40.0]), [True, False])
    pz = solve_neutrino_pz(masked, 0.0, 30.0, 0.0, 48.0, lep_mass=0.0, m_w=80.0).pz.tolist()
    assert pz[0] == pytest.approx(-20.0)
    assert pz[1] is None


def test_awkward_jagged_matches_numpy():
    # events with 1, 0 and 2 leptons; MET per event, broadcast into the lepton lists
    events = ak.Array(
        [
            {"lep": [{"px": 40.0, "py": 0.0, "pz": 30.0, "pdg": 11}], "met_x": 0.0, "met_y": 48.0},
            {"lep": [], "met_x": 5.0, "met_y": 5.0},
            {
                "lep": [
                    {"px": 40.0, "py": 0.0, "pz": 30.0, "pdg": -13},
                    {"px": -20.0, "py": 35.0, "pz": -80.0, "pdg": 13},
                ],
                "met_x": -60.0,
                "met_y": 0.0,
            },
        ]
    )
    lep = events.lep
    mass = lepton_mass(lep.pdg)
    sol = solve_neutrino_pz(lep.px, lep.py, lep.pz, events.met_x, events.met_y, lep_mass=mass)
    assert ak.num(sol.pz).tolist() == [1, 0, 2]
    assert str(ak.type(sol.is_complex)) == "3 * var * bool"
    met_x, met_y = ak.broadcast_arrays(events.met_x, lep.px)[0], ak.broadcast_arrays(events.met_y, lep.px)[0]
    flat = solve_neutrino_pz(
        ak.to_numpy(ak.flatten(lep.px)),
        ak.to_numpy(ak.flatten(lep.py)),
        ak.to_numpy(ak.flatten(lep.pz)),
        ak.to_numpy(ak.flatten(met_x)),
        ak.to_numpy(ak.flatten(met_y)),
        lep_mass=ak.to_numpy(ak.flatten(mass)),
    )
    for field in ("pz", "pz_alt", "pz_plus", "pz_minus", "pz_imag", "is_complex"):
        np.testing.assert_array_equal(ak.to_numpy(ak.flatten(getattr(sol, field))), getattr(flat, field))
    m = reconstruct_w_mass(
        lep.px, lep.py, lep.pz, np.hypot(np.hypot(lep.px, lep.py), lep.pz), events.met_x, events.met_y, sol.pz
    )
    assert ak.num(m).tolist() == [1, 0, 2]


def test_awkward_events_without_lepton_are_none():
    lep_px = ak.Array([[40.0], [], [10.0]])
    first = ak.firsts(lep_px)  # None for the event without a lepton
    sol = solve_neutrino_pz(
        first, 0.0, 30.0, 0.0, 48.0, lep_mass=lepton_mass(ak.firsts(ak.Array([[11], [], [13]])))
    )
    assert sol.pz.tolist()[1] is None
    assert sol.pz.tolist()[0] is not None


# --- helpers and errors -------------------------------------------------------------------------


def test_lepton_mass():
    assert lepton_mass(11) == M_ELECTRON
    assert lepton_mass(-13) == M_MUON
    assert lepton_mass(np.int64(15)) == M_TAU
    assert lepton_mass("Muon") == M_MUON
    assert lepton_mass("e") == M_ELECTRON
    np.testing.assert_array_equal(lepton_mass(np.array([11, -11, 13])), [M_ELECTRON, M_ELECTRON, M_MUON])
    assert lepton_mass(ak.Array([[11, -13], [], None])).tolist() == [[M_ELECTRON, M_MUON], [], None]
    with pytest.raises(ValueError, match=r"unknown lepton pdgId\(s\) \[-22, 12\]"):
        lepton_mass(np.array([11, 12, -22]))
    with pytest.raises(ValueError, match="unknown lepton flavour 'photon'"):
        lepton_mass("photon")
    with pytest.raises(ValueError, match="integers"):
        lepton_mass(13.0)


def test_input_errors():
    with pytest.raises(ValueError, match="exactly one of lep_e"):
        solve_neutrino_pz(1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="exactly one of lep_e"):
        solve_neutrino_pz(1.0, 1.0, 1.0, 1.0, 1.0, lep_e=2.0, lep_mass=0.0)
    with pytest.raises(ValueError, match="m_w must be a positive"):
        solve_neutrino_pz(1.0, 1.0, 1.0, 1.0, 1.0, lep_mass=0.0, m_w=-80.0)
    with pytest.raises(ValueError, match=r"do not broadcast.*\(3,\).*\(2,\)"):
        solve_neutrino_pz(np.zeros(3), np.zeros(2), 1.0, 1.0, 1.0, lep_mass=0.0)
