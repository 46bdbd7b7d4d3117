"""The event selection of the neutrino analysis: the ``[selection]`` table of its config.

It is read by the coffea processors (:mod:`hepflow.neutrino.processor`, the unfolding
processor) and is part of the analysis config (:class:`hepflow.neutrino.config.NeutrinoConfig`);
this module imports neither torch nor coffea, so processing workers stay light.

Example:
    >>> sel = NeutrinoSelection(min_jets=3)
    >>> sel.min_jets, sel.min_bjets, sel.max_jets
    (3, 1, 10)
    >>> NeutrinoSelection(max_jets=0)
    Traceback (most recent call last):
    ...
    ValueError: max_jets must be positive, got 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from hepflow.config import load
from hepflow.neutrino.features import MAX_JETS

__all__ = ["NeutrinoSelection"]


@dataclass(frozen=True)
class NeutrinoSelection:
    """Event selection of the neutrino analysis (defaults close to the nu-Flows study).

    Exactly one tight, isolated electron or muon; at least ``min_jets`` jets with
    ``pt > jet_pt_min`` and ``|eta| < jet_eta_max`` separated from the lepton by
    ``jet_lepton_dr``; at least ``min_bjets`` of them b-tagged (``Jet_<btag_branch> > btag_wp``,
    default DeepJet medium working point).
    """

    electron_pt_min: float = 30.0
    electron_eta_max: float = 2.5
    electron_cutbased_min: int = 4  # NanoAOD Electron_cutBased: 4 = tight
    electron_iso_max: float = 0.15  # Electron_pfRelIso03_all
    muon_pt_min: float = 30.0
    muon_eta_max: float = 2.4
    muon_iso_max: float = 0.15  # Muon_pfRelIso04_all, with Muon_tightId
    jet_pt_min: float = 25.0
    jet_eta_max: float = 2.5
    jet_lepton_dr: float = 0.4
    min_jets: int = 4
    min_bjets: int = 1
    btag_branch: str = "btagDeepFlavB"
    btag_wp: float = 0.2783  # DeepJet medium, UL2018
    met: Literal["auto", "MET", "PFMET", "PuppiMET"] = "auto"
    max_jets: int = MAX_JETS

    def __post_init__(self) -> None:
        if self.min_jets < 0 or self.min_bjets < 0 or self.min_bjets > max(self.min_jets, 1) * 10:
            raise ValueError(
                f"invalid jet multiplicity cuts min_jets={self.min_jets}, min_bjets={self.min_bjets}"
            )
        if self.max_jets < 1:
            raise ValueError(f"max_jets must be positive, got {self.max_jets}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> NeutrinoSelection:
        """Read the ``[selection]`` table of a TOML config (unknown keys are refused)."""
        return load(cls, path, section="selection")
