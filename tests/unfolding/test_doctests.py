"""The examples in the unfolding docstrings run and give the printed results."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hepflow.unfolding.binning",
    "hepflow.unfolding.response",
    "hepflow.unfolding.ibu",
    "hepflow.unfolding.result",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
