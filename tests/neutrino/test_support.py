"""The neutrino's bounded support ([support]): physical samples, -inf outside, saved and checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hepflow.config import from_dict
from hepflow.errors import ConfigError, ModelError
from hepflow.neutrino.config import NeutrinoConfig, SupportConfig
from hepflow.neutrino.data import TrainingData
from hepflow.neutrino.features import FLAT_FEATURES, context_arrays
from hepflow.neutrino.model import load_models, neutrino_pz
from hepflow.neutrino.pipeline import _inside_support
from hepflow.outputs import read_parquet_dir

BEAM = 6500.0


@pytest.fixture(scope="module")
def context(tiny_models: Path) -> dict[str, np.ndarray]:
    """The 104 selected events the tiny models were trained on, and the same events made extreme:
    MET of 2 TeV, and every momentum scaled by 20."""
    ctx = context_arrays(read_parquet_dir(tiny_models.parent / "features"))
    met = ctx["flat"].copy()
    met[:, FLAT_FEATURES.index("met_px")] = 2000.0
    met[:, FLAT_FEATURES.index("met_py")] = 0.0
    scaled = ctx["flat"].copy()
    for i, name in enumerate(FLAT_FEATURES):
        if name.endswith(("_px", "_py", "_pz")):
            scaled[:, i] *= 20.0
    jets = ctx["jets"].copy()
    jets[..., :2] *= 20.0
    return {
        "flat": np.concatenate([ctx["flat"], met, scaled]),
        "jets": np.concatenate([ctx["jets"], ctx["jets"], jets]),
        "mask": np.concatenate([ctx["mask"]] * 3),
    }


def test_the_shipped_config_bounds_the_flow(tiny_models: Path) -> None:
    shipped = NeutrinoConfig.from_file().support
    assert (shipped.enabled, shipped.pt_max, shipped.pz_max) == (True, 2000.0, 5000.0)
    assert NeutrinoConfig().support == shipped  # the dataclass defaults (the tiny models') too
    meta = json.loads((tiny_models / "flow" / "config.json").read_text())
    assert meta["metadata"]["support"] == {"enabled": True, "pt_max": 2000.0, "pz_max": 5000.0}
    assert meta["config"]["constraints"] == [
        {"type": "MomentumBound", "dims": [0, 1, 2], "pt_max": 2000.0, "pz_max": 5000.0}
    ]


def test_samples_are_physical_even_for_extreme_events(tiny_models: Path, context) -> None:
    """No sample beyond the bounds or the beam energy, for the training events and for events with
    a MET of 2 TeV or all momenta x20, far outside what the model saw."""
    flow, _ = load_models(tiny_models)
    gen = torch.Generator().manual_seed(0)
    theta, _ = flow.sample_context(512, {k: torch.as_tensor(v) for k, v in context.items()}, generator=gen)
    assert theta.shape == (312, 512, 3)
    assert np.isfinite(theta).all()
    px, py, eta = np.moveaxis(theta.astype(np.float32), -1, 0)
    pz = neutrino_pz(px, py, eta)
    assert np.abs(px).max() < 2000
    assert np.abs(py).max() < 2000
    assert np.abs(pz).max() < 5000 < BEAM
    assert np.hypot(np.hypot(px, py), pz).max() < BEAM  # the energy too
    assert np.abs(pz[208:]).max() > 1000  # the extreme events do push the samples out


def test_log_prob_outside_the_support_is_minus_inf(tiny_models: Path, context) -> None:
    flow, _ = load_models(tiny_models)
    ctx = {k: torch.as_tensor(v[:3]) for k, v in context.items()}
    theta = torch.tensor(
        [
            [30.0, -20.0, 0.5],  # inside
            [30.0, 0.0, np.arcsinh(5001.0 / 30.0)],  # pz = 5001 GeV
            [2500.0, 0.0, 0.0],  # px beyond 2 TeV
        ]
    )
    with torch.no_grad():
        lp = flow.model.log_prob(theta, ctx)
    assert np.isfinite(float(lp[0]))
    assert lp[1:].tolist() == [-np.inf, -np.inf]


def test_save_and_load_keep_the_support(tiny_models: Path, context, tmp_path: Path) -> None:
    import hepflow

    flow, _ = load_models(tiny_models)
    hepflow.save_model(flow.model, tmp_path / "flow", metadata=flow.model.metadata)
    again = hepflow.load_model(tmp_path / "flow")
    assert again.support.constraints[0].config() == flow.model.support.constraints[0].config()
    ctx = {k: torch.as_tensor(v[:8]) for k, v in context.items()}
    theta = torch.tensor([[40.0, 10.0, 1.0]]).repeat(8, 1)
    with torch.no_grad():
        assert torch.equal(again.log_prob(theta, ctx), flow.model.log_prob(theta, ctx))


def _edit_flow_config(models: Path, edit) -> None:
    path = models / "flow" / "config.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_a_flow_that_lost_its_support_is_refused(tiny_models: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    _edit_flow_config(models, lambda doc: doc["config"]["constraints"][0].update(pz_max=9000.0))
    with pytest.raises(ModelError) as err:
        load_models(models)
    assert str(err.value) == (
        f"{models / 'flow'}: its metadata records [support] {{'enabled': True, 'pt_max': 2000.0, "
        "'pz_max': 5000.0}, its flow has {'enabled': True, 'pt_max': 2000.0, 'pz_max': 9000.0}: "
        "the model files do not belong together, train it again"
    )


def test_an_older_model_without_support_loads_unbounded(tiny_models: Path, context, tmp_path: Path) -> None:
    """A flow saved before [support] existed (no constraint, no ``support`` in its metadata) loads
    and samples as it did: unbounded."""
    import hepflow
    from hepflow.neutrino.data import load_training_data
    from hepflow.neutrino.model import build_flow
    from tests.conftest import TINY_NEUTRINO

    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    cfg = from_dict(NeutrinoConfig, TINY_NEUTRINO)
    old = build_flow(cfg.flow, cfg.summary, seed=3)  # as before: no support
    data = load_training_data(tiny_models.parent / "features")
    old.prepare(data.theta, data.context)
    metadata = json.loads((tiny_models / "flow" / "config.json").read_text())["metadata"]
    del metadata["support"]
    hepflow.save_model(old, models / "flow", metadata=metadata, overwrite=True)
    flow, _ = load_models(models)
    assert not flow.model.support.active
    gen = torch.Generator().manual_seed(0)
    theta, _ = flow.sample_context(64, {k: torch.as_tensor(v) for k, v in context.items()}, generator=gen)
    assert np.isfinite(theta).all()


def test_training_events_outside_the_support_are_dropped_and_counted() -> None:
    theta = np.array([[30.0, 10.0, 0.1], [30.0, 10.0, 6.0], [2500.0, 0.0, 0.0], [5.0, 5.0, -2.0]], np.float32)
    data = TrainingData(
        theta=theta,
        context={"flat": np.arange(4.0)[:, None]},
        n_read=4,
        n_missing_truth=0,
        n_non_finite=0,
        weights=np.array([1.0, 2.0, 3.0, 4.0]),
    )
    kept, outside = _inside_support(data, SupportConfig(), "features")
    assert outside == 2  # pz = 31.6 sinh(6) = 6376 GeV, and px = 2.5 TeV
    assert kept.theta.tolist() == theta[[0, 3]].tolist()
    assert kept.context["flat"][:, 0].tolist() == [0.0, 3.0]
    assert kept.weights.tolist() == [1.0, 4.0]
    assert _inside_support(data, SupportConfig(enabled=False), "features") == (data, 0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"pz_max": 7000.0},
            "config [support].pz_max: expected a number in (0, 6500] GeV (the beam energy), got 7000.0",
        ),
        (
            {"pt_max": -1.0},
            "config [support].pt_max: expected a number in (0, 6500] GeV (the beam energy), got -1.0",
        ),
    ],
)
def test_bounds_beyond_the_beam_energy_are_refused(table, message) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(NeutrinoConfig, {"support": table})
    assert str(err.value) == message


def test_the_support_benchmark_counts_neutrinos_outside(
    nano_v12: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """benchmarks/neutrino_support.py (the numbers of docs/training.md): on the CMS sample every W
    neutrino is inside; a tighter support counts those beyond it, as MomentumBound decides."""
    from tests.conftest import load_benchmark

    bench = load_benchmark("neutrino_support")
    nu = bench.truth_neutrinos(nano_v12)
    assert len(nu["pt"]) >= 98  # the semileptonic events with a W neutrino (tiny_models: 98 of 104 rows)
    np.testing.assert_allclose(np.hypot(nu["px"], nu["py"]), nu["pt"])
    table = bench.main([str(nano_v12)])
    assert (table["outside"], table["neutrinos"]) == (0, len(nu["pt"]))
    assert table["upper_limit_95"] == pytest.approx(3.0 / len(nu["pt"]))
    assert "outside [support] (|px|, |py| < 2000, |pz| < 5000 GeV): 0 = 0.00e+00" in capsys.readouterr().out
    tight = bench.support_table(nu, pt_max=2000.0, pz_max=100.0)
    assert tight["outside"] == int((np.abs(nu["pz"]) >= 100.0).sum()) > 0
    assert tight["upper_limit_95"] is None
    assert tight["tails"]["abs_pz"]["max"] == pytest.approx(np.abs(nu["pz"]).max())
