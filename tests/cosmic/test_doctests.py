"""The examples in the cosmic-ray docstrings run and give the printed results."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hepflow.cosmic",
    "hepflow.cosmic.tables",
    "hepflow.cosmic.source",
    "hepflow.cosmic.propagation",
    "hepflow.cosmic.xmax",
    "hepflow.cosmic.auger",
    "hepflow.cosmic.observation",
    "hepflow.cosmic.model",
    "hepflow.cosmic.priors",
    "hepflow.cosmic.likelihood",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
