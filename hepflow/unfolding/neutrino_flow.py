"""IBU with the flow neutrino: detector-level observables from the neutrino posterior.

The IBU baseline of the unfolding study builds its detector-level leptonic top pT and m_ttbar
with the quadratic neutrino (MET + W-mass constraint). Here the same observables are built with
the neutrino analysis's flow instead: a cINN for p(nu px, py, eta | event)
(:func:`hepflow.neutrino.model.build_flow`, its summary network over MET, lepton and jets, its
``[support]``), trained with :func:`hepflow.fit` (through
:func:`hepflow.unfolding.cinn.train_ensemble`) on the *training* sample's selected events that
have a truth neutrino (W -> e nu or mu nu).

* **Cross-fitting**: the training events are split into ``folds`` by their row (row modulo
  ``folds``); the flow of fold f trains on the other folds and gives the posteriors of fold f,
  so no event's detector-level value comes from a flow that saw its neutrino. The response of
  IBU-with-flow is filled with these out-of-fold values, the test events use the flow of their
  own row modulo ``folds`` (flows that never saw them).
* **Per event** ``samples`` posterior draws of the neutrino (pz = pT sinh eta) give, through
  :func:`hepflow.neutrino.downstream.observables` (b jet chosen per draw), ``samples`` values of
  the leptonic top pT and m_ttbar; the event's detector-level value is their **median** (the
  posterior's point per event for that observable). The quadratic values of the same function
  equal the study's ``reco_*`` columns.

:func:`flow_observables` does this for a processed sample; :func:`precision` compares the
per-bin statistical precision (from the data toys) of the unfolded spectra.

Example:
    >>> NeutrinoFlowConfig().folds
    2
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.config import COUNT, SAMPLES, SEED, check_values, to_dict
from hepflow.errors import InputError, OutputError
from hepflow.neutrino.config import FlowConfig as NeutrinoFlowArchitecture
from hepflow.neutrino.config import SupportConfig

__all__ = ["NeutrinoFlowConfig", "flow_observables", "precision"]

log = logging.getLogger(__name__)

#: the fewest events a fold's neutrino flow is trained on
MIN_EVENTS = 50


@dataclass(frozen=True)
class NeutrinoFlowConfig:
    """``[neutrino_flow]``: IBU with the flow neutrino next to the quadratic one.

    ``enabled`` adds the method ``ibu_flow`` to every scenario; ``folds`` (>= 2) cross-fitting
    folds; ``samples`` neutrino draws per event; ``epochs`` and ``seed`` override the study's
    ``[training]`` for these flows; ``flow`` their architecture (the neutrino analysis's
    defaults) and ``support`` the neutrino's physical range.
    """

    enabled: bool = False
    folds: int = 2
    samples: int = 64
    epochs: int = 20
    seed: int = 21
    flow: NeutrinoFlowArchitecture = field(default_factory=NeutrinoFlowArchitecture)
    support: SupportConfig = field(default_factory=SupportConfig)

    def __post_init__(self) -> None:
        check_values(self, folds=COUNT, samples=SAMPLES, epochs=COUNT, seed=SEED)
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (cross-fitting), got {self.folds}")


def _truth(features: Any) -> np.ndarray:
    from hepflow.neutrino.features import truth_array

    if "nu_px_true" not in features.fields:
        raise InputError(
            "the processed training columns carry no truth neutrino (nu_px_true): they were written "
            "before the unfolding processor kept it; process again into an empty directory"
        )
    return truth_array(features)


def _point_observables(features: Any, nu_samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-event median over the neutrino draws of the leptonic top pT and m_ttbar."""
    from hepflow.neutrino.downstream import jets_from_columns, lepton_from_columns, observables
    from hepflow.neutrino.features import MAX_JETS

    values = observables(
        lepton_from_columns(features), nu_samples, jets_from_columns(features, max_jets=MAX_JETS)
    )
    return {"top_pt": np.median(values["top_pt"], axis=1), "mtt": np.median(values["m_ttbar"], axis=1)}


def _neutrino_samples(model: Any, features: Any, *, samples: int, seed: int) -> np.ndarray:
    """(n, samples, 3) neutrino px, py, pz drawn from ``model`` for ``features``' events."""
    from hepflow.neutrino.features import context_arrays
    from hepflow.neutrino.model import neutrino_pz
    from hepflow.unfolding.cinn import sample_ensemble

    draws = sample_ensemble([model], context_arrays(features), samples=samples, seed=seed)[0].astype(
        np.float64
    )
    return np.stack(
        [draws[..., 0], draws[..., 1], neutrino_pz(draws[..., 0], draws[..., 1], draws[..., 2])], -1
    )


