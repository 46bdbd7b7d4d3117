"""Per-epoch training history: a dataclass, its JSON file and a loss-curve plot."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hepflow.errors import InputError

__all__ = ["History", "plot_history"]


@dataclass
class History:
    """What :func:`hepflow.fit` measured, one entry per epoch.

    Losses are the model's ``training_loss`` per epoch, named by ``loss`` (the model's
    ``loss_name``: the mean negative log-likelihood in nats for a flow, the mean squared error in
    standardised units for a :class:`~hepflow.flows.regression.Regressor`); ``val_loss`` entries
    are ``None`` without a validation set. ``time`` is the wall time of each epoch in seconds and
    ``samples_per_s`` the training throughput (validation excluded).

    Example:
        >>> h = History()
        >>> h.append(epoch=1, train_loss=2.0, val_loss=2.1, lr=1e-3, time=0.5, samples_per_s=1e4)
        >>> h.final_val_loss
        2.1
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    samples_per_s: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    loss: str = "negative log-likelihood [nats]"

    def append(
        self,
        *,
        epoch: int,
        train_loss: float,
        val_loss: float | None,
        lr: float,
        time: float,
        samples_per_s: float,
    ) -> None:
        """Record one epoch."""
        self.epoch.append(int(epoch))
        self.train_loss.append(float(train_loss))
        self.val_loss.append(None if val_loss is None else float(val_loss))
        self.lr.append(float(lr))
        self.time.append(float(time))
        self.samples_per_s.append(float(samples_per_s))

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def final_val_loss(self) -> float | None:
        """Validation loss of the last epoch (``None`` without validation)."""
        return self.val_loss[-1] if self.val_loss else None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary (non-finite numbers become ``None``)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return {k: clean(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the history as JSON (atomically); returns the path."""
        from hepflow.outputs.atomic import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> History:
        """Read a history written by :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise InputError(f"cannot read training history {path}: {err}") from err

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Loss curves; see :func:`plot_history`."""
        return plot_history(self, path)


def plot_history(history: History, path: str | os.PathLike[str] | None = None) -> Any:
    """Draw training and validation loss (and the learning rate) per epoch.

    Returns the matplotlib figure; writes a PNG when ``path`` is given. Uses the object-oriented
    API with the Agg canvas, so no global pyplot state or display is involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(history.epoch, history.train_loss, label="train", color="C0")
    val = [(e, v) for e, v in zip(history.epoch, history.val_loss, strict=True) if v is not None]
    if val:
        ax.plot([e for e, _ in val], [v for _, v in val], label="validation", color="C1")
    if history.best_epoch is not None:
        ax.axvline(history.best_epoch, color="grey", ls=":", label=f"best (epoch {history.best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(history.loss)
    ax.legend(loc="upper right")
    if history.lr:
        ax2 = ax.twinx()
        ax2.plot(history.epoch, history.lr, color="grey", alpha=0.4, lw=1)
        ax2.set_ylabel("learning rate", color="grey")
    if path is not None:
        from hepflow.outputs.atomic import atomic_write

        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    return fig
