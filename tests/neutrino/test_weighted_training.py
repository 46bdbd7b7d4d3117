"""The neutrino training with per-event generator weights (a ``weight`` column in the features)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch

import hepflow
from hepflow.config import from_dict
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.data import load_training_data
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES
from hepflow.neutrino.model import build_flow
from hepflow.neutrino.pipeline import train
from hepflow.outputs import write_parquet

TINY = {
    "summary": {"set_width": 16, "set_heads": 2, "flat_embedding": 8, "jet_embedding": 8},
    "flow": {"depth": 2, "width": 16, "bins": 4},
    "regression": {"width": 16, "layers": 1},
    "training": {"epochs": 2, "batch_size": 64, "seed": 3, "device": "cpu"},
}
N = 400


def feature_columns(n: int, seed: int = 0) -> ak.Array:
    """Feature-processor-like columns (flat features, jets, truth) with random values."""
    rng = np.random.default_rng(seed)
    njet = rng.integers(4, 8, n)
    cols: dict[str, object] = {k: rng.normal(size=n).astype(np.float32) for k in FLAT_FEATURES}
    cols["lep_flavor"] = rng.choice([11, 13], n).astype(np.int32)
    cols["njet"] = njet.astype(np.int32)
    cols["nbjet"] = rng.integers(1, 3, n).astype(np.int32)
    for k in JET_FEATURES:
        flat = rng.normal(size=int(njet.sum())).astype(np.float32)
        cols[k] = ak.unflatten((flat > 0).astype(np.int32) if k == "jet_btag" else flat, njet)
    nu_px = cols["met_px"] + 0.3 * rng.normal(size=n).astype(np.float32)
    nu_py = cols["met_py"] + 0.3 * rng.normal(size=n).astype(np.float32)
    nu_eta = rng.normal(size=n).astype(np.float32)
    cols.update(nu_px_true=nu_px, nu_py_true=nu_py, nu_eta_true=nu_eta)
    cols["nu_pz_true"] = (np.hypot(nu_px, nu_py) * np.sinh(nu_eta)).astype(np.float32)
    return ak.Array(cols)


def write_features(directory: Path, weight: np.ndarray | None = None) -> Path:
    """Two parquet chunks of :func:`feature_columns`, with a ``weight`` column when given."""
    cols = feature_columns(N)
    if weight is not None:
        cols = ak.with_field(cols, weight.astype(np.float32), "weight")
    write_parquet(cols[: N // 2], directory / "chunk0.parquet")
    write_parquet(cols[N // 2 :], directory / "chunk1.parquet")
    return directory


def nlo_weights(n: int = N) -> np.ndarray:
    """Unequal weights, 15% of them negative (NLO-like)."""
    rng = np.random.default_rng(7)
    w = rng.uniform(0.5, 1.5, n)
    return np.where(rng.random(n) < 0.15, -w, w)


def test_load_training_data_reads_and_cleans_weights(tmp_path, caplog):
    w = nlo_weights()
    w[[5, 17]] = [np.nan, np.inf]
    write_features(tmp_path / "f", w)
    with caplog.at_level(logging.WARNING, logger="hepflow.neutrino.data"):
        data = load_training_data(tmp_path / "f")
    assert data.n_non_finite == 2
    assert "dropped 2 of 400 events with NaN or inf" in caplog.text
    keep = np.isfinite(w)
    assert data.weights.dtype == np.float64
    np.testing.assert_array_equal(data.weights, w[keep].astype(np.float32))
    assert len(data.weights) == len(data.theta) == N - 2

    write_features(tmp_path / "plain")
    plain = load_training_data(tmp_path / "plain")
    assert plain.weights is None
    assert plain.n_non_finite == 0
    np.testing.assert_array_equal(plain.theta[keep], data.theta)  # the same rows were kept


def test_weighted_training_records_the_weights(tmp_path):
    w = nlo_weights()
    cfg = from_dict(NeutrinoConfig, TINY)
    summary = train(write_features(tmp_path / "w", w), tmp_path / "mw", config=cfg, progress=False)
    w32 = w.astype(np.float32).astype(np.float64)
    info = summary["weights"]
    assert info["used"] is True
    assert info["sum"] == pytest.approx(w32.sum())
    assert info["sum_squares"] == pytest.approx((w32**2).sum())
    assert info["negative"] == int((w < 0).sum()) > 0
    assert json.loads((tmp_path / "mw" / "training.json").read_text())["weights"] == info
    for name in ("flow", "regression"):
        assert summary[name]["epochs"] == 2
        assert math.isfinite(summary[name]["best_val_loss"])

    # the same features without the weight column train unweighted, exactly as hepflow.fit does
    # without weights; the weights changed the training
    plain = train(write_features(tmp_path / "p"), tmp_path / "mp", config=cfg, progress=False)
    assert plain["weights"] == {"used": False}
    hist = json.loads((tmp_path / "mp" / "history_flow" / "history.json").read_text())
    weighted = json.loads((tmp_path / "mw" / "history_flow" / "history.json").read_text())
    assert hist["train_loss"] != weighted["train_loss"]

    data = load_training_data(tmp_path / "p")
    ref = build_flow(cfg.flow, cfg.summary, support=cfg.support, seed=cfg.training.seed)
    h = hepflow.fit(ref, data.theta, data.context, **{**cfg.training.fit_options(), "progress": False})
    assert h.train_loss == hist["train_loss"]
    assert h.val_loss == hist["val_loss"]
    saved = hepflow.load_model(tmp_path / "mp" / "flow")
    for k, v in ref.state_dict().items():
        assert torch.equal(saved.state_dict()[k], v.cpu()), k
