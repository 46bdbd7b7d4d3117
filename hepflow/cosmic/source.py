"""Injection spectrum at the sources (Auger combined-fit form, JCAP 04 (2017) 038).

Five species represent the injected composition: H, He, N, Si, Fe. Each is injected with a power
law in energy and a rigidity-dependent suppression above ``Z_A R_cut``::

    J_A(E) = f_A J0 (E / E0)^-gamma                          E <= Z_A R_cut
    J_A(E) = f_A J0 (E / E0)^-gamma exp(1 - E / (Z_A R_cut))  E >  Z_A R_cut

so ``f_A`` are the species fractions of the un-suppressed power law, i.e. of the injected
differential flux at a fixed energy below all cut-offs (any E0: the factor E0^gamma is common to
all species). ``J0`` is free and profiled (see :mod:`hepflow.cosmic.likelihood`). The injection
stops at 10^21 eV, the top of the CRPropa tables, which is part of the model definition.

A parameter vector is ``(gamma, lg(R_cut/V), f_H, f_He, f_N, f_Si, f_Fe)``, the fractions on the
simplex; functions take a batch of shape ``(n, 7)`` (a single ``(7,)`` vector is promoted).

Example:
    >>> theta = np.array([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0])
    >>> injected_flux(np.array([19.0, 20.0]), theta).shape  # (batch, species, energies)
    (1, 5, 2)
"""

from __future__ import annotations

import numpy as np

from hepflow.errors import ConfigError

__all__ = [
    "CHARGES",
    "MASSES",
    "PARAMETER_NAMES",
    "SPECIES",
    "as_params",
    "cutoff",
    "injected_flux",
    "injection_weights",
    "valid_params",
]

#: Injected species and their charge and mass numbers.
SPECIES: tuple[str, ...] = ("H", "He", "N", "Si", "Fe")
CHARGES = np.array([1, 2, 7, 14, 26])
MASSES = np.array([1, 4, 14, 28, 56])
#: Names of the 7 model parameters, in order.
PARAMETER_NAMES: tuple[str, ...] = ("gamma", "lg_rcut", "f_H", "f_He", "f_N", "f_Si", "f_Fe")

_FRACTION_TOLERANCE = 1e-6
_LG_E0 = 19.0  # reference energy of the relative normalisation (cancels everywhere)
_LN10 = np.log(10.0)
_EXP_MAX = 700.0  # exp(700) ~ 1e304: no overflow warnings for extreme parameters


def valid_params(params: np.ndarray) -> np.ndarray:
    """Boolean mask (n,) of the rows with finite values and fractions on the simplex.

    Fractions must be >= 0 and sum to 1 within 1e-6.
    """
    p = np.asarray(params, dtype=float)
    fractions = p[..., 2:]
    return (
        np.all(np.isfinite(p), axis=-1)
        & np.all(fractions >= 0.0, axis=-1)
        & (np.abs(fractions.sum(axis=-1) - 1.0) <= _FRACTION_TOLERANCE)
    )


def as_params(params: np.ndarray, *, check: bool = True) -> np.ndarray:
    """Validate a parameter batch and return it as a float array of shape (n, 7).

    Raises :class:`~hepflow.errors.ConfigError` naming the first offending row.

    Example:
        >>> as_params([2.0, 19.0, 1, 0, 0, 0, 0]).shape
        (1, 7)
    """
    p = np.asarray(params, dtype=float)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != len(PARAMETER_NAMES):
        raise ConfigError(
            f"cosmic-ray parameters must have shape (n, {len(PARAMETER_NAMES)}) "
            f"({', '.join(PARAMETER_NAMES)}), got {np.shape(params)}"
        )
    if check:
        bad = np.flatnonzero(~valid_params(p))
        if bad.size:
            row = p[bad[0]]
            raise ConfigError(
                f"cosmic-ray parameters row {bad[0]} = {np.array2string(row, precision=4)} is invalid: "
                f"values must be finite and the fractions {', '.join(PARAMETER_NAMES[2:])} "
                f">= 0 summing to 1 (sum {row[2:].sum():.6g})"
            )
    return p


