"""Figures in one style, written the one way hepflow writes files: complete or not at all.

The reports build :class:`matplotlib.figure.Figure` objects directly (no pyplot, no global
state, safe in worker threads) and save them with :func:`save_figure`: rendered by the Agg
backend into a temporary file beside the target, renamed when complete
(:func:`hepflow.outputs.atomic.atomic_write`), with ``bbox_inches="tight"`` by default so that
no axis label is cut off.

One style for every report plot: :func:`figure` (the CMS style of mplhep, a
``hepflow Simulation`` label), :func:`hist_with_flow` (a step histogram that never hides or
piles up entries outside its range: the under- and overflow counts go into the legend label) and
:func:`caption` (a sentence under the axes saying what the plot shows).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(2, 2))
    >>> _ = fig.subplots().plot([0, 1], [1, 0])
    >>> path = save_figure(fig, Path(tempfile.mkdtemp()) / "line.png", dpi=50)
    >>> path.read_bytes()[:4] == b"\\x89PNG", path.name
    (True, 'line.png')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hepflow.outputs.atomic import atomic_write

__all__ = [
    "STYLE_OVERRIDES",
    "caption",
    "colors",
    "experiment_label",
    "figure",
    "hist_with_flow",
    "save_figure",
    "style",
]


#: hepflow's adjustments of mplhep's CMS style: type sizes that fit several methods in a legend
STYLE_OVERRIDES = {
    "font.size": 16,
    "axes.labelsize": 19,
    "axes.titlesize": 16,
    "legend.fontsize": 13,
    "xtick.labelsize": 15,
    "ytick.labelsize": 15,
    "legend.frameon": False,
}


def colors(n: int) -> list[str]:
    """``n`` line colours of the CMS palettes: the style's six (petroff6) up to six lines, the
    ten of petroff10 beyond, so that no two of up to ten lines share a colour.

    Example:
        >>> len(set(colors(7))), colors(1) == colors(6)[:1]
        (7, True)
    """
    import matplotlib as mpl
    import mplhep

    if n <= 6:
        with mpl.style.context(mplhep.style.CMS):
            palette = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    elif "petroff10" in mpl.style.library:
        palette = mpl.style.library["petroff10"]["axes.prop_cycle"].by_key()["color"]
    else:  # matplotlib < 3.10 has no petroff10 style: its colours
        palette = PETROFF10
    return [palette[i % len(palette)] for i in range(n)]


#: the ten colours of the petroff10 palette (matplotlib >= 3.10 ships them as a style)
PETROFF10 = [
    "#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6",
    "#a96b59", "#e76300", "#b9ac70", "#717581", "#92dadd",
]  # fmt: skip


def style() -> Any:
    """The context manager of hepflow's plot style: mplhep's CMS style with
    :data:`STYLE_OVERRIDES`. Build and save a figure inside it."""
    import matplotlib as mpl
    import mplhep

    return mpl.style.context([mplhep.style.CMS, STYLE_OVERRIDES])


def figure(
    *, nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (8, 6), label: str | None = "Simulation"
) -> tuple[Any, Any]:
    """A :class:`~matplotlib.figure.Figure` in hepflow's style and its axes (one, or an array).

    ``label`` is the text after a bold ``hepflow`` above the first axes (None: none). Call it,
    and draw and save, inside ``with style():`` so that every artist gets the style.
    """
    from matplotlib.figure import Figure

    with style():
        fig = Figure(figsize=figsize)
        axes = fig.subplots(nrows, ncols, squeeze=True)
        if label is not None:
            experiment_label(axes if nrows * ncols == 1 else fig, label)
    return fig, axes


def experiment_label(target: Any, label: str = "Simulation") -> None:
    """A bold ``hepflow`` and an italic ``label`` above an axes (left), or above all panels of a
    figure (top left of the figure)."""
    from matplotlib.figure import Figure

    text = rf"$\mathbf{{hepflow}}$ $\mathit{{{label}}}$"
    with style():
        if isinstance(target, Figure):
            target.text(0.01, 1.0, text, ha="left", va="bottom", fontsize=17)
        else:
            target.text(0.0, 1.015, text, transform=target.transAxes, ha="left", va="bottom", fontsize=17)


def hist_with_flow(
    ax: Any,
    values: Any,
    bins: Any,
    *,
    label: str,
    weights: Any = None,
    unit_weight: float = 1.0,
    **options: Any,
) -> tuple[float, float]:
    """A step histogram of ``values`` in ``bins``; entries outside go into the legend label.

    No entry is clipped into an edge bin (which draws a spike that is not in the data): the
    label reads ``label (under u, over o)`` when any entry lies outside, in units of
    events (the sum of ``weights``, divided by ``unit_weight``; e.g. ``unit_weight=K`` for K
    posterior samples per event). Returns (underflow, overflow).

    Example:
        >>> import numpy as np
        >>> fig, ax = figure(label=None)
        >>> hist_with_flow(ax, np.array([-5.0, 0.5, 0.6, 7.0, 9.0]), np.linspace(0, 1, 5), label="x")
        (1.0, 2.0)
        >>> ax.get_legend_handles_labels()[1]
        ['x (under 1, over 2)']
    """
    import numpy as np

    x = np.asarray(values, dtype=np.float64).ravel()
    w = (
        np.ones_like(x)
        if weights is None
        else np.broadcast_to(np.asarray(weights, np.float64), np.shape(values)).ravel()
    )
    edges = np.asarray(bins, dtype=np.float64)
    under = float(w[x < edges[0]].sum() / unit_weight)
    over = float(w[x > edges[-1]].sum() / unit_weight)
    flows = [f"{name} {v:.3g}" for name, v in (("under", under), ("over", over)) if v > 0]
    text = f"{label} ({', '.join(flows)})" if flows else label
    with style():
        ax.hist(x, bins=edges, weights=w / unit_weight, histtype="step", linewidth=2, label=text, **options)
    return under, over


def caption(fig: Any, text: str) -> None:
    """A caption under the axes of ``fig``, wrapped, in small type (saved with the figure)."""
    import textwrap

    width = max(40, int(fig.get_figwidth() * 13))
    fig.text(0.01, -0.01, "\n".join(textwrap.wrap(text, width)), ha="left", va="top", fontsize=11, wrap=False)


def save_figure(
    fig: Any,
    path: str | os.PathLike[str],
    *,
    dpi: float = 90,
    bbox_inches: str | None = "tight",
    **options: Any,
) -> Path:
    """Render ``fig`` with the Agg backend and write it to ``path`` as PNG, atomically.

    Args:
        fig: a :class:`matplotlib.figure.Figure`.
        path: the PNG file (its folder is created; an existing file is replaced).
        dpi: the resolution.
        bbox_inches: ``"tight"`` (default): the saved area includes every label and caption;
            None: the figure size as given.
        options: more keyword arguments of :meth:`~matplotlib.figure.Figure.savefig`.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches=bbox_inches, **options)
    return Path(path)
