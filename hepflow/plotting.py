"""Figures written the one way hepflow writes files: complete or not at all.

The reports build :class:`matplotlib.figure.Figure` objects directly (no pyplot, no global
state, safe in worker threads) and save them with :func:`save_figure`: rendered by the Agg
backend into a temporary file beside the target, renamed when complete
(:func:`hepflow.outputs.atomic.atomic_write`).

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

__all__ = ["save_figure"]


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: float = 90, **options: Any) -> Path:
    """Render ``fig`` with the Agg backend and write it to ``path`` as PNG, atomically.

    Args:
        fig: a :class:`matplotlib.figure.Figure`.
        path: the PNG file (its folder is created; an existing file is replaced).
        dpi: the resolution.
        options: more keyword arguments of :meth:`~matplotlib.figure.Figure.savefig`, e.g.
            ``bbox_inches="tight"``.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **options)
    return Path(path)
