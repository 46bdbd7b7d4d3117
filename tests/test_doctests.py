"""Every docstring example of ``hepflow`` runs and prints what it shows.

One runner for all modules (found by walking the packages), so that a new module's examples are
checked without being listed anywhere. ``MIN_EXAMPLES`` keeps modules whose examples are part of
their documentation from silently losing them.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hepflow

MODULES = sorted({"hepflow"} | {m.name for m in pkgutil.walk_packages(hepflow.__path__, "hepflow.")})

#: modules that must keep at least this many examples
MIN_EXAMPLES = {
    "hepflow.cosmic.compare": 1,
    "hepflow.cosmic.config": 1,
    "hepflow.cosmic.data": 1,
    "hepflow.cosmic.report": 1,
    "hepflow.distributed": 1,
    "hepflow.cosmic.features": 1,
    "hepflow.neutrino.features": 5,
    "hepflow.neutrino.config": 1,
    "hepflow.neutrino.data": 1,
    "hepflow.neutrino.model": 1,
    "hepflow.neutrino.pipeline": 1,
    "hepflow.neutrino.quadratic": 1,
    "hepflow.neutrino.selection": 1,
    "hepflow.neutrino.shift": 1,
    "hepflow.posterior.shift": 4,
    "hepflow.cosmic.generate": 1,
    "hepflow.cosmic.mcmc": 1,
    "hepflow.cosmic.modes": 1,
    "hepflow.unfolding.binning": 1,
    "hepflow.unfolding.ibu": 1,
    "hepflow.unfolding.response": 1,
    "hepflow.unfolding.result": 1,
}


def test_every_listed_module_exists() -> None:
    assert set(MIN_EXAMPLES) <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted >= MIN_EXAMPLES.get(name, 0)
