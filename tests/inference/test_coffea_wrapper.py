"""Posterior samples inside a user's coffea processor through coffea.ml_tools.torch_wrapper."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch

import hepflow
from hepflow.flows.summary import Combined, MLPSummary, SetSummary
from hepflow.inference.coffea import PosteriorSampler
from hepflow.inference.export import Sampler, export_torchscript
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES


@pytest.fixture(scope="module")
def model():
    summary = Combined(
        flat=MLPSummary(len(FLAT_FEATURES), 8, width=16),
        jets=SetSummary(len(JET_FEATURES), 8, width=16, heads=2),
    )
    m = hepflow.ConditionalINN(theta_dim=3, summary=summary, depth=2, width=16, seed=0)
    return m.eval()


def _context(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    counts = rng.integers(0, 11, n)
    return {
        "flat": rng.normal(size=(n, len(FLAT_FEATURES))).astype(np.float32),
        "jets": rng.normal(size=(n, 10, len(JET_FEATURES))).astype(np.float32),
        "mask": np.arange(10)[None, :] < counts[:, None],
    }


def test_wrapper_matches_eager_sampler(model, tmp_path):
    path = export_torchscript(model, tmp_path / "sampler.pt")
    wrapper = PosteriorSampler(str(path), samples=16, latent_dim=model.latent_dim, seed=4)
    ctx = _context(25, np.random.default_rng(1))
    out = wrapper(*(ak.Array(ctx[k]) for k in ("flat", "jets", "mask")))
    assert out.type.length == 25
    got = ak.to_numpy(out)
    assert got.shape == (25, 16, 3)
    noise = torch.as_tensor(np.random.default_rng(4).standard_normal((25, 16, 3)).astype(np.float32))
    with torch.no_grad():
        eager = Sampler(model)(*(torch.as_tensor(ctx[k]) for k in ("flat", "jets", "mask")), noise)
    np.testing.assert_allclose(got, eager.numpy(), atol=1e-5)


def test_wrapper_handles_empty_chunks(model, tmp_path):
    path = export_torchscript(model, tmp_path / "sampler.pt")
    wrapper = PosteriorSampler(str(path), samples=4, latent_dim=model.latent_dim)
    ctx = _context(0, np.random.default_rng(0))
    out = wrapper(*(ak.Array(ctx[k]) for k in ("flat", "jets", "mask")))
    assert len(out) == 0
