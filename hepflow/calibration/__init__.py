"""Model-independent calibration diagnostics for posterior samples.

All functions take ``theta_true`` of shape (n, d) and ``samples`` of shape (n, k, d) (numpy
arrays or torch tensors): k posterior draws for each of n observations whose true parameters are
known (simulation).

* :mod:`~hepflow.calibration.sbc`: simulation-based calibration ranks and uniformity tests;
* :mod:`~hepflow.calibration.coverage`: expected coverage of central / HPD credible regions;
* :mod:`~hepflow.calibration.joint`: one test of all the coverages together, its null drawn
  from the posterior itself;
* :mod:`~hepflow.calibration.tarp`: TARP expected coverage with random reference points;
* :mod:`~hepflow.calibration.scores`: proper scores of whole posteriors (CRPS, energy score);
* :mod:`~hepflow.calibration.plots`: the corresponding figures;
* :func:`calibration_report`: everything above as one JSON-serialisable dict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepflow.calibration._validation import RngLike, check_names, check_posterior_samples, rng_from
from hepflow.calibration.coverage import (
    DEFAULT_LEVELS,
    CoverageCurve,
    central_intervals,
    coverage_at,
    expected_coverage,
    hpd_coverage,
    sampled_level,
)
from hepflow.calibration.joint import CoverageTest, coverage_test
from hepflow.calibration.plots import plot_coverage, plot_rank_histograms, plot_tarp
from hepflow.calibration.sbc import SBCResult, sbc_ranks, sbc_test, simulation_based_calibration
from hepflow.calibration.scores import crps_ensemble, crps_gaussian, energy_score
from hepflow.calibration.tarp import TarpResult, tarp

__all__ = [
    "DEFAULT_LEVELS",
    "CoverageCurve",
    "CoverageTest",
    "SBCResult",
    "TarpResult",
    "calibration_report",
    "central_intervals",
    "coverage_at",
    "coverage_test",
    "crps_ensemble",
    "crps_gaussian",
    "energy_score",
    "expected_coverage",
    "hpd_coverage",
    "plot_coverage",
    "plot_rank_histograms",
    "plot_tarp",
    "sampled_level",
    "sbc_ranks",
    "sbc_test",
    "simulation_based_calibration",
    "tarp",
]


def _floats(x: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(x).ravel()]


def calibration_report(
    theta_true: Any,
    samples: Any,
    names: Sequence[str] | None = None,
    *,
    levels: Any = None,
    n_bins: int | None = None,
    rng: RngLike = 0,
    plot_dir: str | os.PathLike[str] | None = None,
    pdf: bool = False,
) -> dict[str, Any]:
    """SBC, coverage and TARP summaries of posterior samples, as a JSON-serialisable dict.

    Args:
        theta_true: (n, d) true parameters (or (n,)); numpy array or torch tensor.
        samples: (n, k, d) posterior samples (or (n, k)).
        names: d parameter names, default ``theta_0, ...``.
        levels: coverage-curve grid, default :data:`~hepflow.calibration.coverage.DEFAULT_LEVELS`.
        n_bins: SBC chi-square bins, default :func:`~hepflow.calibration.sbc.default_rank_bins`.
        rng: seed or Generator (tie-breaking, KS randomization, TARP references).
        plot_dir: if given, also write ``sbc_ranks.png``, ``coverage.png`` and ``tarp.png`` there
            and list their paths under ``"plots"``.
        pdf: with ``plot_dir``, write PDFs too.

    Returns:
        ``{"n_observations", "n_samples", "names", "sbc": {"n_bins", "chi2_pvalue", "ks_pvalue"},
        "coverage": {"0.68": {name: c}, "0.95": {...}}, "coverage_target": {"0.68": t, "0.95": t}
        (what a calibrated posterior covers with k draws per observation:
        :func:`~hepflow.calibration.coverage.sampled_level`), "coverage_test": the joint test of
        the coverages at 0.68 and 0.95 (:meth:`~hepflow.calibration.joint.CoverageTest.as_dict`),
        "coverage_curve": {"levels", "coverage": {name: [...]}}, "tarp": {"atc", "ks_pvalue",
        "alpha", "ecp"}}``, with per-parameter values keyed by name; plus ``"plots"`` with
        ``plot_dir``.

    Example:
        >>> import json, numpy as np
        >>> g = np.random.default_rng(0)
        >>> rep = calibration_report(g.normal(size=(300, 2)), g.normal(size=(300, 100, 2)), ["mu", "sigma"])
        >>> sorted(rep["coverage"]), sorted(rep["sbc"]["ks_pvalue"])
        (['0.68', '0.95'], ['mu', 'sigma'])
        >>> isinstance(json.dumps(rep), str)
        True
    """
    theta, post = check_posterior_samples(theta_true, samples)
    n, k, d = post.shape
    labels = check_names(names, d)
    gen = rng_from(rng)
    sbc = simulation_based_calibration(theta, post, n_bins=n_bins, rng=gen)
    curve = expected_coverage(theta, post, levels=levels)
    at = coverage_at(theta, post, levels=(0.68, 0.95))
    tr = tarp(theta, post, rng=gen)
    joint = coverage_test(theta, post, labels, levels=(0.68, 0.95), rng=gen) if k >= 3 else None
    report: dict[str, Any] = {
        "n_observations": int(n),
        "n_samples": int(k),
        "names": labels,
        "sbc": {
            "n_bins": sbc.n_bins,
            "chi2_pvalue": dict(zip(labels, _floats(sbc.chi2_pvalue), strict=True)),
            "ks_pvalue": dict(zip(labels, _floats(sbc.ks_pvalue), strict=True)),
        },
        "coverage": {f"{level:g}": dict(zip(labels, _floats(cov), strict=True)) for level, cov in at.items()},
        # what a calibrated posterior's intervals from k draws cover (below the level itself)
        "coverage_target": {f"{level:g}": sampled_level(level, k) for level in at},
        "coverage_test": None if joint is None else joint.as_dict(),
        "coverage_curve": {
            "levels": _floats(curve.levels),
            "coverage": {name: _floats(curve.coverage[:, j]) for j, name in enumerate(labels)},
        },
        "tarp": {
            "atc": tr.atc,
            "ks_pvalue": tr.ks_pvalue,
            "alpha": _floats(tr.alpha),
            "ecp": _floats(tr.ecp),
        },
    }
    if plot_dir is not None:
        out = Path(plot_dir)
        report["plots"] = {
            "sbc_ranks": str(
                plot_rank_histograms(
                    sbc.ranks, k, out / "sbc_ranks.png", n_bins=sbc.n_bins, names=labels, pdf=pdf
                )
            ),
            "coverage": str(
                plot_coverage(
                    curve.levels, curve.coverage, out / "coverage.png", n_obs=n, names=labels, pdf=pdf
                )
            ),
            "tarp": str(
                plot_tarp(tr.alpha, tr.ecp, out / "tarp.png", atc=tr.atc, ks_pvalue=tr.ks_pvalue, pdf=pdf)
            ),
        }
    return report
