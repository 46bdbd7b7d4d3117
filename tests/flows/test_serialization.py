"""save_model / load_model: exact round trips and clear errors for damaged files."""

from __future__ import annotations

import json

import pytest
import torch

import hepflow
from hepflow.errors import ModelError
from hepflow.flows import Box, CNNSummary, Combined, Regressor, SetSummary, Simplex
from hepflow.flows.serialization import CONFIG_NAME, WEIGHTS_NAME, read_config


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    theta = torch.cat([torch.rand(300, 1), torch.distributions.Dirichlet(torch.ones(3)).sample((300,))], 1)
    ctx = torch.randn(300, 3)
    ctx[:, 2] = torch.randint(0, 5, (300,)).float()
    model = hepflow.ConditionalINN(
        4, 3, depth=2, width=16, constraints=[Box([0], low=0.0, high=1.0), Simplex([1, 2, 3])], dequantize=[2]
    )
    hepflow.fit(model, theta, ctx, epochs=1, seed=0)
    return model, theta, ctx


def test_roundtrip_identical_log_prob_and_metadata(trained, tmp_path):
    model, theta, ctx = trained
    path = hepflow.save_model(
        model, tmp_path / "m", metadata={"analysis": "ttbar", "features": ["a", "b", "c"]}
    )
    assert (path / WEIGHTS_NAME).is_file()
    assert (path / CONFIG_NAME).is_file()
    loaded = hepflow.load_model(path)
    assert torch.equal(model.log_prob(theta, ctx), loaded.log_prob(theta, ctx))
    noise = torch.randn(3, 5, model.latent_dim)
    assert torch.equal(model.transform_noise(noise, ctx[:3]), loaded.transform_noise(noise, ctx[:3]))
    summary = loaded.metadata.pop("training_summary")  # recorded by fit (hepflow.posterior.shift)
    assert loaded.metadata == {"analysis": "ttbar", "features": ["a", "b", "c"]}
    assert summary["events"] == 300
    assert sorted(summary["features"]) == ["context[0]", "context[1]", "context[2]"]
    doc = read_config(path)
    assert doc["format_version"] == 1
    assert doc["class"] == "ConditionalINN"
    assert not loaded.training


def test_roundtrip_structured_context(tmp_path):
    torch.manual_seed(0)
    summary = Combined(jets=SetSummary(3, 8, width=16, heads=2), hist=CNNSummary((12,), 4, channels=(2,)))
    model = hepflow.ConditionalINN(2, summary=summary, depth=1, width=8, blocks="affine").eval()
    ctx = {"jets": torch.randn(4, 5, 3), "mask": torch.rand(4, 5) > 0.5, "hist": torch.rand(4, 12)}
    theta = torch.randn(4, 2)
    loaded = hepflow.load_model(hepflow.save_model(model, tmp_path / "m"))
    assert torch.equal(model.log_prob(theta, ctx), loaded.log_prob(theta, ctx))


def test_roundtrip_regressor(tmp_path):
    reg = Regressor(2, 3, width=8).eval()
    ctx = torch.randn(5, 3)
    loaded = hepflow.load_model(hepflow.save_model(reg, tmp_path / "r"))
    assert torch.equal(reg.predict(ctx), loaded.predict(ctx))


def test_truncated_weights(trained, tmp_path):
    path = hepflow.save_model(trained[0], tmp_path / "m")
    data = (path / WEIGHTS_NAME).read_bytes()
    (path / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or modified"):
        hepflow.load_model(path)


def test_truncated_weights_with_matching_checksum(trained, tmp_path):
    # even if someone updates the checksum, a truncated safetensors file is reported clearly
    import hashlib

    path = hepflow.save_model(trained[0], tmp_path / "m")
    data = (path / WEIGHTS_NAME).read_bytes()[:-100]
    (path / WEIGHTS_NAME).write_bytes(data)
    doc = json.loads((path / CONFIG_NAME).read_text())
    doc["sha256"] = hashlib.sha256(data).hexdigest()
    (path / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="cannot read"):
        hepflow.load_model(path)


def test_tampered_weights(trained, tmp_path):
    path = hepflow.save_model(trained[0], tmp_path / "m")
    data = bytearray((path / WEIGHTS_NAME).read_bytes())
    data[-10] ^= 0xFF
    (path / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        hepflow.load_model(path)


def test_wrong_version(trained, tmp_path):
    path = hepflow.save_model(trained[0], tmp_path / "m")
    doc = json.loads((path / CONFIG_NAME).read_text())
    doc["format_version"] = 99
    (path / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="format_version 99"):
        hepflow.load_model(path)


def test_mismatched_config(trained, tmp_path):
    path = hepflow.save_model(trained[0], tmp_path / "m")
    doc = json.loads((path / CONFIG_NAME).read_text())
    doc["config"]["width"] = 32
    (path / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="do not match the config"):
        hepflow.load_model(path)
    doc["config"]["blocks"] = "glow"
    (path / CONFIG_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="invalid"):
        hepflow.load_model(path)


def test_broken_or_missing_files(tmp_path):
    with pytest.raises(ModelError, match="missing"):
        hepflow.load_model(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        hepflow.load_model(tmp_path / "bad")


def test_unregistered_summary_cannot_be_saved(tmp_path):
    from hepflow.flows.summary import Summary

    class Custom(Summary):
        def __init__(self):
            super().__init__()
            self.key, self.output_dim = "context", 2
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, ctx):
            return self.lin(ctx["context"])

        def example(self, batch=2):
            return {"context": torch.zeros(batch, 2)}

    model = hepflow.ConditionalINN(2, summary=Custom(), depth=1, width=8)
    with pytest.raises(ModelError, match="register"):
        hepflow.save_model(model, tmp_path / "m")
