"""Training data of the cosmic cINN: parameters and features of pseudo-experiments.

:func:`load_training_data` reads a ``PseudoExperiments`` ntuple (``hepflow generate cosmic``) or a
directory of feature chunks (``hepflow process cosmic``) into ``(theta, features)``, refusing an
ntuple generated under another prior or proposal than the config's, and dropping (and counting)
rows with non-finite or negative inputs. :func:`parameter_columns` reads the 7 parameters of any
table that has them (truth, posterior or MCMC samples).

Example:
    >>> import awkward as ak
    >>> table = ak.zip({p: [0.5, 0.25] for p in PARAMETERS})
    >>> parameter_columns(table, "table.parquet").shape
    (2, 7)
    >>> parameter_columns(table[["gamma"]], "table.parquet")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hepflow.errors.InputError: table.parquet: lacks the parameter columns ['lg_rcut', ...]
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepflow.config import json_plain
from hepflow.cosmic.config import PARAMETERS
from hepflow.cosmic.features import feature_names, observation_features, valid_rows
from hepflow.cosmic.observation import Binning
from hepflow.errors import InputError

__all__ = ["load_training_data", "parameter_columns"]

log = logging.getLogger(__name__)


_BLOCK = 20_000  # pseudo-experiments per block when reading and computing features


def load_training_data(
    source: str | os.PathLike[str],
    *,
    binning: Binning,
    max_n: int | None = None,
    prior: dict[str, Any] | None = None,
    proposal: dict[str, Any] | None = None,
    systematics: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(theta (n, 7) float64, features (n, 943) float32)`` from a ``PseudoExperiments`` ntuple
    (``hepflow generate cosmic``) or a directory of feature chunks (``hepflow process cosmic``).

    ``prior`` (the ``[prior]`` section as a dict): an ntuple whose metadata names another prior
    is refused, since the cINN would learn the posterior under that prior; so is one drawn from
    another ``proposal`` (:meth:`~hepflow.cosmic.generate.ProposalConfig.metadata` of the
    ``[proposal]`` section, None for the prior itself), since the model records the proposal
    its samples are corrected for, and one generated with other ``systematics`` (the
    ``[systematics]`` metadata, None when off), since the cINN would marginalise other nuisances.
    Feature directories carry no such record. Of the first ``max_n``
    pseudo-experiments, those with a NaN, infinite or negative count (ntuple) or a non-finite
    feature (feature chunks), or a non-finite parameter, are dropped and their number logged:
    everything returned is finite.
    """
    path = Path(source)
    if path.is_dir():
        theta, feats = _features_from_parquet(path, binning, max_n)
        keep = valid_rows(theta, feats, nonnegative=False)
        if not keep.all():
            theta, feats = theta[keep], feats[keep]
            _log_dropped(path, int((~keep).sum()), len(keep))
        return theta, feats
    if path.is_file():
        return _features_from_ntuple(path, binning, max_n, prior, proposal, systematics)
    raise InputError(f"training data {path} does not exist (a PseudoExperiments file or a feature directory)")


def _log_dropped(path: Path, bad: int, total: int) -> None:
    log.warning("%s: dropped %d of %d pseudo-experiments with NaN, inf or negative inputs", path, bad, total)


def _features_from_ntuple(
    path: Path,
    binning: Binning,
    max_n: int | None,
    prior: dict[str, Any] | None,
    proposal: dict[str, Any] | None,
    systematics: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    import uproot

    from hepflow.cosmic.generate import PSEUDO_EXPERIMENT_TREE, read_pseudo_experiments

    try:
        with uproot.open(path) as f:
            if PSEUDO_EXPERIMENT_TREE not in f:
                raise InputError(
                    f"{path} has no {PSEUDO_EXPERIMENT_TREE} tree: generate it with `hepflow generate cosmic`"
                )
            n = int(f[PSEUDO_EXPERIMENT_TREE].num_entries)
            meta = json.loads(f["metadata"]) if "metadata" in f else {}
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from err
    if prior is not None and "prior" in meta and json_plain(meta["prior"]) != json_plain(prior):
        raise InputError(
            f"{path} was generated with prior {meta['prior']}, the config has {prior}: "
            "the cINN would learn the posterior under another prior"
        )
    if prior is not None and "prior" in meta and json_plain(meta.get("proposal")) != json_plain(proposal):
        raise InputError(
            f"{path} was generated with proposal {meta.get('proposal') or 'the prior'}, the config's "
            f"[proposal] is {proposal or 'the prior'}: the model would correct its samples for the wrong one"
        )
    if (
        prior is not None
        and "prior" in meta
        and json_plain(meta.get("systematics")) != json_plain(systematics)
    ):
        raise InputError(
            f"{path} was generated with systematics {meta.get('systematics') or 'off'}, the config's "
            f"[systematics] is {systematics or 'off'}: the cINN would marginalise other nuisances"
        )
    n = n if max_n is None else min(n, max_n)
    theta = np.empty((n, len(PARAMETERS)))
    feats = np.empty((n, len(feature_names(binning))), np.float32)
    kept = 0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block = read_pseudo_experiments(path, entry_start=start, entry_stop=stop)
        ok = valid_rows(block["spectrum"], block["xmax"]) & valid_rows(block["theta"], nonnegative=False)
        m = int(ok.sum())
        theta[kept : kept + m] = block["theta"][ok]
        feats[kept : kept + m] = observation_features(
            block["spectrum"][ok], block["xmax"][ok], binning=binning
        )
        kept += m
    if kept < n:
        _log_dropped(path, n - kept, n)
    return theta[:kept], feats[:kept]


def parameter_columns(columns: Any, where: object, *, hint: str = "") -> np.ndarray:
    """The (n, 7) parameters ``gamma .. f_Fe`` of a table with those columns (truth or samples).

    Raises :class:`~hepflow.errors.InputError` naming ``where`` (and ``hint``) if one is missing.
    """
    if missing := [p for p in PARAMETERS if p not in columns.fields]:
        raise InputError(f"{where}: lacks the parameter columns {missing}{hint}")
    return np.stack([ak.to_numpy(columns[p]).astype(float) for p in PARAMETERS], axis=1)


def _features_from_parquet(path: Path, binning: Binning, max_n: int | None) -> tuple[np.ndarray, np.ndarray]:
    from hepflow.cosmic.features import feature_matrix
    from hepflow.outputs.columnar import parquet_chunks, read_chunk

    thetas, feats, n = [], [], 0
    for f, rows in parquet_chunks(path):  # the chunks that the run records list, checked
        cols = read_chunk(f, rows)
        thetas.append(parameter_columns(cols, f, hint=": cannot train (process pseudo-experiments)"))
        feats.append(feature_matrix(cols, binning=binning).astype(np.float32))
        n += len(cols)
        if max_n is not None and n >= max_n:
            break
    theta, x = np.concatenate(thetas), np.concatenate(feats)
    return (theta, x) if max_n is None else (theta[:max_n], x[:max_n])
