"""Neutrino pz from the W-mass constraint: the quadratic baseline.

With the neutrino massless, its transverse momentum set to the missing transverse momentum
(MET) and the lepton-neutrino invariant mass set to m_W, the neutrino pz solves

    a pz^2 + b pz + c = 0,
    alpha = m_W^2 - m_l^2 + 2 (px_l MET_x + py_l MET_y) = 2 mu,
    a = pz_l^2 - E_l^2 = -mT_l^2,  b = alpha pz_l,  c = alpha^2 / 4 - E_l^2 MET^2,

with mT_l^2 = pT_l^2 + m_l^2 and discriminant b^2 - 4 a c = 4 E_l^2 (mu^2 - mT_l^2 MET^2). The roots
are therefore

    pz = (mu pz_l +/- E_l sqrt(mu^2 - mT_l^2 MET^2)) / mT_l^2,

which is what is evaluated, in the cancellation-free form: the root of larger magnitude is
q / mT_l^2 with q = mu pz_l + sign(pz_l) E_l sqrt(...), the other c / (a x) = (E_l^2 MET^2 - mu^2) / q.

Conventions (reference: CMS TopQuarkAnalysis MEzCalculator, ATLAS TtresNeutrinoBuilder):

* ``pz_plus`` / ``pz_minus``: the roots with + / - in front of the square root (``pz_plus >=
  pz_minus``); for complex roots both are the real part -b / (2a) = mu pz_l / mT_l^2.
* ``pz``: the chosen solution, the root of smaller |pz| when real, the real part when complex;
  ``pz_alt``: the other root when real, the same real part when complex.
* ``is_complex``: no real pz gives m(l, nu) = m_W, i.e. the transverse mass of the lepton-MET
  system exceeds m_W (negative discriminant). The squared equation's roots are physical only if
  mu + pz_l pz >= 0; that holds whenever the discriminant is >= 0 and m_l < m_W, and an event
  with mu < 0 (only possible for m_l > m_W) is flagged complex as well.
* :func:`solve_neutrino_pz_rescaled_met`: for complex events MET is scaled down along its
  direction to the largest scale s in (0, 1] at which a real solution exists (zero
  discriminant), the ATLAS alternative to taking the real part.

Numerics: every event is divided by its largest momentum component (or m_W) before squaring, so
no intermediate overflows for finite inputs and the result is scale covariant. The discriminant is
evaluated as mu^2 - mT_l^2 MET^2 = (mu0 - g)(mu0 + h), mu0 = (m_W^2 - m_l^2) / 2,
g, h = mT_l MET -/+ pT_l . MET computed without cancellation from g h = (pT_l x MET)^2 + m_l^2 MET^2,
so that it stays accurate for hard, collinear lepton and MET (where mu^2 and mT_l^2 MET^2 are huge
and nearly equal). Results beyond the float range saturate (stay finite) instead of overflowing. A lepton with
mT_l^2 <= 1e-20 E_l^2 (massless and along the beam) makes the equation linear, and its single
root -c / b is returned as both roots. No input of finite values gives NaN or a numpy warning;
non-finite inputs give NaN (and ``is_complex`` False) without warnings.

Inputs are numpy arrays (or scalars) or awkward arrays of any structure (jagged, optional);
awkward inputs are broadcast against each other and the result keeps their structure, with None
wherever an input is None. Energies and momenta in GeV.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

__all__ = [
    "M_ELECTRON",
    "M_MUON",
    "M_TAU",
    "M_W",
    "NeutrinoPzSolution",
    "RescaledMETSolution",
    "lepton_mass",
    "reconstruct_w_mass",
    "solve_neutrino_pz",
    "solve_neutrino_pz_rescaled_met",
]

#: W boson mass in GeV (PDG 2018 value used by many analyses).
M_W = 80.379
#: Lepton masses in GeV.
M_ELECTRON = 0.000511
M_MUON = 0.10566
M_TAU = 1.77686

_MASS_BY_PDGID = {11: M_ELECTRON, 13: M_MUON, 15: M_TAU}
_MASS_BY_NAME = {
    "e": M_ELECTRON,
    "el": M_ELECTRON,
    "ele": M_ELECTRON,
    "electron": M_ELECTRON,
    "mu": M_MUON,
    "muon": M_MUON,
    "tau": M_TAU,
}
_LINEAR = 1e-20  # mT_l^2 / E_l^2 below which the equation is treated as linear
_FMAX = float(np.finfo(np.float64).max)

Kernel = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class NeutrinoPzSolution:
    """Neutrino pz solutions of the W-mass constraint (arrays shaped like the inputs).

    Attributes:
        pz: chosen solution (smaller |pz| of real roots; real part of complex roots).
        pz_alt: the other real root; the real part again when complex.
        pz_plus: root with + sqrt (the larger); the real part when complex.
        pz_minus: root with - sqrt (the smaller); the real part when complex.
        pz_imag: imaginary part E_l sqrt(mT_l^2 MET^2 - mu^2) / mT_l^2 of complex roots, 0 when real.
        is_complex: True where no real solution exists.
    """

    pz: Any
    pz_alt: Any
    pz_plus: Any
    pz_minus: Any
    pz_imag: Any
    is_complex: Any


@dataclass(frozen=True)
class RescaledMETSolution:
    """Neutrino pz with MET rescaled where the constraint has no real solution.

    Attributes:
        pz: chosen real root (smaller |pz|) for real events; for complex events the (double)
            root at the rescaled MET.
        met_px, met_py: MET after rescaling (unchanged for real events).
        scale: the MET scale factor, 1 for real events and in (0, 1) for complex ones.
        is_complex: True where the original MET gave complex roots.
    """

    pz: Any
    met_px: Any
    met_py: Any
    scale: Any
    is_complex: Any


def _is_awkward(x: Any) -> bool:
    return isinstance(x, ak.Array | ak.Record)


def _check_m_w(m_w: float) -> float:
    try:
        value = float(m_w)
    except (TypeError, ValueError) as err:
        raise ValueError(f"m_w must be a positive number in GeV, got {m_w!r}") from err
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"m_w must be a positive finite number in GeV, got {m_w!r}")
    return value


def _guarded(kernel: Kernel, values: list[np.ndarray], constants: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Kernel on finite entries only: non-finite inputs give NaN (False for flags), silently."""
    finite = np.ones(np.shape(values[0]), dtype=bool)
    for v in values:
        finite &= np.isfinite(v)
    if finite.all():
        return kernel(*values, **constants)
    out = kernel(*[np.where(finite, v, 0.0) for v in values], **constants)
    return {k: np.where(finite, v, False if v.dtype == bool else np.nan) for k, v in out.items()}


