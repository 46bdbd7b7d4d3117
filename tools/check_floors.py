"""Check the lowest versions pyproject.toml allows for coffea, awkward and uproot.

For each package, installs its declared floor (``pip install --target``, every other package
constrained to the environment's version) into a scratch folder that shadows the environment's
copy, and runs the coffea-integration tests (hepflow's
processors in a user's ``processor.Runner`` with several executors, the processors' own tests and
the user-facing example) with it; then all floors together. With ``--search``, a floor that fails
is raised to the lowest release that passes (releases are tried in increasing order). Prints one
line per check and a table of the floors to set.

    python tools/check_floors.py                 # the declared floors
    python tools/check_floors.py --search coffea # the lowest coffea release that passes

Needs network access to the package index and a few minutes per check (2 cores). torch is not
checked: only the installed build is available offline, and older torch wheels on the public
index are CUDA builds of several GB.
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
PACKAGES = ("coffea", "awkward", "uproot")
TESTS = [
    "tests/processors/test_runner.py",
    "tests/neutrino/test_processor.py",
    "tests/core/test_examples.py",
    "-k",
    "not dask",
]


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
        free = {_norm(n) for n in pins} | {_norm(f"{n}-cpp") for n in pins}
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
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *TESTS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        tail = [line for line in run.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
        return run.returncode == 0, tail[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", nargs="*", default=[], choices=PACKAGES, help="raise failing floors")
    parser.add_argument("--only", nargs="*", default=list(PACKAGES), choices=PACKAGES, help="check these")
    args = parser.parse_args(argv)
    floors = {n: v for n, v in declared_floors().items() if n in args.only}
    found = {}
    for name, floor in floors.items():
        ok, tail = passes({name: floor})
        print(f"{name}=={floor}: {'passes' if ok else 'FAILS'} ({tail})", flush=True)
        found[name] = floor if ok else None
        if not ok and name in args.search:
            for version in (v for v in releases(name) if _newer(v, floor)):
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
        return tuple(int(p) for p in re.findall(r"[0-9]+", v))

    return key(a) > key(b)


if __name__ == "__main__":
    sys.exit(main())
