"""Response matrix, efficiency, fake rates, binning helpers and the result comparison."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from hepflow.errors import ConfigError, InputError
from hepflow.unfolding import Response, Unfolded, build_response, compare, fake_rate
from hepflow.unfolding.binning import bin_index, check_edges, histogram, poisson_fluctuate

EDGES = [0.0, 1.0, 2.0, 3.0]


def _events():
    # particle, detector, passes particle, passes detector, weight
    rows = [
        (0.5, 0.5, True, True, 1.0),
        (0.5, 1.5, True, True, 2.0),  # migrates 0 -> 1
        (1.5, 1.5, True, True, 1.0),
        (2.5, 2.5, True, True, 1.0),
        (2.5, np.nan, True, False, 1.0),  # miss
        (1.5, np.nan, True, False, 3.0),  # miss
        (np.nan, 0.5, False, True, 1.0),  # fake
        (9.0, 2.5, False, True, 1.0),  # fake (particle level outside the fiducial region)
        (-4.0, 7.0, True, True, 1.0),  # tails: particle into bin 0, detector into bin 2
    ]
    t, r, pt, pr, w = (np.array(c) for c in zip(*rows, strict=True))
    return t.astype(float), r.astype(float), pt.astype(bool), pr.astype(bool), w.astype(float)


def test_response_counts_by_hand():
    t, r, pt, pr, w = _events()
    resp = build_response(
        t, r, truth_edges=EDGES, reco_edges=EDGES, passes_truth=pt, passes_reco=pr, weights=w
    )
    np.testing.assert_allclose(resp.migration, [[1, 0, 0], [2, 1, 0], [1, 0, 1]])
    np.testing.assert_allclose(resp.migration_var, [[1, 0, 0], [4, 1, 0], [1, 0, 1]])
    np.testing.assert_allclose(resp.misses, [0, 3, 1])
    np.testing.assert_allclose(resp.fakes, [1, 0, 1])
    np.testing.assert_allclose(resp.truth, [4, 4, 2])
    np.testing.assert_allclose(resp.efficiency, [1.0, 0.25, 0.5])
    np.testing.assert_allclose(resp.fake_fraction, [0.5, 0.0, 1 / 3])
    np.testing.assert_allclose(resp.matrix.sum(axis=0), resp.efficiency)
    np.testing.assert_allclose(resp.reco, [2, 3, 3])


def test_response_from_hists_and_refusals():
    t, r, pt, pr, _w = _events()
    with pytest.raises(InputError, match="non-finite"):
        build_response(
            t, r, truth_edges=EDGES, reco_edges=EDGES, passes_truth=np.ones(len(t), bool), passes_reco=pr
        )
    with pytest.raises(InputError, match="booleans"):
        build_response(t, r, truth_edges=EDGES, reco_edges=EDGES, passes_truth=pt.astype(int), passes_reco=pr)
    with pytest.raises(ConfigError, match="increasing"):
        build_response(t, r, truth_edges=[0, 2, 1], reco_edges=EDGES, passes_truth=pt, passes_reco=pr)
    axis = hist.axis.Variable(EDGES, underflow=False, overflow=False)
    other = hist.axis.Variable([0, 1, 2], underflow=False, overflow=False)
    mig = hist.Hist(axis, axis, storage=hist.storage.Weight())
    with pytest.raises(InputError, match="different bins"):
        Response.from_hists(mig, hist.Hist(other, storage=hist.storage.Weight()), hist.Hist(axis))
    plain = Response.from_hists(mig, hist.Hist(axis), hist.Hist(axis))  # Double storage: var = value
    assert plain.migration.shape == (3, 3)


def test_fluctuations_keep_mean_and_poisson_variance():
    rng = np.random.default_rng(4)
    sumw = np.array([0.0, 4.0, 100.0])
    reps = np.stack([poisson_fluctuate(sumw, sumw, rng) for _ in range(4000)])
    np.testing.assert_allclose(reps.mean(axis=0), sumw, rtol=0.02, atol=1e-12)
    np.testing.assert_allclose(reps.var(axis=0), sumw, rtol=0.1, atol=1e-12)
    # weighted: 25 events of weight 2 -> sum 50, variance 100
    weighted = np.stack([poisson_fluctuate(np.array([50.0]), np.array([100.0]), rng) for _ in range(4000)])
    assert weighted.mean() == pytest.approx(50.0, rel=0.02)
    assert weighted.var() == pytest.approx(100.0, rel=0.1)
    t, r, pt, pr, _w = _events()
    resp = build_response(t, r, truth_edges=EDGES, reco_edges=EDGES, passes_truth=pt, passes_reco=pr)
    toy = resp.fluctuate(rng)
    assert toy.migration.shape == resp.migration.shape
    assert not np.array_equal(toy.migration, resp.migration)


def test_fake_rate_in_two_dimensions():
    rng = np.random.default_rng(0)
    n = 20_000
    a, b = rng.uniform(0, 2, n), rng.uniform(0, 2, n)
    truth_prob = np.where((a > 1) & (b > 1), 0.6, 0.95)  # fakes concentrate in one corner
    passes_truth = rng.random(n) < truth_prob
    fr = fake_rate([a, b], [[0, 1, 2], [0, 1, 2]], passes_truth=passes_truth, passes_reco=np.ones(n, bool))
    np.testing.assert_allclose(fr.fraction, [[0.05, 0.05], [0.05, 0.4]], atol=0.02)
    looked_up = fr.lookup([np.array([0.5, 1.5]), np.array([1.5, 1.5])])
    np.testing.assert_allclose(looked_up, [fr.fraction[0, 1], fr.fraction[1, 1]])
    with pytest.raises(InputError):
        fr.lookup([a])
    assert fr.fluctuate(rng).fraction.shape == (2, 2)


def test_binning_helpers():
    edges = check_edges([0, 10, 20], "x")
    np.testing.assert_array_equal(bin_index(np.array([-1.0, 0.0, 9.99, 10.0, 25.0]), edges), [0, 0, 0, 1, 1])
    with pytest.raises(InputError):
        bin_index(np.array([np.nan]), edges)
    with pytest.raises(ConfigError):
        check_edges([1.0], "x")
    sumw, sumw2 = histogram(np.array([1.0, 15.0, 99.0]), edges, weights=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(sumw, [1, 5])
    np.testing.assert_allclose(sumw2, [1, 13])


def test_compare_pulls_and_chi2():
    u = Unfolded(np.array([110.0, 90.0]), np.array([[100.0, 0.0], [0.0, 100.0]]), {})
    c = compare(u, np.array([100.0, 100.0]))
    assert c["pull"] == [1.0, -1.0]
    assert c["chi2"] == pytest.approx(2.0)
    assert c["relative_bias"] == [0.1, -0.1]
    # correlated uncertainties: a common shift is cheap, an anti-correlated one expensive
    corr = Unfolded(u.central, np.array([[100.0, 90.0], [90.0, 100.0]]), {})
    assert compare(corr, np.array([100.0, 100.0]))["chi2"] > 10
    assert compare(corr, np.array([100.0, 80.0]))["chi2"] < 2
    with pytest.raises(InputError):
        compare(u, np.array([1.0]))
    assert Unfolded.from_dict(u.to_dict()).central.tolist() == u.central.tolist()