def cutoff(lg_e: np.ndarray, lg_rcut: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Suppression factor: 1 below ``Z R_cut``, ``exp(1 - E / (Z R_cut))`` above (broadcasts).

    Example:
        >>> cutoff(np.array([18.0, 19.0, 19.3]), 19.0, 1).round(4)
        array([1.    , 1.    , 0.3696])
    """
    x = np.exp(np.minimum(_LN10 * (np.asarray(lg_e) - np.asarray(lg_rcut)), _EXP_MAX)) / np.asarray(charge)
    return np.exp(np.minimum(0.0, 1.0 - x))


def injected_flux(lg_e: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Injected dN/dE per species, relative units (``J0 = 1``, ``E0 = 10^19 eV``).

    Returns an array of shape (n, 5, len(lg_e)).
    """
    p = as_params(params)
    lg_e = np.asarray(lg_e, dtype=float)
    gamma, lg_rcut, f = p[:, 0, None, None], p[:, 1, None, None], p[:, 2:, None]
    power = np.exp(np.clip(-_LN10 * gamma * (lg_e - _LG_E0), -_EXP_MAX, _EXP_MAX))
    return f * power * cutoff(lg_e, lg_rcut, CHARGES[:, None])


def injection_weights(params: np.ndarray, lg_e_edges: np.ndarray, *, n_nodes: int = 4) -> np.ndarray:
    """Expected number of injected particles per species and lg E bin, relative units.

    ``N_A,i = f_A ∫_bin (E/E0)^-gamma cut_A(E) dE ∝ f_A ∫_bin (E/E0)^(1-gamma) cut_A(E) d lgE``,
    integrated with ``n_nodes`` Gauss-Legendre nodes per bin (smooth in ``R_cut``). With one node
    this is astrotools' reweighting ``10^((g + 1)(lgE - 19))`` of the E^-1 CRPropa injection,
    with astrotools' signed exponent ``g = -gamma``.

    Returns an array of shape (n, 5, len(lg_e_edges) - 1).

    Example:
        >>> edges = np.linspace(18.5, 21.0, 126)
        >>> w = injection_weights([2.0, 22.0, 1, 0, 0, 0, 0], edges)[0, 0]  # H, E^-2, no cut-off
        >>> round(float(w[0] / w[50]), 3)  # falls as E^-1 per lg E bin: 10^1 over one decade
        10.0
    """
    p = as_params(params)
    edges = np.asarray(lg_e_edges, dtype=float)
    if n_nodes < 1:
        raise ConfigError(f"n_nodes must be >= 1, got {n_nodes}")
    nodes, w = np.polynomial.legendre.leggauss(n_nodes)
    lo, width = edges[:-1], np.diff(edges)
    lg_rel = lo[:, None] + 0.5 * width[:, None] * (nodes + 1.0) - _LG_E0  # (bins, nodes)
    gamma = p[:, 0, None, None, None]
    # E / (Z R_cut) as a product (one exponential per element below, not three)
    inv_zr = np.exp(np.clip(_LN10 * (_LG_E0 - p[:, 1, None]), -_EXP_MAX, _EXP_MAX)) / CHARGES  # (n, 5)
    x = np.exp(_LN10 * lg_rel) * inv_zr[:, :, None, None]  # (n, 5, bins, nodes)
    # log of (E/E0)^(1 - gamma) x cut-off; clipped: no overflow for absurd gamma (prior: |gamma| <= 3)
    log_f = _LN10 * (1.0 - gamma) * lg_rel + np.minimum(0.0, 1.0 - x)
    per_bin = np.exp(np.clip(log_f, -_EXP_MAX, _EXP_MAX)) @ w * (0.5 * width)  # (n, 5, bins)
    return p[:, 2:, None] * per_bin
