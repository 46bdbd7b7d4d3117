"""Downstream observables of the neutrino: the leptonic W and top masses and m(ttbar).

What an analysis does with a neutrino estimate is to build particles from it. Per event, from
the inference columns (lepton, up to ten jets with their b-tag decision) and a neutrino
momentum (a point, or each posterior sample), taken massless (E = |p|):

* ``m_w``: m(lepton + nu), the leptonic W;
* ``m_top``: m(lepton + nu + b), the leptonic top, with **b** the b-tagged jet (among the ten
  leading stored jets; all of them if none is tagged there) that gives m(l nu b) closest to
  :data:`M_TOP` = 172.5 GeV. The choice is made for each neutrino separately: for each posterior
  sample of the flow (the b jet is marginalised over the posterior), once for a point estimate.
  The choice biases m_top towards 172.5 GeV in the same way for every method;
* ``m_ttbar``: m(lepton + nu + the four leading jets), the whole ttbar system at the
  reconstructed level without a jet assignment (the selection requires four jets).

:func:`observables` also returns ``top_pt``, the transverse momentum of the same leptonic top
(lepton + nu + b), the detector-level observable of the unfolding study
(:mod:`hepflow.unfolding.neutrino_flow`); it is not one of :data:`OBSERVABLES` (no parton-truth
column of the neutrino analysis).

The jets' four-momenta come from the stored ``jet_px``, ``jet_py``, ``jet_eta`` and
``jet_loge`` (E = exp(loge), pz = pT sinh(eta)). Their parton-level counterparts are the
``w_lep_mass_true``, ``top_lep_mass_true`` and ``ttbar_mass_true`` columns of
:func:`hepflow.neutrino.processor.parton_truth`.

Example:
    >>> import numpy as np
    >>> lep = np.array([[40.0, 0.0, 0.0, 40.0]])  # px, py, pz, E
    >>> jets = {"p4": np.zeros((1, 4, 4)), "btag": np.zeros((1, 4), bool), "mask": np.ones((1, 4), bool)}
    >>> m = observables(lep, np.array([[-40.0, 0.0, 0.0]]), jets)
    >>> round(float(m["m_w"][0]), 6)
    80.0
"""

from __future__ import annotations

import awkward as ak
import numpy as np

__all__ = ["M_TOP", "OBSERVABLES", "TRUTH_COLUMNS", "jets_from_columns", "lepton_from_columns", "observables"]

#: top-quark mass [GeV] used to pick the b jet of the leptonic top
M_TOP = 172.5
#: the observables, in the order of :func:`observables`
OBSERVABLES = ("m_w", "m_top", "m_ttbar")
#: the parton-level truth column of each observable
TRUTH_COLUMNS = {"m_w": "w_lep_mass_true", "m_top": "top_lep_mass_true", "m_ttbar": "ttbar_mass_true"}
#: jets of the ttbar system
N_TTBAR_JETS = 4


def lepton_from_columns(cols: ak.Array) -> np.ndarray:
    """(n, 4) lepton px, py, pz, E."""
    return np.stack(
        [ak.to_numpy(cols[f"lep_{c}"]).astype(np.float64) for c in ("px", "py", "pz", "e")], axis=1
    )


def jets_from_columns(cols: ak.Array, *, max_jets: int = 10) -> dict[str, np.ndarray]:
    """The stored jets as ``p4`` (n, J, 4: px, py, pz, E), ``btag`` and ``mask`` (n, J) arrays."""

    def padded(name: str) -> np.ndarray:
        arr = ak.fill_none(ak.pad_none(cols[name][:, :max_jets], max_jets, axis=1, clip=True), 0.0)
        return ak.to_numpy(arr).astype(np.float64)

    px, py, eta, loge = (padded(k) for k in ("jet_px", "jet_py", "jet_eta", "jet_loge"))
    mask = np.arange(max_jets)[None, :] < ak.to_numpy(ak.num(cols.jet_px, axis=1))[:, None]
    pz = np.hypot(px, py) * np.sinh(eta)
    e = np.where(mask, np.exp(loge), 0.0)
    p4 = np.stack([px, py, pz, e], axis=-1) * mask[..., None]
    return {"p4": p4, "btag": padded("jet_btag").astype(bool) & mask, "mask": mask}


def _mass(p4: np.ndarray) -> np.ndarray:
    m2 = p4[..., 3] ** 2 - p4[..., 0] ** 2 - p4[..., 1] ** 2 - p4[..., 2] ** 2
    return np.sqrt(np.maximum(m2, 0.0))


def observables(
    lepton: np.ndarray, neutrino: np.ndarray, jets: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``m_w``, ``m_top`` and ``m_ttbar`` of every event (and posterior sample).

    Args:
        lepton: (n, 4) px, py, pz, E.
        neutrino: (n, 3) px, py, pz of a point estimate, or (n, K, 3) posterior samples.
        jets: :func:`jets_from_columns`.

    Returns:
        each observable (and ``top_pt``) as (n,) for a point neutrino, (n, K) for samples.
    """
    nu = np.asarray(neutrino, np.float64)
    point = nu.ndim == 2
    if point:
        nu = nu[:, None, :]
    nu4 = np.concatenate([nu, np.linalg.norm(nu, axis=-1, keepdims=True)], axis=-1)  # (n, K, 4)
    lnu = lepton[:, None, :] + nu4
    m_w = _mass(lnu)
    p4, btag, mask = jets["p4"], jets["btag"], jets["mask"]
    # b candidates: the tagged jets, or every jet of events without a tagged stored jet
    cand = np.where(btag.any(axis=1, keepdims=True), btag, mask)
    m_lnub = _mass(lnu[:, :, None, :] + p4[:, None, :, :])  # (n, K, J)
    dist = np.where(cand[:, None, :], np.abs(m_lnub - M_TOP), np.inf)
    best = np.argmin(dist, axis=2)
    m_top = np.take_along_axis(m_lnub, best[..., None], axis=2)[..., 0]
    top = lnu + np.take_along_axis(p4, best.reshape(len(p4), -1)[..., None], axis=1).reshape(lnu.shape)
    four = p4[:, :N_TTBAR_JETS, :].sum(axis=1)
    m_tt = _mass(lnu + four[:, None, :])
    out = {"m_w": m_w, "m_top": m_top, "m_ttbar": m_tt, "top_pt": np.hypot(top[..., 0], top[..., 1])}
    return {k: v[:, 0] if point else v for k, v in out.items()}
