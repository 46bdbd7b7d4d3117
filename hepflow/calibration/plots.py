"""Calibration plots in hepflow's style (:func:`hepflow.plotting.style`): SBC ranks, coverage, TARP.

Every function takes plain arrays and an output path, writes a PNG (and a PDF beside it with
``pdf=True``) atomically, and returns the PNG path. Figures are built with
:class:`matplotlib.figure.Figure` on the non-interactive Agg canvas (no pyplot state, nothing
is shown) and the style is applied as a context (mplhep's CMS style), so global rcParams are
left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from hepflow.calibration._validation import as_numpy, check_names
from hepflow.calibration.sbc import default_rank_bins, rank_bin_edges
from hepflow.outputs.atomic import atomic_write
from hepflow.plotting import colors, experiment_label, style

__all__ = ["plot_coverage", "plot_rank_histograms", "plot_tarp"]

PathLike = str | os.PathLike[str]


def _new_figure(n_panels: int = 1) -> tuple[Figure, list[Any]]:
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(7.0 * ncols, 6.5 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    experiment_label(axes[0] if n_panels == 1 else fig)
    return fig, axes[:n_panels]


def _save(fig: Figure, path: PathLike, *, pdf: bool, dpi: int) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png") if out.suffix else out.with_name(out.name + ".png")
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    if pdf:
        with atomic_write(out.with_suffix(".pdf")) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight")
    fig.clear()
    return out


def plot_rank_histograms(
    ranks: Any,
    n_samples: int,
    path: PathLike,
    *,
    n_bins: int | None = None,
    names: Sequence[str] | None = None,
    band: float = 0.99,
    pdf: bool = False,
    dpi: int = 100,
) -> Path:
    """SBC rank histograms, one panel per parameter, with the binomial band of uniformity.

    The grey band spans the central ``band`` interval of Binomial(n, p_b) per bin, p_b the
    bin's share of the k + 1 rank values (binning as in :func:`hepflow.calibration.sbc.sbc_test`).

    Args:
        ranks: (n, d) or (n,) ranks in {0, ..., n_samples}.
        n_samples: k, the number of posterior samples behind each rank.
        path: output PNG path (a ``.png`` suffix is enforced).

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> r = np.random.default_rng(0).integers(0, 100, size=(500, 2))
        >>> p = plot_rank_histograms(r, 99, pathlib.Path(tempfile.mkdtemp()) / "ranks.png")
        >>> p.stat().st_size > 0
        True
    """
    r = np.asarray(ranks)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2:
        raise ValueError(f"ranks must have shape (n, d) or (n,), got {np.shape(ranks)}")
    n, d = r.shape
    labels = check_names(names, d)
    nb = default_rank_bins(n, n_samples) if n_bins is None else int(n_bins)
    edges = rank_bin_edges(int(n_samples), nb)
    p_bin = np.diff(edges) / (n_samples + 1)
    tail = (1.0 - band) / 2.0
    band_lo = stats.binom.ppf(tail, n, p_bin)
    band_hi = stats.binom.ppf(1.0 - tail, n, p_bin)
    with style():
        fig, axes = _new_figure(d)
        for j, ax in enumerate(axes):
            counts = np.histogram(r[:, j], bins=edges)[0]
            ax.stairs(
                band_hi, edges, baseline=band_lo, fill=True, color="0.85", label=f"{band:.0%} uniform band"
            )
            ax.stairs(n * p_bin, edges, color="0.4", linestyle="--", label="expected")
            ax.stairs(counts, edges, color="C0", linewidth=2, label="ranks")
            ax.set_xlabel(f"rank of {labels[j]}")
            ax.set_ylabel("observations")
            ax.set_xlim(0, n_samples + 1)
            ax.set_ylim(0, 1.35 * max(float(band_hi.max()), float(counts.max())))
            ax.legend(loc="upper right", fontsize="small")
        return _save(fig, path, pdf=pdf, dpi=dpi)


def plot_coverage(
    levels: Any,
    coverage: Any,
    path: PathLike,
    *,
    n_obs: int | None = None,
    names: Sequence[str] | None = None,
    hpd: Any = None,
    band: float = 0.99,
    pdf: bool = False,
    dpi: int = 100,
) -> Path:
    """Empirical against nominal coverage, with the diagonal (and a binomial band if ``n_obs``).

    Args:
        levels: (L,) nominal credibility levels.
        coverage: (L, d) or (L,) empirical coverage of the central intervals.
        path: output PNG path.
        n_obs: number of observations; draws the central ``band`` Binomial(n, alpha) / n band.
        names: d parameter names for the legend.
        hpd: (L,) joint HPD coverage to overlay.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> lv = np.linspace(0, 1, 11)
        >>> p = plot_coverage(lv, lv, pathlib.Path(tempfile.mkdtemp()) / "cov.png", n_obs=500)
        >>> p.stat().st_size > 0
        True
    """
    lv = as_numpy(levels, name="levels")
    cov = as_numpy(coverage, name="coverage")
    if cov.ndim == 1:
        cov = cov[:, None]
    if lv.ndim != 1 or cov.ndim != 2 or cov.shape[0] != lv.shape[0]:
        raise ValueError(f"expected levels (L,) and coverage (L, d), got {lv.shape} and {cov.shape}")
    labels = check_names(names, cov.shape[1])
    with style():
        fig, (ax,) = _new_figure(1)
        if n_obs:
            tail = (1.0 - band) / 2.0
            ax.fill_between(
                lv,
                stats.binom.ppf(tail, n_obs, lv) / n_obs,
                stats.binom.ppf(1.0 - tail, n_obs, lv) / n_obs,
                color="0.85",
                label=f"{band:.0%} binomial band",
            )
        ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", label="calibrated")
        for j, (name, color) in enumerate(zip(labels, colors(len(labels)), strict=True)):
            ax.plot(lv, cov[:, j], linewidth=2, color=color, label=f"{name} (central)")
        if hpd is not None:
            h = as_numpy(hpd, name="hpd")
            if h.shape != lv.shape:
                raise ValueError(f"hpd has shape {h.shape} but levels has shape {lv.shape}")
            ax.plot(lv, h, color="k", linewidth=2, linestyle=":", label="joint HPD")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("credibility level")
        ax.set_ylabel("empirical coverage")
        ax.legend(loc="upper left", fontsize="small")
        return _save(fig, path, pdf=pdf, dpi=dpi)


def plot_tarp(
    alpha: Any,
    ecp: Any,
    path: PathLike,
    *,
    atc: float | None = None,
    ks_pvalue: float | None = None,
    pdf: bool = False,
    dpi: int = 100,
) -> Path:
    """TARP expected coverage probability against credibility, with the diagonal.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> a = np.linspace(0, 1, 21)
        >>> p = plot_tarp(a, a, pathlib.Path(tempfile.mkdtemp()) / "tarp.png", atc=0.0)
        >>> p.stat().st_size > 0
        True
    """
    a = as_numpy(alpha, name="alpha")
    e = as_numpy(ecp, name="ecp")
    if a.ndim != 1 or a.shape != e.shape:
        raise ValueError(f"alpha and ecp must be 1-d of equal length, got {a.shape} and {e.shape}")
    with style():
        fig, (ax,) = _new_figure(1)
        ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", label="calibrated")
        ax.plot(a, e, color="C0", linewidth=2, label="TARP")
        text = []
        if atc is not None:
            text.append(f"ATC = {atc:+.3f}")
        if ks_pvalue is not None:
            text.append(f"KS p = {ks_pvalue:.2g}")
        if text:
            ax.text(0.95, 0.05, "\n".join(text), transform=ax.transAxes, ha="right", va="bottom")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("credibility level $\\alpha$")
        ax.set_ylabel("expected coverage")
        ax.legend(loc="upper left", fontsize="small")
        return _save(fig, path, pdf=pdf, dpi=dpi)
