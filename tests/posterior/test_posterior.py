"""The posterior layer: one sample / log_prob contract for every class behind it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import hepflow
from hepflow.errors import ModelError
from hepflow.flows.constraints import Box, Simplex
from hepflow.flows.inn import ConditionalINN
from hepflow.posterior import (
    EnsemblePosterior,
    FlowPosterior,
    ImportancePosterior,
    Posterior,
    RejectionPosterior,
    load_posterior,
    write_ensemble,
)

CONTEXT = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(4, 3)


def _flow(seed: int, coupling: str = "affine") -> ConditionalINN:
    return ConditionalINN(
        4,
        3,
        depth=2,
        width=16,
        blocks=coupling,
        constraints=[Box([0], low=[-2.0], high=[2.0]), Simplex([1, 2, 3])],
        seed=seed,
    ).eval()


def _make(kind: str) -> Posterior:
    if kind in ("affine", "spline"):
        return FlowPosterior(_flow(1, kind))
    if kind == "ensemble":
        return EnsemblePosterior([FlowPosterior(_flow(s)) for s in (1, 2)])
    if kind == "rejection":
        # accept half of the box: theta_0 > 0
        return RejectionPosterior(
            FlowPosterior(_flow(1)),
            lambda t: np.where(t[:, 0] > 0, 0.0, -np.inf),
            initial_rate=0.5,
        )
    if kind == "importance":
        return ImportancePosterior(FlowPosterior(_flow(1)), lambda t, x: -0.5 * t[:, 0] ** 2)
    raise AssertionError(kind)


KINDS = ["affine", "spline", "ensemble", "rejection", "importance"]


@pytest.mark.parametrize("kind", KINDS)
def test_sample_contract(kind: str) -> None:
    post = _make(kind)
    x = list(CONTEXT) if kind == "importance" else CONTEXT  # one observation at a time
    draws, lp = post.sample(50, x, seed=3)
    assert draws.shape == (4, 50, 4)
    assert draws.dtype == np.float64
    assert post.theta_dim == 4
    assert np.isfinite(draws).all()
    assert ((draws[..., 0] > -2) & (draws[..., 0] < 2)).all()
    np.testing.assert_allclose(draws[..., 1:].sum(-1), 1.0, atol=1e-12)  # simplex in double precision
    assert (draws[..., 1:] >= 0).all()
    again, _ = post.sample(50, x, seed=3)
    np.testing.assert_array_equal(draws, again)
    other, _ = post.sample(50, x, seed=4)
    assert not np.array_equal(draws, other)
    if lp is not None:
        assert lp.shape == (4, 50)
        assert np.isfinite(lp).all()


@pytest.mark.parametrize("kind", ["affine", "spline", "ensemble"])
def test_log_prob_agrees_with_the_density_of_the_draws(kind: str) -> None:
    post = _make(kind)
    draws, lp = post.sample(40, CONTEXT, seed=1, log_prob=True)
    assert lp is not None
    np.testing.assert_allclose(post.log_prob(draws, CONTEXT), lp, rtol=1e-4, atol=1e-3)


def test_single_flow_density_comes_free_and_ensemble_density_only_when_asked() -> None:
    _, free = _make("affine").sample(10, CONTEXT, seed=0)
    assert free is not None
    _, none = _make("ensemble").sample(10, CONTEXT, seed=0)
    assert none is None


def test_ensemble_mixture_density_is_the_mean_of_the_members() -> None:
    ens = _make("ensemble")
    draws, lp = ens.sample(30, CONTEXT, seed=2, log_prob=True)
    each = np.stack([m.log_prob(draws, CONTEXT) for m in ens.members])
    np.testing.assert_allclose(lp, np.log(np.exp(each).mean(0)), rtol=1e-5, atol=1e-5)


def test_ensemble_refuses_members_of_other_posteriors() -> None:
    a = FlowPosterior(_flow(1), metadata={"prior": [0, 1], "training": {"seed": 1}})
    b = FlowPosterior(_flow(2), metadata={"prior": [0, 2], "training": {"seed": 2}})
    with pytest.raises(ModelError, match="member 1 differs from member 0 in prior"):
        EnsemblePosterior([a, b])
    with pytest.raises(ModelError, match="at least two"):
        EnsemblePosterior([a])
    same = FlowPosterior(_flow(3), metadata={"prior": [0, 1], "training": {"seed": 3}})
    assert EnsemblePosterior([a, same]).metadata["members"] == [{"seed": 1}, {"seed": 3}]


def test_rejection_draws_follow_the_truncated_density() -> None:
    base = FlowPosterior(_flow(1))
    post = _make("rejection")
    draws, lq = post.sample(2000, CONTEXT, seed=5)
    assert (draws[..., 0] > 0).all()
    # the corrected density is the base density over the acceptance rate of each observation
    shift = lq - base.log_prob(draws, CONTEXT)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=1e-3)
    many, _ = base.sample(20_000, CONTEXT, seed=9)
    rate = (many[..., 0] > 0).mean(axis=1)
    np.testing.assert_allclose(np.exp(-shift[:, 0]), rate, atol=0.04)  # ~5 sigma of the rate estimate
    with pytest.raises(ModelError, match="comes with its samples"):
        post.log_prob(draws, CONTEXT)


def test_rejection_refuses_a_hopeless_acceptance_with_its_rate() -> None:
    never = RejectionPosterior(
        FlowPosterior(_flow(1)),
        lambda t: np.where(t[:, 0] > 1.99, 0.0, -np.inf),
        initial_rate=1.0,
        max_draws=2,
    )
    with pytest.raises(ModelError, match=r"observation \d+: only \d+ of \d+ cINN draws pass"):
        never.sample(200, CONTEXT, seed=1)


def test_importance_weights_are_flat_when_the_target_is_the_base() -> None:
    base = FlowPosterior(_flow(1))
    same = ImportancePosterior(base, lambda t, x: base.log_prob(t[None], x[None])[0])
    _, _, iw = same.sample_weighted(300, CONTEXT[0], seed=1)
    assert iw.efficiency > 0.999
    with pytest.raises(ModelError, match="unnormalised"):
        same.log_prob(np.zeros((1, 1, 4)), CONTEXT[:1])


def test_features_map_inputs_to_the_context() -> None:
    post = FlowPosterior(_flow(1), features=lambda rows: np.asarray(rows, np.float32) * 2.0)
    direct = FlowPosterior(_flow(1))
    np.testing.assert_array_equal(
        post.sample(5, CONTEXT / 2, seed=1)[0], direct.sample(5, CONTEXT, seed=1)[0]
    )


def test_a_shared_generator_continues_across_calls() -> None:
    post = FlowPosterior(_flow(1))
    gen = torch.Generator().manual_seed(0)
    a = np.concatenate(
        [post.sample(8, CONTEXT[:2], generator=gen)[0], post.sample(8, CONTEXT[2:], generator=gen)[0]]
    )
    gen = torch.Generator().manual_seed(0)
    b = np.concatenate(
        [post.sample(8, CONTEXT[:2], generator=gen)[0], post.sample(8, CONTEXT[2:], generator=gen)[0]]
    )
    np.testing.assert_array_equal(a, b)


# --- model directories ----------------------------------------------------------------------


def _save(directory: Path, seed: int, **meta: object) -> Path:
    return hepflow.save_model(_flow(seed), directory / "flow", metadata={"analysis": "t", **meta})


def test_load_single_and_ensemble_directories(tmp_path: Path) -> None:
    _save(tmp_path / "a", 1, training={"n": 1})
    _save(tmp_path / "b", 2, training={"n": 2})
    single = load_posterior(tmp_path / "a")
    assert type(single) is FlowPosterior
    assert load_posterior(tmp_path / "a" / "flow").metadata == single.metadata
    ens = load_posterior(write_ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "ens"))
    assert isinstance(ens, EnsemblePosterior)
    assert ens.metadata["members"] == [{"n": 1}, {"n": 2}]
    ref = single.sample(6, CONTEXT, seed=1)[0]
    np.testing.assert_array_equal(
        load_posterior(tmp_path / "ens").members[0].sample(6, CONTEXT, seed=1)[0], ref
    )


def test_check_runs_before_any_weights_are_read(tmp_path: Path) -> None:
    path = _save(tmp_path / "a", 1)
    (path / "model.safetensors").write_bytes(b"broken")
    seen = []

    def check(meta, where):
        seen.append((meta["analysis"], where))
        raise ModelError(f"{where} is not ours")

    with pytest.raises(ModelError, match="is not ours"):
        load_posterior(tmp_path / "a", check=check)
    assert seen == [("t", path)]
    with pytest.raises(ModelError, match="checksum"):
        load_posterior(tmp_path / "a")


@pytest.mark.parametrize("members", [[".."], ["."], ["../a"], [""], "member_0", [3]])
def test_ensemble_members_must_be_folders_inside_it(tmp_path: Path, members: object) -> None:
    _save(tmp_path / "a", 1)
    d = tmp_path / "ens"
    d.mkdir()
    (d / "ensemble.json").write_text(json.dumps({"members": members}))
    with pytest.raises(ModelError, match="must list member folder names"):
        load_posterior(d)


def test_missing_model_and_nested_ensembles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="train one first"):
        load_posterior(tmp_path / "nothing", missing="train one first")
    _save(tmp_path / "a", 1)
    _save(tmp_path / "b", 2)
    ens = write_ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "ens")
    with pytest.raises(Exception, match="is an ensemble already"):
        write_ensemble([ens, tmp_path / "a"], tmp_path / "ens2")
    with pytest.raises(Exception, match="exists; pass --overwrite"):
        write_ensemble([tmp_path / "a", tmp_path / "b"], ens)
