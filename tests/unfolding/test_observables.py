"""The unfolding observables through coffea's vector behaviours equal the hand-written four-vector
arithmetic they replaced, at particle level (GenPart of the CMS sample) and detector level (its
selected events, also with no b-tagged jet and with fewer than four jets)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from hepflow.neutrino.features import JET_FEATURES, context_arrays
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.neutrino.quadratic import lepton_mass, solve_neutrino_pz
from hepflow.unfolding.observables import TOP_MASS, detector_level, particle_level
from tests.neutrino.test_contract import _events


def _old_p4(obj) -> np.ndarray:
    def get(name: str) -> np.ndarray:
        return np.asarray(ak.to_numpy(ak.fill_none(obj[name], np.nan)), dtype=np.float64)

    pt, eta, phi, mass = get("pt"), get("eta"), get("phi"), get("mass")
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([np.sqrt(px**2 + py**2 + pz**2 + mass**2), px, py, pz])


def _old_mass(p: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(p[0] ** 2 - p[1] ** 2 - p[2] ** 2 - p[3] ** 2, 0.0, None))


def _old_detector_level(columns: ak.Array) -> dict[str, np.ndarray]:
    """detector_level as it was written by hand (E, px, py, pz stacks of padded jets)."""

    def col(name: str) -> np.ndarray:
        return np.asarray(ak.to_numpy(columns[name]), dtype=np.float64)

    n = len(columns)
    lep = {k: col(f"lep_{k}") for k in ("px", "py", "pz", "e")}
    met_x, met_y = col("met_px"), col("met_py")
    mass = lepton_mass(np.asarray(ak.to_numpy(columns.lep_flavor), dtype=np.int64))
    nu_pz = np.asarray(solve_neutrino_pz(lep["px"], lep["py"], lep["pz"], met_x, met_y, lep_mass=mass).pz)
    lnu = np.stack(
        [
            lep["e"] + np.sqrt(met_x**2 + met_y**2 + nu_pz**2),
            lep["px"] + met_x,
            lep["py"] + met_y,
            lep["pz"] + nu_pz,
        ]
    )
    arrays = context_arrays(columns)
    jets, mask = arrays["jets"].astype(np.float64), arrays["mask"]
    f = {k: jets[..., i] for i, k in enumerate(JET_FEATURES)}
    jet_pt = np.hypot(f["jet_px"], f["jet_py"])
    jet = np.stack(
        [np.where(mask, np.exp(f["jet_loge"]), 0.0), f["jet_px"], f["jet_py"], jet_pt * np.sinh(f["jet_eta"])]
    )
    candidate_m = _old_mass(lnu[:, :, None] + jet)
    tagged = mask & (f["jet_btag"] > 0.5)
    usable = np.where(tagged.any(axis=1, keepdims=True), tagged, mask)
    best = np.argmin(np.where(usable, np.abs(candidate_m - TOP_MASS), np.inf), axis=1)
    top = lnu + jet[:, np.arange(n), best]
    return {"top_pt": np.hypot(top[1], top[2]), "mtt": _old_mass(lnu + jet[:, :, :4].sum(axis=2))}


@pytest.fixture(scope="module")
def events(nano_v12):
    return _events(nano_v12, entrystart=0, entrystop=200)


@pytest.fixture(scope="module")
def columns(events):
    return NeutrinoFeatureProcessor().columns(events).columns


def test_particle_level_equals_the_old_arithmetic(events):
    level = particle_level(events.GenPart)
    assert level.valid.sum() > 100
    hard = events.GenPart.hasFlags(["fromHardProcess", "isLastCopy"])
    t = _old_p4(ak.firsts(events.GenPart[hard & (events.GenPart.pdgId == 6)]))
    tbar = _old_p4(ak.firsts(events.GenPart[hard & (events.GenPart.pdgId == -6)]))
    leptonic = np.where(level.lep_pdgid < 0, t, tbar)
    ok = level.valid
    np.testing.assert_allclose(level.top_pt[ok], np.hypot(leptonic[1], leptonic[2])[ok], rtol=1e-12)
    np.testing.assert_allclose(level.mtt[ok], _old_mass(t + tbar)[ok], rtol=1e-10)
    assert np.isnan(level.top_pt[~ok]).all()
    assert np.isnan(level.mtt[~ok]).all()


def test_detector_level_equals_the_old_arithmetic(columns):
    assert len(columns) == 52
    # also without any b-tagged jet (the jet nearest the top mass of all), and with 1-3 jets
    untagged = ak.with_field(columns, columns.jet_btag * 0, "jet_btag")
    fields = columns.fields
    few = ak.zip({k: columns[k][:, :2] if columns[k].ndim > 1 else columns[k] for k in fields}, depth_limit=1)
    for cols in (columns, untagged, few):
        new, old = detector_level(cols), _old_detector_level(cols)
        for name in ("top_pt", "mtt"):
            assert np.isfinite(new[name]).all()
            np.testing.assert_allclose(new[name], old[name], rtol=1e-9, err_msg=name)


def test_detector_level_of_no_events():
    assert {k: v.shape for k, v in detector_level(ak.Array([])).items()} == {"top_pt": (0,), "mtt": (0,)}
