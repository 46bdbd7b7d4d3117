"""The same seed gives the same posterior samples (model level and the inference processor).

Same-seed generated events: tests/generate/test_ttbar.py::test_same_seed_same_file and
tests/cosmic_pipeline/test_generate.py; same-seed trained weights:
tests/training/test_fit.py::test_same_seed_same_weights and, across a SIGKILL,
tests/reliability/test_kill.py.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import torch

import hepflow
from hepflow.neutrino.inference_processor import NeutrinoInferenceProcessor
from hepflow.outputs import read_parquet_dir
from hepflow.processing import RunConfig, build_fileset, run_processor


def _trained(tmp_path):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(600, 2, generator=g)
    ctx = theta + 0.5 * torch.randn(600, 2, generator=g)
    model = hepflow.ConditionalINN(2, 2, depth=2, width=16, blocks="spline", seed=0)
    hepflow.fit(model, theta, ctx, epochs=1, seed=1, progress=False)
    hepflow.save_model(model, tmp_path / "model")
    return model, ctx[:5]


def test_same_generator_seed_same_posterior_samples(tmp_path):
    model, obs = _trained(tmp_path)

    def draw(m, seed):
        return m.sample(64, obs, return_log_prob=True, generator=torch.Generator().manual_seed(seed))

    a, lp_a = draw(model, 7)
    b, lp_b = draw(model, 7)
    assert torch.equal(a, b)
    assert torch.equal(lp_a, lp_b)
    c, _ = draw(model, 8)
    assert not torch.equal(a, c)
    # a fresh process would load the model from disk: the same samples
    loaded = hepflow.load_model(tmp_path / "model")
    d, lp_d = draw(loaded, 7)
    assert torch.equal(a, d)
    assert torch.equal(lp_a, lp_d)
    # the caller's global generator state plays no role
    torch.manual_seed(123)
    e, _ = draw(model, 7)
    assert torch.equal(a, e)


def test_inference_processor_same_seed_same_columns(nano_v12, tiny_models, tmp_path):
    def run(name, seed):
        proc = NeutrinoInferenceProcessor(tiny_models, samples=16, seed=seed)
        run_processor(proc, build_fileset([nano_v12]), tmp_path / name, RunConfig(progress=False))
        return read_parquet_dir(tmp_path / name)

    a, b, c = run("a", 7), run("b", 7), run("c", 8)
    assert len(a) > 0
    for name in ("flow_px", "flow_pz", "flow_pz_mode", "flow_pz_std", "ff_pz", "mw_flow"):
        np.testing.assert_array_equal(
            ak.to_numpy(ak.flatten(a[name], axis=None)), ak.to_numpy(ak.flatten(b[name], axis=None))
        )
    assert not np.array_equal(ak.to_numpy(a.flow_pz), ak.to_numpy(c.flow_pz))
    np.testing.assert_array_equal(ak.to_numpy(a.ff_pz), ak.to_numpy(c.ff_pz))  # the regression has no noise


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, value in a.items():
        assert torch.equal(value, b[k]), k


def test_analysis_models_depend_on_the_seed_only():
    """The analyses build their summary networks outside ConditionalINN: the seed covers them too,
    whatever the global generator did before."""
    from hepflow.cosmic.config import load_config
    from hepflow.cosmic.network import build_flow
    from hepflow.neutrino import model as neutrino
    from hepflow.neutrino.config import NeutrinoConfig

    nu = NeutrinoConfig.from_file()
    co = load_config(None)
    builders = {
        "neutrino flow": lambda seed: neutrino.build_flow(nu.flow, nu.summary, seed=seed),
        "neutrino regression": lambda seed: neutrino.build_regression(nu.regression, nu.summary, seed=seed),
        "cosmic flow": lambda seed: build_flow(
            co.flow, prior=co.prior.build(), binning=co.model.binning(), seed=seed
        ),
    }
    for build in builders.values():
        torch.manual_seed(1)
        first = _state(build(5))
        torch.manual_seed(2)  # another global state must not matter
        _assert_same(first, _state(build(5)))
        other = _state(build(6))
        summary = [k for k in first if ".summary." in k]
        assert summary  # the summary network's weights are covered by the comparison
        assert any(not torch.equal(first[k], other[k]) for k in summary)  # and do depend on the seed
