"""Property-based tests of the neutrino feature builders on random awkward event structures.

Random numbers of events (including none) and of jets per event (including none and more than
``max_jets``), random kinematics, b-tags and missing truth: the columns, the padded jet tensor and
its mask must be consistent with the input, finite, and independent of the order of events
(and, up to the order of the jet rows, of jets).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hepflow.neutrino.features import (
    FLAT_FEATURES,
    JET_FEATURES,
    build_columns,
    context_arrays,
    finite_events,
    finite_rows,
    truth_array,
)

SETTINGS = settings(max_examples=30, deadline=None)


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def event_inputs(draw: st.DrawFn) -> dict:
    """Keyword arguments of build_columns for 0..6 events with 0..14 jets each."""
    n = draw(st.integers(0, 6))
    counts = np.array(draw(st.lists(st.integers(0, 14), min_size=n, max_size=n)), dtype=np.int64)
    total = int(counts.sum())

    def jagged(lo: float, hi: float) -> ak.Array:
        return ak.unflatten(draw(arrays(np.float64, total, elements=_floats(lo, hi))), counts)

    def flat(lo: float, hi: float) -> np.ndarray:
        return draw(arrays(np.float64, n, elements=_floats(lo, hi)))

    jets = ak.zip(
        {
            "pt": jagged(1.0, 3000.0),
            "eta": jagged(-5.0, 5.0),
            "phi": jagged(-np.pi, np.pi),
            "mass": jagged(0, 200),
        }
    )
    btag = ak.unflatten(
        np.array(draw(st.lists(st.integers(0, 1), min_size=total, max_size=total)), np.int8), counts
    )
    order = ak.argsort(jets.pt, axis=1, ascending=False)  # as the processor passes them
    lepton = ak.zip(
        {
            "pt": flat(1.0, 2000.0),
            "eta": flat(-2.5, 2.5),
            "phi": flat(-np.pi, np.pi),
            "mass": flat(0.0, 0.2),
            "charge": np.array(draw(st.lists(st.sampled_from([-1, 1]), min_size=n, max_size=n)), np.int32),
            "flavor": np.array(draw(st.lists(st.sampled_from([11, 13]), min_size=n, max_size=n)), np.int8),
        }
    )
    has_nu = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    nu = ak.zip({"pt": flat(0.0, 1000.0), "eta": flat(-6.0, 6.0), "phi": flat(-np.pi, np.pi)})
    neutrino = ak.mask(nu, has_nu)
    ids = np.arange(n, dtype=np.uint64)
    return {
        "event_ids": {"run": ids * 0 + 1, "luminosityBlock": ids * 0 + 7, "event": ids},
        "met_pt": flat(0.0, 3000.0),
        "met_phi": flat(-np.pi, np.pi),
        "lepton": lepton,
        "jets": jets[order],
        "jet_btag": btag[order],
        "neutrino": neutrino,
        "max_jets": draw(st.integers(1, 10)),
    }


@SETTINGS
@given(kw=event_inputs(), context_jets=st.integers(1, 12))
def test_columns_and_context_are_consistent(kw, context_jets):
    cols = build_columns(**kw)
    n, counts, max_jets = len(kw["met_pt"]), ak.to_numpy(ak.num(kw["jets"])), kw["max_jets"]
    assert len(cols) == n
    kept = np.minimum(counts, max_jets)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(cols.jet_px)), kept)
    np.testing.assert_array_equal(ak.to_numpy(cols.njet), counts)  # all selected jets, not the kept
    np.testing.assert_array_equal(ak.to_numpy(cols.nbjet), ak.to_numpy(ak.sum(kw["jet_btag"], axis=1)))
    lead = kw["jets"][:, :max_jets]
    np.testing.assert_allclose(
        ak.to_numpy(ak.flatten(cols.jet_px)),
        ak.to_numpy(ak.flatten(lead.pt * np.cos(lead.phi))),
        rtol=2e-6,
        atol=1e-3,
    )
    assert finite_rows(cols).all()  # finite inputs give finite features; missing truth is None
    np.testing.assert_array_equal(
        ak.to_numpy(ak.is_none(cols.nu_px_true)), ak.to_numpy(ak.is_none(kw["neutrino"]))
    )
    truth = truth_array(cols)
    assert np.isnan(truth).any(axis=1).sum() == int(ak.sum(ak.is_none(kw["neutrino"])))

    ctx = context_arrays(cols, max_jets=context_jets)
    assert ctx["flat"].shape == (n, len(FLAT_FEATURES))
    assert ctx["flat"].dtype == np.float32
    assert ctx["jets"].shape == (n, context_jets, len(JET_FEATURES))
    assert ctx["mask"].shape == (n, context_jets)
    assert ctx["mask"].dtype == bool
    used = np.minimum(kept, context_jets)
    np.testing.assert_array_equal(ctx["mask"].sum(axis=1), used)
    assert (ctx["mask"][:, :-1] >= ctx["mask"][:, 1:]).all()  # real jets first, then padding
    assert (ctx["jets"][~ctx["mask"]] == 0).all()
    for i, name in enumerate(JET_FEATURES):
        expected = ak.to_numpy(ak.flatten(cols[name][:, :context_jets])).astype(np.float32)
        np.testing.assert_array_equal(ctx["jets"][..., i][ctx["mask"]], expected)
    for i, name in enumerate(FLAT_FEATURES):
        np.testing.assert_array_equal(ctx["flat"][:, i], ak.to_numpy(cols[name]).astype(np.float32))
    for v in ctx.values():
        assert np.isfinite(v).all()


@SETTINGS
@given(kw=event_inputs(), seed=st.integers(0, 2**32 - 1))
def test_event_and_jet_order(kw, seed):
    """Rows follow the events; jet permutations change only the order of the jet rows."""
    rng = np.random.default_rng(seed)
    n = len(kw["met_pt"])
    cols = build_columns(**kw)
    ctx = context_arrays(cols)
    perm = rng.permutation(n)
    shuffled = dict(kw)
    for key in ("met_pt", "met_phi", "lepton", "jets", "jet_btag", "neutrino"):
        shuffled[key] = kw[key][perm]
    shuffled["event_ids"] = {k: v[perm] for k, v in kw["event_ids"].items()}
    ctx_p = context_arrays(build_columns(**shuffled))
    for key in ctx:
        np.testing.assert_array_equal(ctx_p[key], ctx[key][perm])

    # permute jets inside each event; with every jet kept the jet set is the same
    if n == 0:
        return
    local = ak.local_index(kw["jets"].pt)
    order = ak.argsort(ak.unflatten(rng.random(int(ak.sum(ak.num(local)))), ak.num(local)), axis=1)
    jetperm = dict(kw, jets=kw["jets"][order], jet_btag=kw["jet_btag"][order], max_jets=20)
    ref = context_arrays(build_columns(**dict(kw, max_jets=20)), max_jets=20)
    per = context_arrays(build_columns(**jetperm), max_jets=20)
    np.testing.assert_array_equal(per["flat"], ref["flat"])  # njet, nbjet, MET, lepton
    np.testing.assert_array_equal(per["mask"], ref["mask"])
    for i in range(n):
        k = int(ref["mask"][i].sum())
        a = ref["jets"][i, :k]
        b = per["jets"][i, :k]
        np.testing.assert_array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])


@SETTINGS
@given(
    counts=st.lists(st.integers(0, 5), min_size=0, max_size=8),
    data=st.data(),
)
def test_finite_events_matches_a_loop(counts, data):
    total = sum(counts)
    values = data.draw(
        arrays(np.float64, total, elements=st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, -np.inf]))
    )
    flat = data.draw(arrays(np.float64, len(counts), elements=st.sampled_from([0.0, 3.0, np.nan, np.inf])))
    missing = data.draw(st.lists(st.booleans(), min_size=len(counts), max_size=len(counts)))
    jagged = ak.unflatten(values, np.array(counts, dtype=np.int64))
    optional = ak.mask(ak.Array(flat), ~np.array(missing, bool)) if counts else ak.Array(flat)
    got = finite_events(jagged, optional)
    start, expected = 0, []
    for k, f, m in zip(counts, flat, missing, strict=True):
        expected.append(bool(np.isfinite(values[start : start + k]).all() and (m or np.isfinite(f))))
        start += k
    assert got.dtype == bool
    assert got.tolist() == expected


def _old_formulas(kw: dict) -> dict:
    """The hand-written kinematics build_columns used before the NanoEvents behaviours."""
    lep, lead, nu = kw["lepton"], kw["jets"][:, : kw["max_jets"]], kw["neutrino"]
    lep_px, lep_py, lep_pz = lep.pt * np.cos(lep.phi), lep.pt * np.sin(lep.phi), lep.pt * np.sinh(lep.eta)
    lep_e = np.sqrt(lep_px**2 + lep_py**2 + lep_pz**2 + lep.mass**2)
    return {
        "met_px": kw["met_pt"] * np.cos(kw["met_phi"]),
        "met_py": kw["met_pt"] * np.sin(kw["met_phi"]),
        "lep_px": lep_px,
        "lep_py": lep_py,
        "lep_pz": lep_pz,
        "lep_e": lep_e,
        "lep_loge": np.log(lep_e),
        "jet_px": lead.pt * np.cos(lead.phi),
        "jet_py": lead.pt * np.sin(lead.phi),
        "jet_loge": np.log(np.sqrt((lead.pt * np.cosh(lead.eta)) ** 2 + lead.mass**2)),
        "nu_px_true": nu.pt * np.cos(nu.phi),
        "nu_py_true": nu.pt * np.sin(nu.phi),
        "nu_pz_true": nu.pt * np.sinh(nu.eta),
    }


@SETTINGS
@given(kw=event_inputs())
def test_behaviour_kinematics_equal_the_old_formulas(kw):
    """px, py, pz and E through coffea's vector behaviours equal the old trigonometry (float32)."""
    cols = build_columns(**kw)
    for name, formula in _old_formulas(kw).items():

        def values(column: ak.Array) -> np.ndarray:
            flat = ak.flatten(column) if column.ndim > 1 else column
            return ak.to_numpy(ak.fill_none(flat, np.nan)).astype(np.float32)

        np.testing.assert_allclose(values(cols[name]), values(formula), rtol=2e-6, atol=1e-4, err_msg=name)
