"""Model directories on disk: one trained flow, or an ensemble of them, loaded as a posterior.

A model directory is either

* a saved flow (:func:`hepflow.save_model`: ``config.json`` + checksummed ``model.safetensors``),
  or a training output whose ``flow/`` folder is one; or
* an ensemble: ``ensemble.json`` naming member folders (plain folder names inside the
  directory, each a saved flow), written complete or not at all by :func:`write_ensemble`.

:func:`load_posterior` reads the metadata of every flow first and hands it to the analysis's
``check`` before any weights are read, so a foreign model is refused once, here, with the
analysis's message; the weights are then loaded and checked against their checksum.

Example:
    >>> import tempfile, hepflow
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> for s in (1, 2):
    ...     _ = hepflow.save_model(
    ...         hepflow.ConditionalINN(2, 3, depth=2, width=8, seed=s), d / f"m{s}" / "flow",
    ...         metadata={"analysis": "demo", "training": {"seed": s}})
    >>> type(load_posterior(d / "m1")).__name__
    'FlowPosterior'
    >>> ens = load_posterior(write_ensemble([d / "m1", d / "m2"], d / "ens"))
    >>> type(ens).__name__, ens.metadata["members"]
    ('EnsemblePosterior', [{'seed': 1}, {'seed': 2}])
    >>> def only_physics(meta, path):
    ...     if meta.get("analysis") != "physics":
    ...         raise hepflow.errors.ModelError(f"{path} is not a physics model")
    >>> load_posterior(d / "m1", check=only_physics)
    Traceback (most recent call last):
    ...
    hepflow.errors.ModelError: .../m1/flow is not a physics model
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hepflow.errors import ConfigError, ModelError, OutputError
from hepflow.posterior.base import Features, FlowPosterior
from hepflow.posterior.ensemble import EnsemblePosterior

__all__ = [
    "ENSEMBLE_FILE",
    "check_ensemble_sources",
    "check_ensemble_target",
    "is_ensemble",
    "load_posterior",
    "model_path",
    "write_ensemble",
]

ENSEMBLE_FILE = "ensemble.json"
#: the analysis's check of a flow's metadata, called with (metadata, folder) before loading it
Check = Callable[[Mapping[str, Any], Path], None]


def is_ensemble(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds an ensemble description."""
    return (Path(directory) / ENSEMBLE_FILE).is_file()


def model_path(directory: str | os.PathLike[str], *, missing: str | None = None) -> Path:
    """The saved-flow folder of a model directory (itself or its ``flow/``), or the ensemble directory.

    Raises :class:`~hepflow.errors.ModelError` with ``missing`` (or a generic message) when there
    is neither.
    """
    d = Path(directory)
    if is_ensemble(d):
        return d
    for candidate in (d, d / "flow"):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelError(missing or f"no model at {d}: neither config.json, flow/config.json nor {ENSEMBLE_FILE}")


def member_names(directory: str | os.PathLike[str]) -> list[str]:
    """The member folders an ensemble's ``ensemble.json`` lists (plain names inside the directory)."""
    from hepflow.flows.serialization import is_plain_name

    source = Path(directory) / ENSEMBLE_FILE
    try:
        names = json.loads(source.read_text())["members"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{source} is not an ensemble description: {err}") from err
    if not isinstance(names, list) or not all(is_plain_name(n) for n in names):
        raise ModelError(f"{source}: 'members' must list member folder names")
    return names


def _load_flow(path: Path, check: Check | None, map_location: Any) -> Any:
    from hepflow.flows.serialization import load_model, read_config

    if check is not None:
        check(read_config(path).get("metadata", {}) or {}, path)
    return load_model(path, map_location=map_location)


def load_posterior(
    directory: str | os.PathLike[str],
    *,
    check: Check | None = None,
    features: Features | None = None,
    missing: str | None = None,
    map_location: Any = "cpu",
) -> FlowPosterior:
    """The posterior of a model directory: a :class:`FlowPosterior`, or an :class:`EnsemblePosterior`.

    Args:
        directory: a saved flow, a training output with ``flow/``, or an ensemble directory.
        check: called with the metadata and folder of every flow before its weights are read;
            raises :class:`~hepflow.errors.ModelError` for a foreign model.
        features: the posterior's ``x -> context`` map.
        missing: the error message when there is no model at ``directory``.
        map_location: the device the weights are loaded to.
    """
    path = model_path(directory, missing=missing)
    if is_ensemble(path):
        members = []
        for name in member_names(path):
            if is_ensemble(path / name):
                raise ModelError(f"{path / ENSEMBLE_FILE}: member {name} is an ensemble itself")
            members.append(
                FlowPosterior(_load_flow(model_path(path / name), check, map_location), features=features)
            )
        return EnsemblePosterior(members, where=str(path))
    return FlowPosterior(_load_flow(path, check, map_location).eval(), features=features)


def check_ensemble_sources(models: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse (:class:`~hepflow.errors.ConfigError`) fewer than two models, or an ensemble among
    them (list its members instead): what :func:`write_ensemble` can combine."""
    for m in models:
        if is_ensemble(m):
            raise ConfigError(f"{m} is an ensemble already: list its members instead")
    if len(models) < 2:
        raise ConfigError(f"an ensemble needs at least two models, got {len(models)}")


def check_ensemble_target(
    models: Sequence[str | os.PathLike[str]], output_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Refuse (:class:`~hepflow.errors.OutputError`) an ensemble output that equals, contains or
    lies inside one of the ``models``, or that exists without ``overwrite``; with ``overwrite``
    only an ensemble directory (its listed ``member_<k>`` folders and ``ensemble.json``, nothing
    else) or an empty directory may be replaced: :func:`write_ensemble` removes nothing it did not
    write."""
    out = Path(output_dir)
    target = out.resolve()
    for m in models:
        src = Path(m).resolve()
        if target == src or target in src.parents or src in target.parents:
            where = "is" if target == src else ("contains" if target in src.parents else "lies inside")
            raise OutputError(f"ensemble output {out} {where} the input model {m}; choose another --output")
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    if not out.is_dir() or out.is_symlink():
        raise OutputError(
            f"{out} is not an ensemble directory; --overwrite replaces only those: choose another --output"
        )
    written = {ENSEMBLE_FILE, *member_names(out)} if is_ensemble(out) else set()
    if foreign := sorted(p.name for p in out.iterdir() if p.name not in written):
        raise OutputError(
            f"{out} holds {foreign[0]}, which `hepflow ensemble` did not write; --overwrite replaces "
            "only an ensemble directory (member_<k>/ and ensemble.json): choose another --output"
        )


def write_ensemble(
    models: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Copy trained flows into one ensemble directory (``member_<k>`` + ``ensemble.json``).

    The directory is written under a temporary name and renamed when complete. ``models`` must
    be single flows (an ensemble is refused: list its members); the caller checks that they are
    posteriors of the same thing (:class:`EnsemblePosterior` does when loading). The output is
    checked first (:func:`check_ensemble_target`): it never equals, contains or lies inside an
    input, and ``overwrite`` replaces only an earlier ensemble (or an empty directory).
    """
    from hepflow.outputs import write_json

    check_ensemble_sources(models)
    sources = [model_path(m) for m in models]
    out = Path(output_dir)
    check_ensemble_target(models, out, overwrite=overwrite)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [f"member_{k}" for k in range(len(models))]
    try:
        for name, src in zip(names, sources, strict=True):
            shutil.copytree(src, tmp / name)
        write_json(tmp / ENSEMBLE_FILE, {"members": names, "sources": [str(m) for m in models]})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # checked above: an earlier ensemble, or empty; moved aside, then removed
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return out
