"""Event-record bookkeeping: copies, heavy-flavour hadrons and the pruned GenPart tree."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from hepflow.generate.nanoaod import (
    FROM_HARD_PROCESS,
    GENPART_MOTHER,
    IS_FIRST_COPY,
    IS_HARD_PROCESS,
    IS_LAST_COPY,
    IS_PROMPT,
    EventRecord,
    _heavy_quark_sign,
    hadron_flavour,
)


def _record(rows: list[tuple[int, int, int, int]]) -> EventRecord:
    """One event from (pdgId, status, daughter1, daughter2) rows."""
    pdg, status, d1, d2 = (np.array(c) for c in zip(*rows, strict=True))
    n = len(pdg)
    zeros = np.zeros(n)
    return EventRecord(np.array([0, n]), pdg, status, d1, d2, zeros, zeros, zeros, zeros, zeros)


def test_last_copy_follows_radiation_and_recoil() -> None:
    record = _record(
        [
            (90, -11, 0, 0),
            (6, -22, 3, 3),  # t -> recoil copy
            (21, -51, 0, 0),  # an unrelated gluon
            (6, -52, 4, 5),  # t -> t g (radiation: the copy is the first daughter)
            (6, -62, 6, 7),  # last copy: decays
            (21, 51, 0, 0),
            (24, -22, 0, 0),
            (5, -23, 0, 0),
        ]
    )
    assert record.last_copy(np.array([1, 6, 2])).tolist() == [4, 6, 2]
    assert record.daughter_with(np.array([4]), lambda i: np.abs(i) == 24).tolist() == [6]


def test_hadron_flavour_and_quark_sign() -> None:
    pdg = np.array([521, -521, 5122, -5122, 421, -411, 4122, 541, 553, 211, 2212, 5, 5101, 22])
    flavour = hadron_flavour(pdg)
    assert flavour.tolist() == [5, 5, 5, 5, 4, 4, 4, 5, 5, 0, 0, 0, 0, 0]
    heavy = flavour > 0
    # B+ = u bbar, B- = b ubar, Lambda_b = udb, D0 = c ubar, D- = d cbar, Lambda_c = udc, Bc+ = c bbar
    assert _heavy_quark_sign(pdg[heavy], flavour[heavy]).tolist() == [-1, 1, 1, -1, 1, -1, 1, -1, -1]


@pytest.mark.generation
def test_genpart_tree(ttbar_arrays: ak.Array) -> None:
    a = ttbar_arrays
    assert ak.all(a.nGenPart == len(GENPART_MOTHER))
    np.testing.assert_array_equal(ak.to_numpy(a.GenPart_genPartIdxMother[0]), GENPART_MOTHER)
    pdg = ak.to_numpy(a.GenPart_pdgId)
    np.testing.assert_array_equal(pdg[:, :4], np.tile([6, -6, 24, -24], (len(pdg), 1)))
    # the top's down-type quark: a b, or a d or s at |V_td|^2 + |V_ts|^2 ~ 0.2 % (two of the 700
    # tops of the session's sample); the quark's sign follows the top's
    assert np.all(np.isin(pdg[:, 4], [1, 3, 5]))
    assert np.all(np.isin(pdg[:, 5], [-1, -3, -5]))
    assert np.mean(pdg[:, 4:6] == [5, -5]) > 0.99
    flags = ak.to_numpy(a.GenPart_statusFlags).astype(int)
    assert np.all(flags & IS_PROMPT)
    assert np.all(flags & FROM_HARD_PROCESS)
    assert np.all(flags[:, :4] & IS_LAST_COPY)  # tops and Ws after radiation
    assert np.all(flags[:, 4:6] & IS_FIRST_COPY)  # b quarks as produced
    assert np.all(flags[:, 4:6] & IS_HARD_PROCESS)
    status = ak.to_numpy(a.GenPart_status)
    lepton = (np.abs(pdg) == 11) | (np.abs(pdg) == 13)
    neutrino = (np.abs(pdg) == 12) | (np.abs(pdg) == 14)
    assert np.all(lepton.sum(axis=1) == 1)
    assert np.all(neutrino.sum(axis=1) == 1)
    assert np.all(status[lepton | neutrino] == 1)
    assert np.all(flags[lepton] & IS_LAST_COPY)
    # charge conservation in the W decays: the lepton's W has the lepton's charge sign
    lepton_w = GENPART_MOTHER[np.argmax(lepton, axis=1)]
    assert np.all(np.sign(pdg[np.arange(len(pdg)), lepton_w]) == -np.sign(pdg[lepton]))
    assert np.all(np.isfinite(ak.to_numpy(a.GenPart_eta)))
