"""The examples in the docstrings of the cosmic pipeline run and give the printed results."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["hepflow.features.cosmic", "hepflow.generate.cosmic", "hepflow.mcmc"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