def _vectorize(kernel: Kernel, arrays: Mapping[str, Any], **constants: Any) -> dict[str, Any]:
    """Run a numpy kernel on broadcast inputs; awkward inputs keep their structure and None."""
    names = list(arrays)
    values = list(arrays.values())
    if not any(_is_awkward(v) for v in values):
        try:
            flat = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64) for v in values])
        except ValueError as err:
            shapes = {k: np.shape(v) for k, v in arrays.items()}
            raise ValueError(f"input shapes do not broadcast: {shapes}") from err
        return _guarded(kernel, flat, constants)
    # awkward: ak.transform does not take scalars; give them the structure of an awkward input
    template = next(v for v in values if _is_awkward(v))
    values = [
        v if _is_awkward(v) or np.ndim(v) > 0 else ak.zeros_like(template, dtype=np.float64) + float(v)
        for v in values
    ]
    fields = list(_guarded(kernel, [np.zeros(0)] * len(values), constants))

    def leaf(layouts: Any, **_: Any) -> Any:
        layouts = [
            lay.to_NumpyArray(np.float64) if isinstance(lay, ak.contents.EmptyArray) else lay
            for lay in layouts
        ]
        if all(isinstance(lay, ak.contents.NumpyArray) for lay in layouts):
            out = _guarded(kernel, [np.asarray(lay.data, dtype=np.float64) for lay in layouts], constants)
            return ak.contents.RecordArray([ak.contents.NumpyArray(out[f]) for f in fields], fields)
        return None

    try:
        record = ak.transform(leaf, *values)
    except ValueError as err:
        types = {
            k: str(ak.type(v)) if _is_awkward(v) else str(np.shape(v))
            for k, v in zip(names, values, strict=True)
        }
        raise ValueError(f"inputs do not broadcast: {types}") from err
    return {f: record[f] for f in fields}


