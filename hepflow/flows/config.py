"""The coupling architecture of a :class:`~hepflow.flows.inn.ConditionalINN` as a config section.

Each analysis's ``[flow]`` table is a :class:`FlowArchitecture` (or a subclass adding its summary
network's options); :meth:`FlowArchitecture.inn_options` gives the keyword arguments of
:class:`~hepflow.flows.inn.ConditionalINN`, so the analyses do not repeat them.

Example:
    >>> FlowArchitecture(depth=3).inn_options()["depth"]
    3
    >>> FlowArchitecture(width=10**9)  # refused before anything is allocated
    Traceback (most recent call last):
    ...
    hepflow.config.ValueOutOfBounds: FlowArchitecture.width: expected an integer in [1, 16384], got 1000000000
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hepflow.config import POSITIVE, SIZE, check_values

__all__ = ["FlowArchitecture"]


@dataclass(frozen=True)
class FlowArchitecture:
    """Block type, depth and subnet size of the coupling flow; spline bins and tail bound."""

    blocks: Literal["spline", "affine"] = "spline"
    depth: int = 6
    width: int = 128
    layers: int = 2
    bins: int = 8
    bound: float = 5.0

    def __post_init__(self) -> None:
        check_values(self, depth=SIZE, width=SIZE, layers=SIZE, bins=SIZE, bound=POSITIVE)

    def inn_options(self) -> dict[str, Any]:
        """The fields of :class:`FlowArchitecture` as keyword arguments of ``ConditionalINN``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(FlowArchitecture)}
