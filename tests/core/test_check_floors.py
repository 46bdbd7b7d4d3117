"""tools/check_floors.py reads the floors pyproject.toml declares and orders releases right (the
installs and test runs it drives need the package index and are run by hand)."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_declared_floors_are_read_from_pyproject() -> None:
    tool = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))
    floors = tool["declared_floors"]()
    assert set(floors) == {"coffea", "awkward", "uproot"}
    text = (ROOT / "pyproject.toml").read_text()
    for name, version in floors.items():
        assert f'"{name}>={version}' in text


def test_release_order() -> None:
    newer = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))["_newer"]
    assert newer("2025.10.0", "2025.9.0")
    assert not newer("2025.1", "2025.1.0")
    assert newer("2.10.0", "2.9.1")


def test_package_names_compare_as_the_index_does() -> None:
    norm = runpy.run_path(str(ROOT / "tools" / "check_floors.py"))["_norm"]
    assert norm("awkward_cpp") == norm("Awkward-CPP") == "awkward-cpp"
