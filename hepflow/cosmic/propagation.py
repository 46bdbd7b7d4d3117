"""Propagation from the sources to Earth with the CRPropa-3 tables and a source-distance model.

The tables (:mod:`hepflow.cosmic.tables`) give, per injected species, injected lg E bin and source
distance, the numbers of particles arriving per charge group and lg E bin. A distance model turns
them into one matrix ``(injected species, injected lg E, arriving group, arriving lg E)``:

``"homogeneous"`` (default)
    Identical sources with a homogeneous, non-evolving density between ``d_min`` and ``d_max``
    (default: the table range 1 .. 1500 Mpc). The number of sources in a shell grows as d^2 and
    the flux of each falls as 1/d^2, so the distance weight is uniform in d: each table distance
    gets the length of its cell (cells bounded by the geometric midpoints of the table distances).
    Cosmological effects (source evolution, redshift dilation) are not included; at these
    energies the horizon is well inside 1500 Mpc for nuclei, while for protons near 10^18.7 eV the
    contribution from beyond 1500 Mpc is missing (documented in docs/cosmic_model.md).
a distance in Mpc
    All sources at one distance (log-linear interpolation between the two nearest table distances).

The arriving charge groups are represented by Z = 1, 2, 7, 14, 26 with mass numbers
A = 1, 4, 14, 28, 56 (:data:`GROUP_MASSES`): the group boundaries are not documented with the
tables, so each group takes the nucleus it is named after.

Example:
    >>> prop = Propagation.build(irb="Gilmore12", distance="homogeneous")
    >>> prop.matrix.shape
    (5, 125, 5, 125)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hepflow.cosmic.tables import ARRIVING_CHARGES, PropagationTable, load_table
from hepflow.errors import ConfigError

__all__ = [
    "GROUP_CHARGES",
    "GROUP_MASSES",
    "Propagation",
    "fixed_distance_weights",
    "homogeneous_distance_weights",
]

#: Charge and mass numbers representing the five arriving charge groups.
GROUP_CHARGES = np.array(ARRIVING_CHARGES)
GROUP_MASSES = np.array([1, 4, 14, 28, 56])


def homogeneous_distance_weights(
    distances: np.ndarray, *, d_min: float | None = None, d_max: float | None = None
) -> np.ndarray:
    """Weights (sum 1) of the table distances for a homogeneous source density in [d_min, d_max].

    Example:
        >>> d = np.geomspace(1.0, 1500.0, 100)
        >>> w = homogeneous_distance_weights(d, d_max=100.0)
        >>> bool(w[d > 110].sum() == 0.0), round(float(w.sum()), 12)
        (True, 1.0)
    """
    d = np.asarray(distances, dtype=float)
    lo = d[0] if d_min is None else float(d_min)
    hi = d[-1] if d_max is None else float(d_max)
    if not (d[0] <= lo < hi <= d[-1]):
        raise ConfigError(
            f"source distances must satisfy {d[0]:g} <= d_min < d_max <= {d[-1]:g} Mpc "
            f"(the table range), got d_min={lo:g}, d_max={hi:g}"
        )
    edges = np.concatenate([[d[0]], np.sqrt(d[1:] * d[:-1]), [d[-1]]])
    w = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    return w / w.sum()


def fixed_distance_weights(distances: np.ndarray, distance: float) -> np.ndarray:
    """Weights putting every source at ``distance`` Mpc (interpolated linearly in ln d)."""
    d = np.asarray(distances, dtype=float)
    x = float(distance)
    if not (d[0] <= x <= d[-1]):
        raise ConfigError(f"source distance must lie in the table range {d[0]:g} .. {d[-1]:g} Mpc, got {x:g}")
    k = int(np.clip(np.searchsorted(d, x) - 1, 0, d.size - 2))
    t = (np.log(x) - np.log(d[k])) / (np.log(d[k + 1]) - np.log(d[k]))
    w = np.zeros_like(d)
    w[k], w[k + 1] = 1.0 - t, t
    return w


@dataclass(frozen=True, eq=False)
class Propagation:
    """Source-to-Earth response for one infrared background and distance model.

    Attributes:
        lg_e_edges: (126,) lg(E/eV) edges of the injected and arriving energy bins.
        matrix: (5, 125, 5, 125) arriving particles per injected particle, summed over distances
            with the distance weights.
        distance_weights: (100,) weights of the table distances.
        distances: (100,) table distances in Mpc.
        description: e.g. ``"homogeneous 1-1500 Mpc, IRB Gilmore12"``.
    """

    lg_e_edges: np.ndarray
    matrix: np.ndarray
    distance_weights: np.ndarray
    distances: np.ndarray
    description: str

    @classmethod
    def build(
        cls,
        *,
        irb: str = "Gilmore12",
        distance: str | float = "homogeneous",
        d_min: float | None = None,
        d_max: float | None = None,
        table: PropagationTable | None = None,
    ) -> Propagation:
        """Contract the CRPropa table of ``irb`` over the distance model.

        Args:
            irb: infrared background of the table (``Gilmore12``, ``Dominguez11``, ``Kneiske04``).
            distance: ``"homogeneous"`` or a single source distance in Mpc.
            d_min, d_max: range of the homogeneous source density in Mpc (table range by default).
            table: an already loaded table (overrides ``irb``).
        """
        tab = table if table is not None else load_table(irb)
        if isinstance(distance, str):
            if distance != "homogeneous":
                raise ConfigError(
                    f"unknown distance model {distance!r}; use 'homogeneous' or a distance in Mpc"
                )
            w = homogeneous_distance_weights(tab.distances, d_min=d_min, d_max=d_max)
            lo = tab.distances[0] if d_min is None else d_min
            hi = tab.distances[-1] if d_max is None else d_max
            text = f"homogeneous {lo:g}-{hi:g} Mpc"
        else:
            if d_min is not None or d_max is not None:
                raise ConfigError("d_min/d_max apply to the 'homogeneous' distance model only")
            w = fixed_distance_weights(tab.distances, distance)
            text = f"single distance {float(distance):g} Mpc"
        return cls(
            lg_e_edges=tab.lg_e_edges,
            matrix=tab.contract_distance(w),
            distance_weights=w,
            distances=tab.distances,
            description=f"{text}, IRB {tab.irb}",
        )

    def __call__(self, injected: np.ndarray) -> np.ndarray:
        """Arriving particles (n, 5 groups, 125 lg E bins) from injected numbers (n, 5, 125).

        Example:
            >>> prop = Propagation.build(distance=10.0)
            >>> inj = np.zeros((1, 5, 125)); inj[0, 1, 85] = 1.0  # He at 10^20.2 eV from 10 Mpc
            >>> n = prop(inj)[0].sum(axis=-1)
            >>> round(float(n[0] / n.sum()), 3)  # arriving particles: 99.7 % protons
            0.997
        """
        inj = np.asarray(injected, dtype=float)
        n_s, n_i, n_c, n_j = self.matrix.shape
        return (inj.reshape(-1, n_s * n_i) @ self.matrix.reshape(n_s * n_i, n_c * n_j)).reshape(-1, n_c, n_j)
