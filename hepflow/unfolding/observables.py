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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from hepflow.neutrino.features import JET_FEATURES, context_arrays
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


def _p4(obj: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(E, px, py, pz) as float64 numpy arrays from pt, eta, phi, mass (None -> NaN)."""

    def get(name: str) -> np.ndarray:
        return np.asarray(ak.to_numpy(ak.fill_none(obj[name], np.nan)), dtype=np.float64)

    pt, eta, phi, mass = get("pt"), get("eta"), get("phi"), get("mass")
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.sqrt(px**2 + py**2 + pz**2 + mass**2), px, py, pz


def _mass(e: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0.0, None))


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
    t, tbar, lepton = ak.firsts(t), ak.firsts(tbar), ak.firsts(leptons)
    p_t, p_tbar = np.stack(_p4(t)), np.stack(_p4(tbar))
    lep_id = np.asarray(ak.to_numpy(ak.fill_none(lepton.pdgId, 0)), dtype=np.int32)
    leptonic = np.where(lep_id < 0, p_t, p_tbar)  # l+ (negative pdgId) comes from the top
    tt = p_t + p_tbar
    nan = np.where(valid, 1.0, np.nan)
    return ParticleLevel(
        valid=valid,
        top_pt=np.hypot(leptonic[1], leptonic[2]) * nan,
        mtt=_mass(*tt) * nan,
        lep_pt=np.asarray(ak.to_numpy(ak.fill_none(lepton.pt, np.nan)), np.float64) * nan,
        lep_eta=np.asarray(ak.to_numpy(ak.fill_none(lepton.eta, np.nan)), np.float64) * nan,
        lep_pdgid=np.where(valid, lep_id, 0),
    )


def detector_level(columns: ak.Array) -> dict[str, np.ndarray]:
    """``top_pt`` and ``mtt`` of selected events from their feature columns (numpy float64)."""
    n = len(columns)
    if n == 0:
        return {name: np.zeros(0) for name in OBSERVABLES}

    def col(name: str) -> np.ndarray:
        return np.asarray(ak.to_numpy(columns[name]), dtype=np.float64)

    lep = {k: col(f"lep_{k}") for k in ("px", "py", "pz", "e")}
    met_x, met_y = col("met_px"), col("met_py")
    mass = lepton_mass(np.asarray(ak.to_numpy(columns.lep_flavor), dtype=np.int64))
    nu_pz = np.asarray(
        solve_neutrino_pz(lep["px"], lep["py"], lep["pz"], met_x, met_y, lep_mass=mass).pz, np.float64
    )
    lnu = np.stack(
        [
            lep["e"] + np.sqrt(met_x**2 + met_y**2 + nu_pz**2),
            lep["px"] + met_x,
            lep["py"] + met_y,
            lep["pz"] + nu_pz,
        ]
    )  # (4, n)

    arrays = context_arrays(columns)
    jets, mask = arrays["jets"].astype(np.float64), arrays["mask"]
    f = {k: jets[..., i] for i, k in enumerate(JET_FEATURES)}
    jet_pt = np.hypot(f["jet_px"], f["jet_py"])
    jet = np.stack(
        [np.where(mask, np.exp(f["jet_loge"]), 0.0), f["jet_px"], f["jet_py"], jet_pt * np.sinh(f["jet_eta"])]
    )  # (4, n, jets), zero for padding
    candidate_m = _mass(*(lnu[:, :, None] + jet))
    tagged = mask & (f["jet_btag"] > 0.5)
    usable = np.where(tagged.any(axis=1, keepdims=True), tagged, mask)
    best = np.argmin(np.where(usable, np.abs(candidate_m - TOP_MASS), np.inf), axis=1)
    top = lnu + jet[:, np.arange(n), best]
    ttbar = lnu + jet[:, :, :4].sum(axis=2)
    return {"top_pt": np.hypot(top[1], top[2]), "mtt": _mass(*ttbar)}
