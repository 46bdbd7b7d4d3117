"""Toy events for the detector tests: hand-made particles and an empty ghost list."""

from __future__ import annotations

import numpy as np

from hepflow.generate.detector import Ghosts, Particles


def toy_event(particles: list[tuple[float, float, float, int, int]]) -> Particles:
    """One event from (pt, eta, phi, pdgId, charge); massless four-momenta."""
    pt, eta, phi, pdg, charge = (np.array(column) for column in zip(*particles, strict=True))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return Particles(
        offsets=np.array([0, len(pt)]),
        px=px,
        py=py,
        pz=pz,
        e=np.sqrt(px**2 + py**2 + pz**2),
        pdg_id=pdg.astype(np.int32),
        charge=charge.astype(float),
        genpart_idx=np.full(len(pt), -1, dtype=np.int16),
    )


def no_ghosts() -> Ghosts:
    empty = np.zeros(0)
    return Ghosts(
        np.zeros(2, dtype=np.int64),
        empty,
        empty,
        empty,
        empty,
        empty.astype(np.uint8),
        empty.astype(np.int16),
    )
