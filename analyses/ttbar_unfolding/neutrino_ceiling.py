"""Ceiling of what a better neutrino can buy IBU: the per-bin statistical precision of IBU with
the *true* neutrino against IBU with the quadratic one.

Usage, on the output directory of ``hepflow unfold ttbar`` (its processed columns and
``results.json``)::

    python analyses/ttbar_unfolding/neutrino_ceiling.py runs/unfolding

The detector-level leptonic top pT and m_ttbar are rebuilt with the generator neutrino
(``nu_*_true``; events without one, W -> tau nu, keep the quadratic neutrino) through
:func:`hepflow.neutrino.downstream.observables`, for the training (response) and the test
(data) events; IBU runs with the study's iterations and toys on the nominal test sample.
Prints, per observable, the relative statistical uncertainty (data toys) per bin of both and
their ratio (quadratic over true: above 1, the true neutrino is more precise) with its median,
and writes them to ``<study>/neutrino_ceiling.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np


def true_neutrino_observables(sample: Any) -> dict[str, np.ndarray]:
    """``top_pt`` and ``mtt`` of every event with the generator neutrino (NaN if not selected)."""
    from hepflow.neutrino.downstream import jets_from_columns, lepton_from_columns, observables

    f = sample.features
    nu = np.stack(
        [ak.to_numpy(ak.fill_none(f[k], np.nan)).astype(np.float64) for k in ("nu_px_true", "nu_py_true")], 1
    )
    eta = ak.to_numpy(ak.fill_none(f.nu_eta_true, np.nan)).astype(np.float64)
    nu = np.concatenate([nu, (np.hypot(nu[:, 0], nu[:, 1]) * np.sinh(eta))[:, None]], axis=1)
    has = np.isfinite(nu).all(axis=1)
    values = observables(lepton_from_columns(f), np.where(has[:, None], nu, 0.0), jets_from_columns(f))
    out = {}
    for name, key in (("top_pt", "top_pt"), ("mtt", "m_ttbar")):
        v = np.full(sample.n, np.nan)
        v[sample.selected] = np.where(has, values[key], sample.reco[name][sample.selected])
        out[name] = v
    return out


def main(argv: list[str] | None = None) -> int:
    """Compute and print the ceiling (see the module docstring)."""
    from hepflow.config import from_dict
    from hepflow.outputs import write_json
    from hepflow.unfolding.binning import histogram
    from hepflow.unfolding.ibu import unfold_ibu
    from hepflow.unfolding.observables import OBSERVABLES
    from hepflow.unfolding.response import build_response
    from hepflow.unfolding.study import UnfoldingConfig, load_sample

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: neutrino_ceiling.py STUDY_DIR", file=sys.stderr)
        return 2
    study = Path(argv[0])
    cfg = from_dict(UnfoldingConfig, json.loads((study / "results.json").read_text())["config"])
    train, test = load_sample(study / "columns" / "train"), load_sample(study / "columns" / "test")
    true_train, true_test = true_neutrino_observables(train), true_neutrino_observables(test)
    result: dict[str, Any] = {}
    for name in OBSERVABLES:
        edges = cfg.binning.edges(name)
        rel = {}
        for label, reco_train, reco_test in (
            ("quadratic", train.reco[name], test.reco[name]),
            ("true", true_train[name], true_test[name]),
        ):
            response = build_response(
                train.gen[name],
                reco_train,
                truth_edges=edges,
                reco_edges=edges,
                passes_truth=train.fiducial,
                passes_reco=train.selected,
                weights=train.weight,
            )
            d, dv = histogram(reco_test[test.selected], edges, weights=test.weight[test.selected])
            u, _ = unfold_ibu(
                d, dv, response, iterations=cfg.ibu.iterations, toys=cfg.ibu.toys, seed=cfg.ibu.seed
            )
            rel[label] = u.components["data"] / u.central
        ratio = rel["quadratic"] / rel["true"]
        result[name] = {
            "relative_stat": {k: v.tolist() for k, v in rel.items()},
            "ratio": ratio.tolist(),
            "median_ratio": float(np.median(ratio)),
        }
        print(
            f"{name}: IBU stat. unc. % quadratic {np.round(100 * rel['quadratic'], 2).tolist()}, "
            f"true nu {np.round(100 * rel['true'], 2).tolist()}; ratio {np.round(ratio, 2).tolist()}, "
            f"median {np.median(ratio):.2f}"
        )
    write_json(study / "neutrino_ceiling.json", {"study": str(study), "ceiling": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
