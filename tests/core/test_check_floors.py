"""tools/check_floors.py reads the floors pyproject.toml declares (torch included), orders releases
right and picks the tests per package (the installs and test runs it drives need the package index
and are run by hand)."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_declared_floors_are_read_from_pyproject() -> None:
    tool = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))
    floors = tool["declared_floors"]()
    assert set(floors) == {"coffea", "awkward", "uproot", "torch"}
    text = (ROOT / "pyproject.toml").read_text()
    for name, version in floors.items():
        assert f'"{name}>={version}' in text


def test_release_order() -> None:
    newer = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))["_newer"]
    assert newer("2025.10.0", "2025.9.0")
    assert not newer("2025.1", "2025.1.0")
    assert newer("2.10.0", "2.9.1")
    assert not newer("2.2.0", "2.2")  # the declared floor is not searched again
    assert newer("2.2.1", "2.2")


def test_search_by_series_takes_the_first_release_of_each_minor() -> None:
    first = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))["first_of_series"]
    assert first(["2.2.0", "2.2.1", "2.3.0", "2.3.1", "2.10.0"]) == ["2.2.0", "2.3.0", "2.10.0"]


def test_each_package_runs_the_tests_that_exercise_it() -> None:
    tool = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))
    torch_tests = tool["tests_for"]({"torch": "2.4"})
    assert "tests/inference/test_export.py" in torch_tests
    assert "tests/training/test_fit.py" in torch_tests
    assert "tests/processors/test_runner.py" not in torch_tests
    both = tool["tests_for"]({"coffea": "2026.7", "awkward": "2.13", "torch": "2.4"})
    assert len(both) == len(set(both)) == len(tool["COFFEA_TESTS"]) + len(tool["TORCH_TESTS"])
    for path in both:
        assert (ROOT / path).is_file()


def test_package_names_compare_as_the_index_does() -> None:
    norm = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))["_norm"]
    assert norm("awkward_cpp") == norm("Awkward-CPP") == "awkward-cpp"
