"""cINN unfolding: exact bookkeeping for known posteriors, and closure of both methods on a toy
with a small trained flow (a wrong efficiency must break it)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hepflow.errors import InputError
from hepflow.training.config import FitConfig
from hepflow.unfolding import build_response, compare, fake_rate, unfold_ibu
from hepflow.unfolding.binning import histogram
from hepflow.unfolding.cinn import sample_ensemble, train_ensemble, unfold_cinn

EDGES = np.array([30.0, 60.0, 90.0, 130.0, 180.0, 260.0, 400.0])


def _toy(rng, n):
    """x: particle level; y = x smeared; context (log y, noise); efficiency rises with x; fakes."""
    x = 30.0 + rng.gamma(2.0, 40.0, n)
    y = x * (1.0 + 0.12 * rng.standard_normal(n))
    fiducial = rng.random(n) < 0.93
    selected = rng.random(n) < 0.45 + 0.35 * (1.0 - np.exp(-(x - 30.0) / 80.0))
    context = np.stack([np.log(np.abs(y)), rng.standard_normal(n)], axis=1).astype(np.float32)
    return {"x": x, "y": y, "fiducial": fiducial, "selected": selected, "context": context}


def _binned(sim):
    kw = {"passes_truth": sim["fiducial"], "passes_reco": sim["selected"]}
    response = build_response(sim["x"], sim["y"], truth_edges=EDGES, reco_edges=EDGES, **kw)
    return response, fake_rate([sim["y"]], [EDGES], **kw)


def test_delta_posteriors_return_the_truth_exactly():
    rng = np.random.default_rng(0)
    sim = _toy(rng, 5000)
    sim["fiducial"][:] = True  # no fakes: every selected event has its particle level
    response, fakes = _binned(sim)
    sel = sim["selected"]
    samples = np.repeat(sim["x"][sel][None, :, None, None], 8, axis=2)  # (1 member, n, K=8, 1)
    samples = np.concatenate([samples, samples])  # two identical members
    (u,) = unfold_cinn(samples, responses=[response], fake_rate=fakes, reco_values=[sim["y"][sel]], seed=1)
    np.testing.assert_allclose(u.central, response.truth, rtol=1e-12)
    np.testing.assert_allclose(u.components["posterior"], 0.0, atol=1e-9)
    np.testing.assert_allclose(u.components["ensemble"], 0.0, atol=1e-9)
    assert np.all(u.components["data"] > 0)
    assert np.all(u.components["simulation"] > 0)
    with pytest.raises(InputError):
        unfold_cinn(samples[..., [0, 0]], responses=[response], fake_rate=fakes, reco_values=[sim["y"][sel]])


def test_fake_weights_remove_the_fakes_on_average():
    rng = np.random.default_rng(1)
    sim = _toy(rng, 20_000)
    response, fakes = _binned(sim)
    sel = sim["selected"]
    assert (sel & ~sim["fiducial"]).sum() > 500
    samples = np.repeat(sim["y"][sel][None, :, None, None], 2, axis=2)  # any posterior
    (u,) = unfold_cinn(samples, responses=[response], fake_rate=fakes, reco_values=[sim["y"][sel]], seed=2)
    matched = (u.central * response.efficiency).sum()  # before the efficiency correction
    assert matched == pytest.approx((sel & sim["fiducial"]).sum(), rel=1e-9)


def test_closure_of_both_methods_on_a_toy_with_a_trained_flow():
    import hepflow

    rng = np.random.default_rng(5)
    sim, data = _toy(rng, 5000), _toy(rng, 5000)
    response, fakes = _binned(sim)
    both = sim["fiducial"] & sim["selected"]
    models, summaries = train_ensemble(
        lambda seed: hepflow.ConditionalINN(theta_dim=1, context_dim=2, depth=2, width=16, seed=seed),
        np.log(sim["x"][both])[:, None].astype(np.float32),
        {"context": sim["context"][both]},
        fit=FitConfig(epochs=8, batch_size=256, lr=5e-3, patience=8, seed=4),
        members=2,
    )
    assert [s["epochs"] for s in summaries] == [8, 8]
    sel = data["selected"]
    logx = sample_ensemble(models, {"context": data["context"][sel]}, samples=32, seed=3)
    assert logx.shape == (2, sel.sum(), 32, 1)
    assert not np.allclose(logx[0], logx[1])  # bootstrap resamples and seeds differ
    truth, _ = histogram(data["x"][data["fiducial"]], EDGES)

    def cinn(resp):
        (u,) = unfold_cinn(
            np.exp(logx),
            responses=[resp],
            fake_rate=fakes,
            reco_values=[data["y"][sel]],
            bootstrap=50,
            sim_toys=50,
        )
        return compare(u, truth)

    def ibu(resp):
        d, dv = histogram(data["y"][sel], EDGES)
        u, _ = unfold_ibu(d, dv, resp, iterations=4, toys=100)
        return compare(u, truth)

    wrong = replace(response, misses=response.misses + 0.5 * response.matched_truth)  # efficiency too low
    for method in (cinn, ibu):
        good, bad = method(response), method(wrong)
        assert good["chi2_ndf"] < 2.5, (method.__name__, good)
        assert max(abs(p) for p in good["pull"]) < 3.0, (method.__name__, good["pull"])
        assert bad["chi2_ndf"] > 5.0, (method.__name__, bad)
