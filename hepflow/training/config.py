"""The options of :func:`hepflow.fit` as a configuration section shared by the analyses.

Each analysis's ``[training]`` table is a :class:`FitConfig` (or a subclass adding options of its
own); :meth:`FitConfig.fit_options` turns it into keyword arguments of :func:`hepflow.fit`, so
the analyses configure the one training loop instead of repeating its arguments. Every value is
checked when the config is built (a negative learning rate or ``clip_grad`` is refused, naming
the key); ``clip_grad = "off"`` trains without gradient clipping.

Example:
    >>> FitConfig(epochs=3).fit_options()["epochs"]
    3
    >>> FitConfig(clip_grad="off").fit_options()["clip_grad"] is None
    True
    >>> FitConfig(clip_grad=-1)
    Traceback (most recent call last):
    ...
    hepflow.config.ValueOutOfBounds: FitConfig.clip_grad: expected a positive number or "off", got -1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hepflow.config import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, SEED, Bound, check_values

__all__ = ["FitConfig"]

#: a gradient-norm limit, or "off"
CLIP = Bound('a positive number or "off"', lambda v: v == "off" or POSITIVE.test(v))


@dataclass(frozen=True)
class FitConfig:
    """Optimiser, schedule, validation and early-stopping settings of :func:`hepflow.fit`."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    clip_grad: float | Literal["off"] = 5.0
    validation_split: float = 0.1
    patience: int = 10
    seed: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        check_values(
            self,
            epochs=COUNT,
            batch_size=COUNT,
            lr=POSITIVE,
            weight_decay=NON_NEGATIVE,
            clip_grad=CLIP,
            validation_split=FRACTION,
            patience=COUNT,
            seed=SEED,
        )

    def fit_options(self) -> dict[str, Any]:
        """The fields of :class:`FitConfig` as keyword arguments of :func:`hepflow.fit`."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(FitConfig)}
        if options["clip_grad"] == "off":
            options["clip_grad"] = None
        return options