def _train_or_load(
    features: Any, cfg: Any, model_dir: Path, *, retrain: bool, progress: bool
) -> tuple[list[Any], dict[str, Any]]:
    """One flow per fold (fold f: trained on the rows of the other folds with a truth neutrino),
    reused from ``model_dir`` when trained there with the same settings on the same rows."""
    import hepflow
    from hepflow.flows.serialization import read_config
    from hepflow.neutrino.features import context_arrays
    from hepflow.neutrino.model import build_flow
    from hepflow.outputs import write_json
    from hepflow.unfolding.cinn import train_ensemble

    nf = cfg.neutrino_flow
    theta = _truth(features)
    usable = np.isfinite(theta).all(axis=1)
    fold = np.arange(len(theta)) % nf.folds
    fit = replace(cfg.training, epochs=nf.epochs, seed=nf.seed)
    meta = {
        "analysis": "ttbar_unfolding/neutrino_flow",
        "events": int(usable.sum()),
        "folds": nf.folds,
        "flow": to_dict(nf.flow),
        "support": to_dict(nf.support),
        "summary": to_dict(cfg.summary),
        "training": to_dict(fit),
    }
    paths = [model_dir / f"fold_{f}" for f in range(nf.folds)]
    existing = [p for p in paths if (p / "config.json").is_file()]
    if existing and not retrain:
        same = all(
            (read_config(p).get("metadata", {}) or {}).get("study") == {**meta, "fold": i}
            for i, p in enumerate(paths)
            if p in existing
        )
        if same and len(existing) == len(paths):
            return [hepflow.load_model(p) for p in paths], json.loads(
                (model_dir / "training.json").read_text()
            )
        raise OutputError(
            f"{model_dir} holds {'incomplete' if same else 'other'} neutrino flows: pass --retrain to "
            "replace them, or choose another --output"
        )
    context = context_arrays(features)
    models, members = [], []
    for f in range(nf.folds):
        rows = np.flatnonzero(usable & (fold != f))
        if len(rows) < MIN_EVENTS:
            raise InputError(
                f"only {len(rows)} training events with a truth neutrino for the flow of fold {f}; "
                f"need {MIN_EVENTS}"
            )
        (model,), (summary,) = train_ensemble(
            lambda seed: build_flow(nf.flow, cfg.summary, support=nf.support, seed=seed),
            theta[rows],
            {k: v[rows] for k, v in context.items()},
            fit=replace(fit, seed=nf.seed + f),
            members=1,
            bootstrap=False,
            output_dir=model_dir / f"history_fold_{f}",
            progress=progress,
        )
        hepflow.save_model(model, paths[f], metadata={"study": {**meta, "fold": f}}, overwrite=retrain)
        models.append(model)
        members.append({"fold": f, "events": len(rows), **summary})
    training = {"members": members, "seconds": sum(m["seconds"] for m in members)}
    write_json(model_dir / "training.json", training)
    return models, training


def flow_observables(
    train: Any, test: Any, cfg: Any, model_dir: str | Path, *, retrain: bool = False, progress: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """Detector-level ``top_pt`` and ``mtt`` with the flow neutrino for every event of the
    training and the test :class:`~hepflow.unfolding.study.Sample` (NaN where not selected),
    and a summary (training, resolution against the particle level for both neutrinos)."""
    nf = cfg.neutrino_flow
    t0 = time.perf_counter()
    models, training = _train_or_load(
        train.features, cfg, Path(model_dir), retrain=retrain, progress=progress
    )
    out = []
    for k, sample in enumerate((train, test)):
        n_sel = len(sample.features)
        values = {o: np.full(sample.n, np.nan) for o in ("top_pt", "mtt")}
        rows = np.arange(n_sel)
        for f, model in enumerate(models):
            mine = rows[rows % nf.folds == f]
            if not len(mine):
                continue
            nu = _neutrino_samples(
                model, sample.features[mine], samples=nf.samples, seed=nf.seed + 100 * k + f
            )
            for o, v in _point_observables(sample.features[mine], nu).items():
                values[o][np.flatnonzero(sample.selected)[mine]] = v
        out.append(values)
    summary: dict[str, Any] = {"training": training, "seconds": time.perf_counter() - t0, "resolution": {}}
    test_both = test.selected & test.fiducial
    for o in ("top_pt", "mtt"):
        rel = {
            "quadratic": test.reco[o][test_both] / test.gen[o][test_both] - 1,
            "flow": out[1][o][test_both] / test.gen[o][test_both] - 1,
        }
        summary["resolution"][o] = {
            m: {
                "median": float(np.median(r)),
                "iqr_half": float(0.5 * np.subtract(*np.percentile(r, [75, 25]))),
            }
            for m, r in rel.items()
        }
    return out[0], out[1], summary


def precision(
    scenario: dict[str, Any], *, methods: tuple[str, ...] = ("ibu", "ibu_flow", "cinn", "icinn")
) -> dict[str, Any]:
    """Per-bin statistical precision of each method's unfolded spectrum in one scenario (a
    ``results.json`` scenario entry): the relative standard deviation of the data toys (IBU:
    Poisson replicas of the detector-level histogram; cINN: Poisson bootstrap of the measured
    events, its ``data`` component), and the ratio of IBU-with-quadratic to each other method
    per bin (above 1: that method is more precise) with its median over the bins.

    Example:
        >>> res = {"x": {"ibu": {"central": [10.0, 20.0], "components": {"data": [2.0, 2.0]}},
        ...              "ibu_flow": {"central": [10.0, 20.0], "components": {"data": [1.0, 2.0]}}}}
        >>> p = precision(res, methods=("ibu", "ibu_flow"))["x"]
        >>> p["ratio_to_ibu"]["ibu_flow"], p["median_ratio"]["ibu_flow"]
        ([2.0, 1.0], 1.5)
    """
    out: dict[str, Any] = {}
    for name, res in scenario.items():
        if not isinstance(res, dict) or "ibu" not in res:
            continue
        present = [m for m in methods if m in res]
        rel = {}
        for m in present:
            c = np.asarray(res[m]["central"], dtype=np.float64)
            s = np.asarray(res[m]["components"]["data"], dtype=np.float64)
            rel[m] = np.where(c > 0, s / np.where(c > 0, c, 1.0), np.nan)
        ratios = {m: (rel["ibu"] / rel[m]).tolist() for m in present if m != "ibu"}
        out[name] = {
            "relative_stat": {m: v.tolist() for m, v in rel.items()},
            "ratio_to_ibu": ratios,
            "median_ratio": {m: float(np.nanmedian(r)) for m, r in ratios.items()},
        }
    return out
