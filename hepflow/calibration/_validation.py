"""Array conversion, shape checks and the randomized rank shared by the calibration modules."""

from __future__ import annotations

from typing import Any

import numpy as np

RngLike = int | np.random.Generator | None


def as_numpy(x: Any, *, name: str) -> np.ndarray:
    """``x`` (numpy array, torch tensor, nested list) as a float64 numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {err}") from err
    return arr


def check_posterior_samples(theta_true: Any, samples: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``theta_true`` (n, d) and ``samples`` (n, k, d).

    One-dimensional problems may pass ``theta_true`` as (n,) together with ``samples`` as (n, k).
    Raises ValueError naming both shapes when they do not match, when fewer than two samples
    per observation are given, or when a value is not finite.
    """
    theta = as_numpy(theta_true, name="theta_true")
    post = as_numpy(samples, name="samples")
    if theta.ndim == 1 and post.ndim == 2:
        theta, post = theta[:, None], post[:, :, None]
    if theta.ndim != 2 or post.ndim != 3:
        raise ValueError(
            "expected theta_true of shape (n, d) and samples of shape (n, k, d) "
            f"(or (n,) and (n, k) for d = 1), got theta_true {theta.shape} and samples {post.shape}"
        )
    if theta.shape[0] != post.shape[0]:
        raise ValueError(
            f"theta_true has shape {theta.shape} (n = {theta.shape[0]}) but samples has shape "
            f"{post.shape} (n = {post.shape[0]}): the number of observations differs"
        )
    if theta.shape[1] != post.shape[2]:
        raise ValueError(
            f"theta_true has shape {theta.shape} (d = {theta.shape[1]}) but samples has shape "
            f"{post.shape} (d = {post.shape[2]}): the number of parameters differs"
        )
    if theta.shape[0] < 1 or theta.shape[1] < 1:
        raise ValueError(f"need at least one observation and one parameter, got theta_true {theta.shape}")
    if post.shape[1] < 2:
        raise ValueError(f"need at least 2 posterior samples per observation, got samples {post.shape}")
    for name, arr in (("theta_true", theta), ("samples", post)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise ValueError(f"{name} of shape {arr.shape} has {bad} non-finite values (NaN or inf)")
    return theta, post


def check_names(names: Any, d: int) -> list[str]:
    """Parameter names: ``theta_0 ... theta_{d-1}`` by default, else ``d`` strings."""
    if names is None:
        return [f"theta_{i}" for i in range(d)]
    out = [str(n) for n in names]
    if len(out) != d:
        raise ValueError(f"names has {len(out)} entries {out} but the samples have d = {d} parameters")
    if len(set(out)) != d:
        raise ValueError(f"names must be unique, got {out}")
    return out


def check_levels(levels: Any, *, default: np.ndarray) -> np.ndarray:
    """Credibility levels as a 1-d float array within [0, 1]."""
    lv = default if levels is None else as_numpy(levels, name="levels")
    lv = np.atleast_1d(lv)
    if lv.ndim != 1 or lv.size == 0:
        raise ValueError(f"levels must be a non-empty 1-d sequence, got shape {lv.shape}")
    if not np.all(np.isfinite(lv)) or np.any(lv < 0) or np.any(lv > 1):
        raise ValueError(f"levels must lie in [0, 1], got {lv.tolist()}")
    return lv


def rng_from(rng: RngLike) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def randomized_rank(
    value: np.ndarray, reference: np.ndarray, *, axis: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of ``value`` among ``reference`` along ``axis``, ties broken uniformly at random.

    ``value`` has the shape of ``reference`` without ``axis`` (k entries along it). Returns the
    integer rank r in {0, ..., k} (number of references below, plus a uniform draw among the
    tied positions) and the continuous version u = (r + U) / (k + 1), U ~ Uniform(0, 1), which is
    exactly Uniform(0, 1) when ``value`` and ``reference`` are exchangeable.
    """
    v = np.expand_dims(value, axis)
    k = reference.shape[axis]
    n_less = np.count_nonzero(reference < v, axis=axis)
    n_tied = np.count_nonzero(reference == v, axis=axis)
    rank = n_less + rng.integers(0, n_tied + 1)
    u = (rank + rng.random(rank.shape)) / (k + 1)
    return rank.astype(np.int64), u
