"""Non-learned baselines for neutrino reconstruction.

* :mod:`~hepflow.baselines.quadratic`: neutrino pz from the W-mass constraint (real part or
  MET rescaling for complex solutions), lepton masses, W-mass reconstruction.
"""

from __future__ import annotations

from hepflow.baselines.quadratic import (
    M_ELECTRON,
    M_MUON,
    M_TAU,
    M_W,
    NeutrinoPzSolution,
    RescaledMETSolution,
    lepton_mass,
    reconstruct_w_mass,
    solve_neutrino_pz,
    solve_neutrino_pz_rescaled_met,
)

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
