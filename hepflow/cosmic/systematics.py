"""Detector systematics of the Auger data as nuisance parameters of the forward model.

Two nuisance parameters, both with standard-normal priors truncated to ``|nu| <= nu_max``:

* ``nu_E``, the **energy scale**: ``E_rec = E_true (1 + energy_scale nu_E)``, i.e. every arriving
  cosmic ray is reconstructed ``lg(1 + energy_scale nu_E)`` higher in lg E. Auger quotes a 14 %
  systematic uncertainty of its energy scale (PRD 102 (2020) 062005, the 2020 spectrum paper).
  The spectrum bins and the Xmax energy bins are bins of the *reconstructed* energy; the shower
  physics (the Gumbel Xmax distribution) is evaluated at the *true* energy.
* ``nu_X``, the **Xmax scale**: ``Xmax_rec = Xmax + b``, ``b = sigma_X(E) nu_X``, applied after the
  detector resolution (the acceptance is a function of the true Xmax and is not shifted). With
  ``xmax_scale = "auger2014"`` ``sigma_X(E)`` is the published energy-dependent band of Auger,
  PRD 90 (2014) 122005 (the ``xmaxSystematics.txt`` table shipped with the data: ``sigmaUp`` +7.1
  to +9.3 g/cm^2, ``sigmaLow`` -6.8 to -10.1 g/cm^2 per energy bin). The quoted band bounds the
  true ``<Xmax>``: ``true in [measured - sigmaLow, measured + sigmaUp]``, so a detector bias
  ``b > 0`` (reconstructed deeper than true) extends to ``|sigmaLow|`` and ``b < 0`` to
  ``sigmaUp``: ``sigma_X = |sigmaLow|`` for ``nu_X > 0`` and ``sigmaUp`` for ``nu_X < 0``. One
  ``nu_X`` shifts all energy bins together (the published correlation between the bins above
  10^18.7 eV is 0.86 to 1). A number instead of ``"auger2014"`` is a constant ``sigma_X`` in g/cm^2.

The truncation keeps ``1 + energy_scale nu_E > 0`` and the shifted energies inside the
propagation tables; with ``nu_max = 4`` it removes 6e-5 of each normal's mass (ignored in the
normalisation of :meth:`Systematics.log_prob`).

Example:
    >>> syst = Systematics()
    >>> nu = syst.sample(10000, rng=1)
    >>> nu.shape, bool(abs(nu.std() - 1) < 0.03), bool(np.abs(nu).max() <= 4)
    ((10000, 2), True, True)
    >>> up, low = syst.xmax_sigma(np.array([18.7, 18.8, 18.9]))
    >>> up.round(2).tolist(), low.round(2).tolist()  # sigma_X for nu_X < 0 and for nu_X > 0
    ([7.43, 7.59], [8.3, 7.96])
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from hepflow.cosmic.source import PARAMETER_NAMES
from hepflow.errors import ConfigError, InputError

__all__ = [
    "NUISANCE_NAMES",
    "XMAX_SCALE_PUBLISHED",
    "Systematics",
    "load_xmax_systematics",
    "split_params",
]

#: the nuisance parameters, in the order they follow the 7 source parameters
NUISANCE_NAMES: tuple[str, ...] = ("nu_E", "nu_X")
#: ``xmax_scale`` value for the published energy-dependent Xmax-scale band (PRD 90 (2014) 122005)
XMAX_SCALE_PUBLISHED = "auger2014"
_N_SOURCE = len(PARAMETER_NAMES)


@functools.lru_cache(maxsize=1)
def load_xmax_systematics() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The published Xmax-scale uncertainty per energy bin: ``(lg_e_edges (19,), sigma_up (18,),
    sigma_low (18,))`` in g/cm^2, both positive (``xmax/xmaxSystematics.txt`` of the Auger 2014
    Xmax data, shipped by astrotools)."""
    from hepflow.cosmic.auger import load_xmax
    from hepflow.cosmic.tables import astrotools_data_dir

    path = astrotools_data_dir() / "data" / "xmax" / "xmaxSystematics.txt"
    try:
        t = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read Auger data file {path}: {err}") from err
    if t.shape != (18, 5):
        raise InputError(f"Auger data file {path} has shape {t.shape}, expected 18 rows of 5 columns")
    edges = np.append(t[:, 1], t[-1, 2])
    if not np.allclose(edges, load_xmax().lg_e_edges):
        raise InputError("xmaxSystematics.txt: its energy bins differ from the Xmax histograms'")
    up, low = t[:, 3], -t[:, 4]
    if not (np.all(up > 0) and np.all(low > 0)):
        raise InputError("xmaxSystematics.txt: sigmaUp must be > 0 and sigmaLow < 0")
    return edges, up, low