def _normalise(*xs: np.ndarray, m_w: float) -> tuple[np.ndarray, list[np.ndarray], float | np.ndarray]:
    scale = np.full(np.shape(xs[0]), m_w)
    for x in xs:
        scale = np.maximum(scale, np.abs(x))
    return scale, [x / scale for x in xs], m_w / scale


def _restore(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x * scale, clipped so that finite inputs never overflow to inf (scale >= m_w > 0)."""
    lim = np.where(scale >= 1.0, 0.5 * _FMAX / np.maximum(scale, 1.0), _FMAX)
    return np.clip(x, -lim, lim) * scale


def _div(num: np.ndarray, den: np.ndarray, *, limit: float = 1e300) -> np.ndarray:
    """num / den without overflow or division-by-zero warnings: saturates at +-limit (0 / 0 = 0)."""
    fits = np.abs(den) > np.abs(num) / limit
    q = num / np.where(fits, den, 1.0)
    sat = np.where(num == 0, 0.0, limit * np.sign(num) * np.where(den < 0, -1.0, 1.0))
    return np.where(fits, q, sat)


def _quadratic_parts(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    e_or_m: np.ndarray,
    metx: np.ndarray,
    mety: np.ndarray,
    *,
    m_w: float,
    given: str,
) -> dict[str, np.ndarray]:
    """All intermediate quantities, in units of the per-event scale (see module docstring)."""
    scale, (px, py, pz, em, metx, mety), mw = _normalise(px, py, pz, e_or_m, metx, mety, m_w=m_w)
    pt2 = px * px + py * py
    m2 = em * em if given == "mass" else np.maximum(em * em - pt2 - pz * pz, 0.0)
    mt2 = pt2 + m2
    e2 = mt2 + pz * pz
    e = np.sqrt(e2)
    met2 = metx * metx + mety * mety
    dot = px * metx + py * mety
    mu0 = 0.5 * (mw * mw - m2)
    mu = mu0 + dot
    # disc = mu^2 - mT^2 MET^2 = (mu0 - g)(mu0 + h) with g = mT MET - dot >= 0, h = mT MET + dot >= 0,
    # both free of cancellation via g h = mT^2 MET^2 - dot^2 = (pT x MET)^2 + m^2 MET^2
    mt = np.sqrt(mt2)
    met = np.sqrt(met2)
    tm = mt * met
    cross = px * mety - py * metx
    perp = cross * cross + m2 * met2
    g = np.where(dot > 0, perp / np.where(dot > 0, tm + dot, 1.0), tm - dot)
    h = np.where(dot < 0, perp / np.where(dot < 0, tm - dot, 1.0), tm + dot)
    disc = (mu0 - g) * (mu0 + h)  # (b^2 - 4ac) / (4 E^2)
    linear = mt2 <= _LINEAR * e2
    sqrt_disc = np.sqrt(np.maximum(disc, 0.0))
    sign = np.where(pz >= 0, 1.0, -1.0)
    q = mu * pz + sign * e * sqrt_disc
    # a physical solution needs mu >= mT MET, i.e. mu0 >= g (which implies disc >= 0 and mu >= 0)
    real = (mu0 >= g) & ~(linear & (q == 0))
    use_q = real & (q != 0)
    mt2_safe = np.where(linear, 1.0, mt2)
    small = np.where(use_q, _div(pz * pz * met2 - disc, q), 0.0)  # c / (a * big)
    big = np.where(linear, small, _div(q, mt2_safe))
    # |small| <= |big| up to rounding (exactly equal magnitudes when pz_l = 0): order explicitly
    small, big = (
        np.where(np.abs(small) <= np.abs(big), small, big),
        np.where(np.abs(small) <= np.abs(big), big, small),
    )
    centre = np.where(linear, 0.0, _div(mu * pz, mt2_safe))
    return {
        "scale": scale,
        "mt2_safe": mt2_safe,
        "mt": mt,
        "met": met,
        "metx": metx,
        "mety": mety,
        "g": g,
        "e": e,
        "pz": pz,
        "mu0": mu0,
        "disc": disc,
        "real": real,
        "small": small,
        "big": big,
        "centre": centre,
    }


def _solve_kernel(px, py, pz, em, metx, mety, *, m_w: float, given: str) -> dict[str, np.ndarray]:
    p = _quadratic_parts(px, py, pz, em, metx, mety, m_w=m_w, given=given)
    real, s = p["real"], p["scale"]
    plus = np.maximum(p["small"], p["big"])
    minus = np.minimum(p["small"], p["big"])
    imag = np.where(real, 0.0, _div(p["e"] * np.sqrt(np.maximum(-p["disc"], 0.0)), p["mt2_safe"]))
    return {
        "pz": _restore(np.where(real, p["small"], p["centre"]), s),
        "pz_alt": _restore(np.where(real, p["big"], p["centre"]), s),
        "pz_plus": _restore(np.where(real, plus, p["centre"]), s),
        "pz_minus": _restore(np.where(real, minus, p["centre"]), s),
        "pz_imag": _restore(imag, s),
        "is_complex": ~real,
    }


def _rescaled_kernel(px, py, pz, em, metx, mety, *, m_w: float, given: str) -> dict[str, np.ndarray]:
    p = _quadratic_parts(px, py, pz, em, metx, mety, m_w=m_w, given=given)
    real, s = p["real"], p["scale"]
    # disc(s) = (mu0 + s dot)^2 - mT^2 s^2 MET^2 has its positive zero at s* = mu0 / (mT MET - dot)
    # = mu0 / g; a complex event has g > mu0, so s* < 1 (and s* > 0 when m_l < m_W).
    g, mu0 = p["g"], p["mu0"]
    ok = ~real & (g > mu0) & (mu0 > 0)
    k = np.where(ok, mu0 / np.where(ok, g, 1.0), 0.0)
    scale = np.where(real, 1.0, k)
    # at the double root pz = mu(s*) pz_l / mT^2 = s* MET pz_l / mT (mu(s*) = s* mT MET)
    pz_complex = _div(k * p["met"] * p["pz"], p["mt"])
    return {
        "pz": _restore(np.where(real, p["small"], pz_complex), s),
        "met_px": _restore(p["metx"] * scale, s),
        "met_py": _restore(p["mety"] * scale, s),
        "scale": scale,
        "is_complex": ~real,
    }


def _lepton_inputs(lep_e: Any, lep_mass: Any) -> tuple[Any, str]:
    if (lep_e is None) == (lep_mass is None):
        raise ValueError("give exactly one of lep_e (lepton energy) and lep_mass (lepton mass), in GeV")
    return (lep_e, "e") if lep_e is not None else (lep_mass, "mass")


def _solve(
    kernel: Kernel,
    lep_px: Any,
    lep_py: Any,
    lep_pz: Any,
    met_px: Any,
    met_py: Any,
    *,
    lep_e: Any,
    lep_mass: Any,
    m_w: float,
) -> dict[str, Any]:
    """The checked inputs of a W-mass-constraint solver through ``kernel``, vectorized."""
    mw = _check_m_w(m_w)
    em, given = _lepton_inputs(lep_e, lep_mass)
    arrays = {
        "lep_px": lep_px,
        "lep_py": lep_py,
        "lep_pz": lep_pz,
        "lep_e_or_mass": em,
        "met_px": met_px,
        "met_py": met_py,
    }
    return _vectorize(kernel, arrays, m_w=mw, given=given)


def solve_neutrino_pz(
    lep_px: Any,
    lep_py: Any,
    lep_pz: Any,
    met_px: Any,
    met_py: Any,
    *,
    lep_e: Any = None,
    lep_mass: Any = None,
    m_w: float = M_W,
) -> NeutrinoPzSolution:
    """Neutrino pz from the W-mass constraint, both roots and the conventional choice.

    Args:
        lep_px, lep_py, lep_pz: lepton momentum (GeV); numpy or awkward arrays, or scalars.
        met_px, met_py: missing transverse momentum, taken as the neutrino pT.
        lep_e: lepton energy; the lepton mass enters as max(E^2 - |p|^2, 0).
        lep_mass: lepton mass instead of ``lep_e`` (scalar or array, e.g. from
            :func:`lepton_mass`). Exactly one of ``lep_e`` and ``lep_mass`` is required.
        m_w: W mass constraint in GeV.

    Returns:
        :class:`NeutrinoPzSolution`, fields shaped like the (broadcast) inputs.

    Example:
        >>> sol = solve_neutrino_pz(40.0, 0.0, 30.0, 0.0, 48.0, lep_mass=0.0, m_w=80.0)
        >>> round(float(sol.pz), 9), round(float(sol.pz_alt), 9), bool(sol.is_complex)
        (-20.0, 140.0, False)
    """
    out = _solve(
        _solve_kernel, lep_px, lep_py, lep_pz, met_px, met_py, lep_e=lep_e, lep_mass=lep_mass, m_w=m_w
    )
    return NeutrinoPzSolution(**out)


def solve_neutrino_pz_rescaled_met(
    lep_px: Any,
    lep_py: Any,
    lep_pz: Any,
    met_px: Any,
    met_py: Any,
    *,
    lep_e: Any = None,
    lep_mass: Any = None,
    m_w: float = M_W,
) -> RescaledMETSolution:
    """Neutrino pz, scaling MET down (along its direction) where no real solution exists.

    The discriminant as a function of a MET scale s, disc(s) ∝ (mu0 + s k)^2 - mT_l^2 s^2 MET^2 with
    mu0 = (m_W^2 - m_l^2) / 2 and k = pT_l . MET, vanishes at s* = mu0 / (mT_l MET - k), solved
    analytically: the largest MET along the measured direction compatible with m(l, nu) = m_W.
    There the two roots coincide at pz = s* MET pz_l / mT_l. Events with real roots keep their
    MET (scale 1) and the smaller-|pz| root.

    Args:
        lep_px, lep_py, lep_pz, met_px, met_py, lep_e, lep_mass, m_w: as :func:`solve_neutrino_pz`.

    Returns:
        :class:`RescaledMETSolution` with ``pz``, the rescaled ``met_px``, ``met_py``, the
        ``scale`` and the original ``is_complex``.

    Example:
        >>> sol = solve_neutrino_pz_rescaled_met(40.0, 0.0, 30.0, -60.0, 0.0, lep_mass=0.0, m_w=80.0)
        >>> float(sol.pz), float(sol.met_px), round(float(sol.scale), 6)
        (30.0, -40.0, 0.666667)
    """
    out = _solve(
        _rescaled_kernel, lep_px, lep_py, lep_pz, met_px, met_py, lep_e=lep_e, lep_mass=lep_mass, m_w=m_w
    )
    return RescaledMETSolution(**out)


def _mass_kernel(lpx, lpy, lpz, lem, npx, npy, npz, *, given: str) -> dict[str, np.ndarray]:
    scale = np.ones(np.shape(lpx))
    for x in (lpx, lpy, lpz, lem, npx, npy, npz):
        scale = np.maximum(scale, np.abs(x))
    lpx, lpy, lpz, lem, npx, npy, npz = (x / scale for x in (lpx, lpy, lpz, lem, npx, npy, npz))
    pl = np.sqrt(lpx * lpx + lpy * lpy + lpz * lpz)
    pn = np.sqrt(npx * npx + npy * npy + npz * npz)
    m2_l = lem * lem if given == "mass" else np.maximum((lem - pl) * (lem + pl), 0.0)
    el = np.sqrt(pl * pl + m2_l)
    dot = lpx * npx + lpy * npy + lpz * npz
    # m^2 = m_l^2 + 2 (E_l E_nu - p_l . p_nu), with E_l E_nu - |p_l||p_nu| = E_nu m_l^2 / (E_l + |p_l|)
    # and |p_l||p_nu| - p_l . p_nu = |p_l x p_nu|^2 / (|p_l||p_nu| + p_l . p_nu) (no cancellation)
    cx = lpy * npz - lpz * npy
    cy = lpz * npx - lpx * npz
    cz = lpx * npy - lpy * npx
    cross2 = cx * cx + cy * cy + cz * cz
    pp = pl * pn
    denom = pp + dot
    angular = np.where(dot > 0, cross2 / np.where(denom > 0, denom, 1.0), pp - dot)
    el_safe = np.where(el + pl > 0, el + pl, 1.0)
    m2 = m2_l + 2.0 * (pn * m2_l / el_safe + angular)
    return {"mass": _restore(np.sqrt(np.maximum(m2, 0.0)), scale)}


def reconstruct_w_mass(
    lep_px: Any,
    lep_py: Any,
    lep_pz: Any,
    lep_e: Any,
    nu_px: Any,
    nu_py: Any,
    nu_pz: Any,
    *,
    lep_mass: Any = None,
) -> Any:
    """Invariant mass of lepton + massless neutrino (GeV), numpy or awkward, vectorized.

    The lepton mass is taken as max(E^2 - |p|^2, 0), or from ``lep_mass`` when given (then
    ``lep_e`` may be None). The products are arranged to avoid the cancellation of
    (E_l + E_nu)^2 - |p_l + p_nu|^2 for boosted, nearly collinear pairs. Note that for a light lepton
    the mass implied by a rounded energy is uncertain by about E ulp(E); give ``lep_mass`` when
    the neutrino is far forward in the lepton's direction, where m(l, nu) is dominated by
    m_l^2 E_nu / E_l.

    Example:
        >>> round(float(reconstruct_w_mass(40.0, 0.0, 30.0, 50.0, 0.0, 48.0, -20.0)), 9)
        80.0
    """
    if lep_mass is not None:
        em, given = lep_mass, "mass"
    elif lep_e is not None:
        em, given = lep_e, "e"
    else:
        raise ValueError("give the lepton energy lep_e or its mass lep_mass, in GeV")
    out = _vectorize(
        _mass_kernel,
        {
            "lep_px": lep_px,
            "lep_py": lep_py,
            "lep_pz": lep_pz,
            "lep_e_or_mass": em,
            "nu_px": nu_px,
            "nu_py": nu_py,
            "nu_pz": nu_pz,
        },
        given=given,
    )
    return out["mass"]


def _mass_of_ids(ids: np.ndarray) -> np.ndarray:
    a = np.abs(ids)
    known = np.isin(a, list(_MASS_BY_PDGID))
    if not np.all(known):
        bad = sorted({int(v) for v in np.asarray(ids)[~known]})
        raise ValueError(f"unknown lepton pdgId(s) {bad[:10]}: expected +-11 (e), +-13 (mu) or +-15 (tau)")
    out = np.zeros(np.shape(a), dtype=np.float64)
    for pdg, m in _MASS_BY_PDGID.items():
        out[a == pdg] = m
    return out


def lepton_mass(pdgid_or_flavour: Any) -> Any:
    """Charged-lepton mass in GeV from a PDG id (+-11, +-13, +-15) or a flavour name.

    Accepts an int, a string (``"e"``, ``"electron"``, ``"mu"``, ``"muon"``, ``"tau"``), or a
    numpy / awkward array of PDG ids (the result keeps the array's structure and None).

    Example:
        >>> lepton_mass(13), lepton_mass("e"), lepton_mass([11, -13]).tolist()
        (0.10566, 0.000511, [0.000511, 0.10566])
    """
    x = pdgid_or_flavour
    if isinstance(x, str):
        key = x.strip().lower()
        if key not in _MASS_BY_NAME:
            raise ValueError(f"unknown lepton flavour {x!r}: expected one of {sorted(_MASS_BY_NAME)}")
        return _MASS_BY_NAME[key]
    if _is_awkward(x):
        valid = np.asarray(ak.to_numpy(ak.flatten(x, axis=None)))
        if not np.issubdtype(valid.dtype, np.integer):
            raise ValueError(f"lepton pdgIds must be integers, got {ak.type(x)}")
        _mass_of_ids(valid)  # raises on unknown ids
        a = abs(x)
        return (a == 11) * M_ELECTRON + (a == 13) * M_MUON + (a == 15) * M_TAU
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"lepton pdgIds must be integers or flavour names, got {x!r}")
    out = _mass_of_ids(arr)
    return float(out) if out.ndim == 0 else out
