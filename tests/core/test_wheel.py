"""The built wheel works on its own: configs are package data, no top-level ``processors`` package.

Builds the wheel of this checkout, installs it without dependencies into a fresh virtual
environment outside the repository (the dependencies come from the test environment's
site-packages through a path entry, so nothing is downloaded), and runs the command line there
from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import uproot

from hepflow.config import read_toml, shipped_config

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built outside the repository."""
    work = tmp_path_factory.mktemp("wheel")
    assert ROOT not in work.parents
    return _build_wheel(ROOT, work)


def _build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` of the project in ``source`` (no dependencies, no isolation) into ``out``."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out)]
    built = _run([*cmd, str(source)], out)
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("hepflow-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the hepflow wheel installed in it; returns its bin folder."""
    work = tmp_path_factory.mktemp("venv")
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work)
    # the dependencies: this environment's site-packages as a plain path entry (its .pth files,
    # among them the editable install of this checkout, are not processed from there)
    (Path(site.stdout.strip()) / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)], work
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv / "bin"


def test_the_wheel_ships_the_configs_and_no_top_level_processors(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for toml in (
        "hepflow/neutrino/config.toml",
        "hepflow/cosmic/config.toml",
        "hepflow/cosmic/config_stick_breaking.toml",
        "hepflow/unfolding/config.toml",
    ):
        assert toml in names
    assert {n.split("/")[0] for n in names if not n.startswith("hepflow-")} == {"hepflow"}
    # the pretrained-model machinery, and the model with its card when this checkout has one
    for module in ("__init__", "card", "build"):
        assert f"hepflow/neutrino/pretrained/{module}.py" in names
    for analysis in ("neutrino", "cosmic"):
        shipped = ROOT / "hepflow" / analysis / "pretrained" / "model"
        if shipped.is_dir():
            for path in (p for p in shipped.rglob("*") if p.is_file()):
                assert path.relative_to(ROOT).as_posix() in names


def test_the_wheel_ships_the_pretrained_model_folder(tmp_path: Path) -> None:
    """Every file of a pretrained model installed in hepflow/neutrino/pretrained/model (package
    data) goes into the wheel, with its card; built from a copy of the source tree holding one."""
    import shutil

    from hepflow.neutrino.pretrained.card import CARD_JSON, CARD_MD, MODEL_FILES

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "hepflow", src / "hepflow", ignore=shutil.ignore_patterns("__pycache__", "model"))
    model = src / "hepflow" / "neutrino" / "pretrained" / "model"
    for name in (*MODEL_FILES, CARD_JSON, CARD_MD):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_bytes(b"\x00" * 64)
    wheel = _build_wheel(src, tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*MODEL_FILES, CARD_JSON, CARD_MD):
        assert f"hepflow/neutrino/pretrained/model/{name}" in names


def test_installed_wheel_runs_with_the_shipped_config(installed: Path, tmp_path: Path) -> None:
    where = _run([str(installed / "python"), "-c", "import hepflow; print(hepflow.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout  # not this checkout
    no_processors = _run([str(installed / "python"), "-c", "import processors"], tmp_path)
    assert "No module named 'processors'" in no_processors.stderr

    shown = _run([str(installed / "hepflow"), "config", "show", "cosmic"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == shipped_config("cosmic").read_text()

    out = tmp_path / "pe.root"
    gen = _run(
        [
            str(installed / "hepflow"),
            "generate",
            "cosmic",
            "--n",
            "10",
            "--output",
            str(out),
            "--no-progress",
        ],
        tmp_path,
    )
    assert gen.returncode == 0, gen.stderr[-2000:]
    with uproot.open(out) as f:
        assert f["PseudoExperiments"].num_entries == 10
        meta = json.loads(f["metadata"])
    shipped = read_toml(shipped_config("cosmic"))
    assert meta["n"] == 10
    assert meta["prior"]["gamma"] == shipped["prior"]["gamma"]
    # config=None is the shipped file (800 000 pseudo-experiments), not the built-in defaults
    n = _run(
        [
            str(installed / "python"),
            "-c",
            "from hepflow.cosmic.config import load_config as c; print(c().generation.n)",
        ],
        tmp_path,
    )
    assert n.stdout.strip() == str(shipped["generation"]["n"]) == "800000", n.stderr
