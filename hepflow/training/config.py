"""The options of :func:`hepflow.fit` as a configuration section shared by the analyses.

Each analysis's ``[training]`` table is a :class:`FitConfig` (or a subclass adding options of its
own); :meth:`FitConfig.fit_options` turns it into keyword arguments of :func:`hepflow.fit`, so
the analyses configure the one training loop instead of repeating its arguments.

Example:
    >>> FitConfig(epochs=3).fit_options()["epochs"]
    3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hepflow.errors import ConfigError

__all__ = ["FitConfig"]


@dataclass(frozen=True)
class FitConfig:
    """Optimiser, schedule, validation and early-stopping settings of :func:`hepflow.fit`."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    clip_grad: float = 5.0
    validation_split: float = 0.1
    patience: int = 10
    seed: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError(
                f"training.epochs, batch_size and patience must be positive, got "
                f"{self.epochs}, {self.batch_size}, {self.patience}"
            )
        if not 0.0 <= self.validation_split < 1.0:
            raise ConfigError(f"training.validation_split must lie in [0, 1), got {self.validation_split}")

    def fit_options(self) -> dict[str, Any]:
        """The fields of :class:`FitConfig` as keyword arguments of :func:`hepflow.fit`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(FitConfig)}