@dataclass(frozen=True)
class Systematics:
    """The energy-scale and Xmax-scale nuisances (module docstring).

    Args:
        energy_scale: relative energy-scale uncertainty per unit ``nu_E`` (Auger: 0.14).
        xmax_scale: ``"auger2014"`` (the published energy-dependent band) or a constant
            ``sigma_X`` in g/cm^2.
        nu_max: truncation of both standard-normal priors.
    """

    energy_scale: float = 0.14
    xmax_scale: str | float = XMAX_SCALE_PUBLISHED
    nu_max: float = 4.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.nu_max) and 1.0 <= self.nu_max <= 10.0):
            raise ConfigError(f"systematics.nu_max must be between 1 and 10, got {self.nu_max}")
        s = self.energy_scale
        if not (np.isfinite(s) and s > 0.0 and s * self.nu_max < 0.9):
            raise ConfigError(
                f"systematics.energy_scale must be > 0 with energy_scale * nu_max < 0.9 (so that "
                f"1 + energy_scale nu_E stays positive), got {s} (nu_max {self.nu_max})"
            )
        x = self.xmax_scale
        if isinstance(x, str):
            if x != XMAX_SCALE_PUBLISHED:
                raise ConfigError(
                    f'systematics.xmax_scale must be "{XMAX_SCALE_PUBLISHED}" or a width in g/cm^2, got {x!r}'
                )
        elif isinstance(x, bool) or not (np.isfinite(x) and 0.0 < x <= 100.0):
            raise ConfigError(f"systematics.xmax_scale must be in (0, 100] g/cm^2, got {x!r}")

    # ------------------------------------------------------------------ prior of the nuisances
    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``n`` pairs ``(nu_E, nu_X)`` (n, 2) from the truncated standard normals."""
        gen = np.random.default_rng(rng)
        out = gen.standard_normal((n, 2))
        bad = np.abs(out) > self.nu_max
        while bad.any():  # redraw the (rare) values beyond the truncation
            out[bad] = gen.standard_normal(int(bad.sum()))
            bad = np.abs(out) > self.nu_max
        return out

    def in_support(self, nu: np.ndarray) -> np.ndarray:
        """Boolean mask (n,): finite and ``|nu| <= nu_max`` for both."""
        v = np.atleast_2d(np.asarray(nu, dtype=float))
        return np.all(np.isfinite(v) & (np.abs(v) <= self.nu_max), axis=-1)

    def log_prob(self, nu: np.ndarray) -> np.ndarray:
        """Log density (n,) of the two standard normals (the truncation's 1e-4 of mass not
        renormalised); -inf outside the support."""
        v = np.atleast_2d(np.asarray(nu, dtype=float))
        with np.errstate(invalid="ignore"):
            lp = -0.5 * np.sum(v**2, axis=-1) - np.log(2.0 * np.pi)
        return np.where(self.in_support(v), lp, -np.inf)

    # ------------------------------------------------------------------ detector shifts
    def lg_e_shift(self, nu_e: np.ndarray) -> np.ndarray:
        """Shift of lg E: ``lg(1 + energy_scale nu_E)`` (same shape)."""
        return np.log10(1.0 + self.energy_scale * np.asarray(nu_e, dtype=float))

    @property
    def lg_e_shift_range(self) -> tuple[float, float]:
        """Smallest and largest lg E shift inside the support."""
        return float(self.lg_e_shift(-self.nu_max)), float(self.lg_e_shift(self.nu_max))

    def xmax_sigma(self, lg_e_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sigma_X`` per energy bin of ``lg_e_edges`` for ``nu_X < 0`` (``sigmaUp``) and
        ``nu_X > 0`` (``|sigmaLow|``), each (n_bins,); the bins must be bins of the published table
        or unions of adjacent ones (the mean over the merged bins is taken)."""
        edges = np.asarray(lg_e_edges, dtype=float)
        n = edges.size - 1
        if not isinstance(self.xmax_scale, str):
            c = np.full(n, float(self.xmax_scale))
            return c, c.copy()
        t_edges, up, low = load_xmax_systematics()
        idx = [int(np.argmin(np.abs(t_edges - e))) for e in edges]
        if not np.allclose(t_edges[idx], edges, atol=1e-6) or np.any(np.diff(idx) < 1):
            raise ConfigError(f"the Xmax energy bins {edges.tolist()} are not bins of the published table")
        return (
            np.array([up[a:b].mean() for a, b in itertools.pairwise(idx)]),
            np.array([low[a:b].mean() for a, b in itertools.pairwise(idx)]),
        )

    def xmax_shift(self, nu_x: np.ndarray, up: np.ndarray, low: np.ndarray) -> np.ndarray:
        """Shift ``b`` in g/cm^2 (n, n_bins) of the reconstructed Xmax for ``nu_x`` (n,), given
        :meth:`xmax_sigma`'s ``up`` and ``low``."""
        v = np.asarray(nu_x, dtype=float)[:, None]
        return v * np.where(v > 0, low[None, :], up[None, :])

    @classmethod
    def from_metadata(cls, metadata: dict[str, object]) -> Systematics:
        """The inverse of :meth:`metadata` (what a model or file records)."""
        try:
            return cls(
                energy_scale=float(metadata["energy_scale"]),  # type: ignore[arg-type]
                xmax_scale=metadata["xmax_scale"],  # type: ignore[arg-type]
                nu_max=float(metadata["nu_max"]),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"damaged systematics metadata {metadata}: {err!r}") from err

    def metadata(self) -> dict[str, object]:
        """What a file or model records about the nuisances it was made with."""
        return {
            "parameters": list(NUISANCE_NAMES),
            "energy_scale": self.energy_scale,
            "xmax_scale": self.xmax_scale,
            "nu_max": self.nu_max,
        }


def split_params(params: np.ndarray, *, nuisances: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a batch (n, 7) or, with ``nuisances``, (n, 9) into the source parameters (n, 7) and
    the nuisances (n, 2) (None for 7 columns). Raises ConfigError for any other shape.

    Example:
        >>> p, nu = split_params(np.zeros((3, 9)), nuisances=True)
        >>> p.shape, nu.shape
        ((3, 7), (3, 2))
    """
    p = np.asarray(params, dtype=float)
    if p.ndim == 1:
        p = p[None, :]
    widths = (_N_SOURCE, _N_SOURCE + 2) if nuisances else (_N_SOURCE,)
    if p.ndim != 2 or p.shape[1] not in widths:
        if nuisances:
            what = f"(n, 7) or (n, 9) ({', '.join(PARAMETER_NAMES + NUISANCE_NAMES)})"
        else:
            what = f"(n, 7) ({', '.join(PARAMETER_NAMES)}; nuisances need a forward model with systematics)"
        raise ConfigError(f"cosmic-ray parameters must have shape {what}, got {np.shape(params)}")
    if p.shape[1] == _N_SOURCE:
        return p, None
    return p[:, :_N_SOURCE], p[:, _N_SOURCE:]
