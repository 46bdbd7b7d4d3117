"""The unfolded ttbar observables at particle (parton, after radiation) and detector level.

Observables (:data:`OBSERVABLES`):

* ``top_pt``: transverse momentum of the leptonically decaying top quark [GeV];
* ``mtt``: invariant mass of the ttbar system [GeV].

Particle level (:func:`particle_level`, from the NanoAOD ``GenPart`` collection): the top and
antitop are the hard-process last copies (``fromHardProcess`` and ``isLastCopy``: after
radiation, the ones that decay); the charged lepton is the hard-process, last-copy electron or
muon whose first ancestor of a different species is a W (after photon radiation; leptons from
tau decays are not counted). The leptonic top is the top if the lepton is positive (t -> W+ ->
l+ nu), the antitop otherwise. An event without exactly one such t, tbar and lepton has no
particle-level values (NaN, ``valid`` False).

Detector level (:func:`detector_level`, from the neutrino-analysis feature columns of selected
events, :mod:`hepflow.neutrino.features`): the neutrino has the MET as transverse momentum and
the pz of the W-mass constraint (:func:`hepflow.neutrino.quadratic.solve_neutrino_pz`: the
smaller-|pz| root, the real part when complex); the leptonic top is lepton + neutrino + the
b-tagged jet (among the stored leading jets) that brings m(l nu b) closest to
:data:`TOP_MASS` (any jet if none is b-tagged); ``mtt`` is the mass of lepton + neutrino + the
four leading jets.

The four-vector arithmetic goes through coffea's NanoEvents vector behaviours
(:func:`hepflow.neutrino.features.momenta`: ``a + b``, ``.mass``, ``.pt``, ``.sum``), in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from hepflow.neutrino.features import MAX_JETS, momenta
from hepflow.neutrino.quadratic import lepton_mass, solve_neutrino_pz

__all__ = ["OBSERVABLES", "TOP_MASS", "ParticleLevel", "detector_level", "particle_level"]

#: Observable name -> axis label.
OBSERVABLES: dict[str, str] = {
    "top_pt": r"leptonic top $p_T$ [GeV]",
    "mtt": r"$m_{t\bar{t}}$ [GeV]",
}
#: Top mass used to choose the b jet of the detector-level leptonic top [GeV].
TOP_MASS = 172.5


@dataclass(frozen=True)
class ParticleLevel:
    """Particle-level quantities per event (NaN where ``valid`` is False)."""

    valid: np.ndarray
    top_pt: np.ndarray
    mtt: np.ndarray
    lep_pt: np.ndarray
    lep_eta: np.ndarray
    lep_pdgid: np.ndarray


def _momenta(obj: Any) -> ak.Array:
    """float64 Lorentz vectors (coffea behaviour) of objects with pt, eta, phi, mass (None -> NaN)."""
    return momenta(
        **{
            k: ak.values_astype(ak.fill_none(obj[k], np.nan), np.float64)
            for k in ("pt", "eta", "phi", "mass")
        }
    )


def _numpy(values: ak.Array) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.fill_none(values, np.nan)), dtype=np.float64)


def particle_level(genpart: Any) -> ParticleLevel:
    """Leptonic top pT, m_ttbar and the charged lepton of every event from ``GenPart``.

    ``genpart`` is a coffea NanoAOD ``GenPart`` collection (with ``hasFlags`` and
    ``distinctParent``); see the module docstring for the definitions.
    """
    hard = genpart.hasFlags(["fromHardProcess", "isLastCopy"])
    abs_id = np.abs(genpart.pdgId)
    t = genpart[hard & (genpart.pdgId == 6)]
    tbar = genpart[hard & (genpart.pdgId == -6)]
    from_w = ak.fill_none(np.abs(genpart.distinctParent.pdgId) == 24, False)
    leptons = genpart[hard & ((abs_id == 11) | (abs_id == 13)) & from_w]
    valid = ak.to_numpy((ak.num(t) == 1) & (ak.num(tbar) == 1) & (ak.num(leptons) == 1))
    top, antitop, lepton = _momenta(ak.firsts(t)), _momenta(ak.firsts(tbar)), ak.firsts(leptons)
    lep_id = np.asarray(ak.to_numpy(ak.fill_none(lepton.pdgId, 0)), dtype=np.int32)
    # l+ (negative pdgId) comes from the top
    leptonic_pt = np.where(lep_id < 0, _numpy(top.pt), _numpy(antitop.pt))
    nan = np.where(valid, 1.0, np.nan)
    return ParticleLevel(
        valid=valid,
        top_pt=leptonic_pt * nan,
        mtt=_numpy((top + antitop).mass) * nan,
        lep_pt=_numpy(lepton.pt) * nan,
        lep_eta=_numpy(lepton.eta) * nan,
        lep_pdgid=np.where(valid, lep_id, 0),
    )


def detector_level(columns: ak.Array) -> dict[str, np.ndarray]:
    """``top_pt`` and ``mtt`` of selected events from their feature columns (numpy float64)."""
    n = len(columns)
    if n == 0:
        return {name: np.zeros(0) for name in OBSERVABLES}

    def col(name: str) -> Any:
        values = columns[name]
        return ak.values_astype(values[:, :MAX_JETS] if values.ndim > 1 else values, np.float64)

    lep = {k: ak.to_numpy(col(f"lep_{k}")) for k in ("px", "py", "pz", "e")}
    met_x, met_y = ak.to_numpy(col("met_px")), ak.to_numpy(col("met_py"))
    mass = lepton_mass(np.asarray(ak.to_numpy(columns.lep_flavor), dtype=np.int64))
    quad = solve_neutrino_pz(lep["px"], lep["py"], lep["pz"], met_x, met_y, lep_mass=mass)
    nu = momenta(px=met_x, py=met_y, pz=np.asarray(quad.pz, np.float64), mass=np.zeros(n))
    lnu = momenta(px=lep["px"], py=lep["py"], pz=lep["pz"], E=lep["e"]) + nu
    # the stored leading jets (as many as the flow's context uses)
    jets = momenta(px=col("jet_px"), py=col("jet_py"), eta=col("jet_eta"), E=np.exp(col("jet_loge")))
    tagged = columns.jet_btag[:, :MAX_JETS] > 0.5
    usable = tagged | ~ak.any(tagged, axis=1)  # the b-tagged jets, or all if none is
    distance = ak.where(usable, abs((lnu + jets).mass - TOP_MASS), np.inf)
    b_jet = ak.firsts(jets[ak.argmin(distance, axis=1, keepdims=True)])
    top_pt = ak.where(ak.is_none(b_jet), lnu.pt, (lnu + b_jet).pt)  # no jet: the top is l + nu
    return {"top_pt": _numpy(top_pt), "mtt": _numpy((lnu + jets[:, :4].sum(axis=1)).mass)}
