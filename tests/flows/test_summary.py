"""Summary networks: set encoder invariances, CNNs, combined contexts."""

from __future__ import annotations

import pytest
import torch

from hepflow.errors import ConfigError
from hepflow.flows import CNNSummary, Combined, IdentitySummary, MLPSummary, SetSummary
from hepflow.flows.summary import summary_from_config


@pytest.fixture
def set_encoder():
    torch.manual_seed(0)
    return SetSummary(4, 8, width=16, heads=2, blocks=2).eval()


def test_set_summary_is_permutation_invariant(set_encoder):
    jets, mask = torch.randn(6, 10, 4), torch.rand(6, 10) > 0.4
    out = set_encoder({"jets": jets, "mask": mask})
    perm = torch.randperm(10)
    out_perm = set_encoder({"jets": jets[:, perm], "mask": mask[:, perm]})
    assert torch.allclose(out, out_perm, atol=1e-5)


def test_set_summary_ignores_padding(set_encoder):
    jets, mask = torch.randn(6, 10, 4), torch.rand(6, 10) > 0.4
    out = set_encoder({"jets": jets, "mask": mask})
    garbage = torch.where(mask.unsqueeze(-1), jets, torch.randn_like(jets) * 1e3)
    assert torch.allclose(out, set_encoder({"jets": garbage, "mask": mask}), atol=1e-5)
    # more padding slots do not change anything either
    wider = torch.cat([jets, torch.zeros(6, 5, 4)], 1)
    wmask = torch.cat([mask, torch.zeros(6, 5, dtype=torch.bool)], 1)
    assert torch.allclose(out, set_encoder({"jets": wider, "mask": wmask}), atol=1e-5)


def test_set_summary_empty_sets_are_finite(set_encoder):
    out = set_encoder({"jets": torch.randn(3, 10, 4), "mask": torch.zeros(3, 10, dtype=torch.bool)})
    assert torch.isfinite(out).all()


def test_set_summary_gradients():
    enc = SetSummary(4, 8, width=16, heads=2)
    jets, mask = torch.randn(6, 10, 4), torch.rand(6, 10) > 0.4
    enc({"jets": jets, "mask": mask}).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(("shape", "channels"), [((40,), 1), ((12, 10), 1), ((30,), 3)])
def test_cnn_summary_shapes(shape, channels):
    cnn = CNNSummary(shape, 8, channels=(4, 8), in_channels=channels)
    x = torch.rand(5, *shape) if channels == 1 else torch.rand(5, channels, *shape)
    assert cnn({"context": x}).shape == (5, 8)
    assert cnn.scaling() == {"context": ("global", None)}


def test_combined_keys_and_config_roundtrip():
    s = Combined(flat=MLPSummary(3, 8, width=16), jets=SetSummary(4, 8, width=16, heads=2, mask_key="jmask"))
    assert s.input_keys() == ["flat", "jets", "jmask"]
    assert s.output_dim == 16
    rebuilt = summary_from_config(s.config())
    assert rebuilt.config() == s.config()
    assert rebuilt.input_keys() == s.input_keys()
    with pytest.raises(ConfigError, match="unknown summary"):
        summary_from_config({"type": "Nope"})
    with pytest.raises(ConfigError, match="not a Summary"):
        Combined(x=torch.nn.Linear(2, 2))


def test_identity_summary():
    x = torch.randn(3, 2)
    assert torch.equal(IdentitySummary(2)({"context": x}), x)
