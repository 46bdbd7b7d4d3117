"""posterior_summary: statistics and the highest-density mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hepflow
from hepflow.errors import InputError


def test_statistics_match_numpy():
    rng = np.random.default_rng(0)
    s = rng.normal(loc=[1.0, -2.0], scale=[0.5, 2.0], size=(3, 4000, 2))
    out = hepflow.posterior_summary(s)
    assert out.mean.shape == (3, 2)
    assert np.allclose(out.mean, s.mean(1))
    assert np.allclose(out.median, np.median(s, 1))
    assert np.allclose(out.std, s.std(1, ddof=1))
    assert np.allclose(out.quantiles[0.16], np.quantile(s, 0.16, axis=1))
    assert out.mode is None
    single = hepflow.posterior_summary(torch.as_tensor(s[0]))
    assert single.mean.shape == (2,)
    assert np.allclose(single.mean, s[0].mean(0))


def test_mode_is_highest_log_prob_sample():
    s = np.array([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]])
    lp = np.array([[-3.0, -1.0, np.nan]])
    out = hepflow.posterior_summary(s, log_prob=lp)
    assert np.array_equal(out.mode, [[1.0, 1.0]])
    cols = out.to_dict(["a", "b"])
    assert np.array_equal(cols["b_mode"], [1.0])
    assert set(cols) >= {"a_mean", "a_std", "a_median", "a_q0.025", "a_q0.975", "a_mode"}


def test_mode_from_model_is_near_the_density_peak():
    torch.manual_seed(0)
    n = 3000
    theta = torch.randn(n, 2)
    ctx = theta + 0.3 * torch.randn(n, 2)
    model = hepflow.ConditionalINN(2, 2, depth=2, width=32)
    hepflow.fit(model, theta, ctx, epochs=15, batch_size=64, seed=0)
    obs = torch.tensor([[0.5, -0.5]])
    x, lp = model.sample(4000, obs, return_log_prob=True)
    a = hepflow.posterior_summary(x, log_prob=lp)
    b = hepflow.posterior_summary(x, model=model, context=obs)
    assert np.allclose(a.mode, b.mode)
    # Gaussian posterior: mode = mean
    assert np.abs(a.mode - a.mean).max() < 0.15


def test_input_errors():
    with pytest.raises(InputError, match="shape"):
        hepflow.posterior_summary(np.zeros(5))
    with pytest.raises(InputError, match="log_prob has shape"):
        hepflow.posterior_summary(np.zeros((2, 5, 1)), log_prob=np.zeros((2, 4)))
    with pytest.raises(InputError, match="quantiles"):
        hepflow.posterior_summary(np.zeros((5, 1)), quantiles=(1.5,))


def test_marginal_mode_finds_the_heavier_peak_of_each_marginal():
    rng = np.random.default_rng(3)
    n_obs, n = 20, 2000
    heavy = rng.choice([-4.0, 4.0], size=n_obs)
    comp = rng.random((n_obs, n)) < 0.65
    a = np.where(comp, heavy[:, None], -heavy[:, None]) + rng.normal(0, 0.7, (n_obs, n))
    b = rng.normal(2.0, 0.1, (n_obs, n)) + 5 * rng.random((n_obs, n)) ** 4  # skewed: mode != mean
    s = np.stack([a, b], axis=-1)
    peak = hepflow.inference.summaries.marginal_mode(s)
    assert peak.shape == (n_obs, 2)
    np.testing.assert_allclose(peak[:, 0], heavy, atol=0.35)
    np.testing.assert_allclose(peak[:, 1], 2.0, atol=0.15)
    assert (np.abs(s[..., 1].mean(1) - 2.0) > 0.5).all()  # the mean is far off: the test can fail
    assert ((s == peak[:, None, :]).any(axis=1)).all()  # a peak is always one of the samples
    single = hepflow.inference.summaries.marginal_mode(s[0])
    np.testing.assert_array_equal(single, peak[0])
    summary = hepflow.posterior_summary(s, marginal_modes=True)
    np.testing.assert_array_equal(summary.marginal_mode, peak)
    assert "x_marginal_mode" in summary.to_dict(["x", "y"])


def test_marginal_mode_rejects_bad_input():
    with pytest.raises(InputError, match="shape"):
        hepflow.inference.summaries.marginal_mode(np.zeros((2, 0, 3)))
    with pytest.raises(InputError, match="bandwidth_scale"):
        hepflow.inference.summaries.marginal_mode(np.zeros((2, 5, 3)), bandwidth_scale=0.0)
