"""Check the lowest versions pyproject.toml allows for coffea, awkward, uproot and torch.

For each package, installs its declared floor (``pip install --target``, every other package
constrained to the environment's version) into a scratch folder that shadows the environment's
copy, and runs the tests that exercise it: for coffea, awkward and uproot the coffea-integration
tests (hepflow's processors in a user's ``processor.Runner`` with several executors, the
processors' own tests and the user-facing example), for torch the training, serialization,
export and inference tests; then all floors together. With ``--search``, a floor that fails is
raised to the lowest release that passes (releases are tried in increasing order; with
``--series``, only the first release of each minor series). Prints one line per check and a
table of the floors to set.

    python tools/check_floors.py                          # the declared floors
    python tools/check_floors.py --search coffea          # the lowest coffea release that passes
    python tools/check_floors.py --only torch --search torch --series

Needs network access to the package index and a few minutes per check (2 cores). Older torch
releases on the public index are CUDA builds: each torch check downloads about 3 GB (torch and
its ``nvidia-*`` libraries) and runs them on the CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coffea", "awkward", "uproot", "torch")
COFFEA_TESTS = (
    "tests/processors/test_runner.py",
    "tests/neutrino/test_processor.py",
    "tests/core/test_examples.py",
)
TORCH_TESTS = (
    "tests/training/test_fit.py",
    "tests/training/test_weights.py",
    "tests/flows/test_serialization.py",
    "tests/inference/test_export.py",
    "tests/inference/test_coffea_wrapper.py",
    "tests/posterior/test_posterior.py",
)
TESTS = {"coffea": COFFEA_TESTS, "awkward": COFFEA_TESTS, "uproot": COFFEA_TESTS, "torch": TORCH_TESTS}
PYTEST_OPTIONS = ("-q", "-p", "no:cacheprovider", "-x", "-k", "not dask")
# installed beside a package at the version it requires, not the environment's (torch 2.5 pins
# sympy 1.13.1; awkward-cpp follows awkward)
COMPANIONS = {"awkward": ("awkward-cpp",), "torch": ("sympy",)}


def declared_floors() -> dict[str, str]:
    """``{package: floor}`` from the ``dependencies`` of pyproject.toml (``name>=version``)."""
    text = (ROOT / "pyproject.toml").read_text()
    floors = {}
    for name in PACKAGES:
        match = re.search(rf'"{name}>=([0-9][^",;<]*)', text)
        if match is None:
            raise SystemExit(f"pyproject.toml: no floor for {name}")
        floors[name] = match.group(1)
    return floors


def tests_for(pins: dict[str, str]) -> list[str]:
    """The test files that exercise the pinned packages, each once, in a stable order."""
    return list(dict.fromkeys(path for name in pins for path in TESTS[name]))


def first_of_series(versions: list[str]) -> list[str]:
    """The first release of each ``major.minor`` series in ``versions`` (oldest first)."""
    seen: dict[tuple[int, ...], str] = {}
    for version in versions:
        seen.setdefault(tuple(int(p) for p in version.split(".")[:2]), version)
    return list(seen.values())


def releases(name: str) -> list[str]:
    """The releases of ``name`` on the index, oldest first (final releases only)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name], capture_output=True, text=True, check=True
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("Available versions:"))
    versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
    finals = [v for v in versions if re.fullmatch(r"[0-9]+(\.[0-9]+)*", v)]
    return sorted(finals, key=lambda v: tuple(int(p) for p in v.split(".")))


def passes(pins: dict[str, str]) -> tuple[bool, str]:
    """Install ``pins`` into a scratch folder in front of the environment and run the tests."""
    with tempfile.TemporaryDirectory(prefix="hepflow-floors-") as target:
        # everything else stays at the environment's versions (a release that cannot live with
        # them fails to install); compiled companions (awkward-cpp) follow their package
        freeze = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        free = {_norm(n) for n in pins} | {_norm(c) for n in pins for c in COMPANIONS.get(n, ())}
        constraints = Path(target) / "constraints.txt"
        constraints.write_text(
            "\n".join(line for line in freeze if "==" in line and _norm(line.split("==")[0]) not in free)
        )
        install = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(Path(target) / "site"),
                "-c",
                str(constraints),
                *(f"{n}=={v}" for n, v in pins.items()),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode:
            return False, "install failed: " + install.stderr.strip().splitlines()[-1]
        env = {**os.environ, "PYTHONPATH": str(Path(target) / "site")}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *tests_for(pins)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        # pytest's summary line, or (an import failing in conftest) the last line of stderr
        lines = [line for line in run.stdout.splitlines() if line.strip()] or [
            line for line in run.stderr.splitlines() if line.strip()
        ]
        return run.returncode == 0, lines[-1] if lines else "(no output)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", nargs="*", default=[], choices=PACKAGES, help="raise failing floors")
    parser.add_argument("--only", nargs="*", default=list(PACKAGES), choices=PACKAGES, help="check these")
    parser.add_argument("--series", action="store_true", help="search the first release of each minor series")
    args = parser.parse_args(argv)
    floors = {n: v for n, v in declared_floors().items() if n in args.only}
    found = {}
    for name, floor in floors.items():
        ok, tail = passes({name: floor})
        print(f"{name}=={floor}: {'passes' if ok else 'FAILS'} ({tail})", flush=True)
        found[name] = floor if ok else None
        if not ok and name in args.search:
            candidates = [v for v in releases(name) if _newer(v, floor)]
            for version in first_of_series(candidates) if args.series else candidates:
                ok, tail = passes({name: version})
                print(f"  {name}=={version}: {'passes' if ok else 'fails'} ({tail})", flush=True)
                if ok:
                    found[name] = version
                    break
    together = {n: v for n, v in found.items() if v is not None}
    if len(together) == len(floors) > 1:
        ok, tail = passes(together)
        print(f"all floors together {together}: {'passes' if ok else 'FAILS'} ({tail})")
    print("\npackage   declared   lowest passing")
    for name, floor in floors.items():
        print(f"{name:<9} {floor:<10} {found[name] or 'not found'}")
    return 0 if all(found[n] == floors[n] for n in floors) else 1


def _norm(name: str) -> str:
    """A package name as the index compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _newer(a: str, b: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        parts = [int(p) for p in re.findall(r"[0-9]+", v)]
        while parts and parts[-1] == 0:  # 2.2 and 2.2.0 are the same release
            parts.pop()
        return tuple(parts)

    return key(a) > key(b)


if __name__ == "__main__":
    sys.exit(main())
