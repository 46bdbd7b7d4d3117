"""The notebooks execute top to bottom on tiny settings (environment variables HEPFLOW_NB_*)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import TTBAR_HELDOUT, TTBAR_TRAIN

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))
#: per notebook: the modules it needs, its tiny settings and the files it must write
SETTINGS: dict[str, dict] = {
    "neutrino_walkthrough": {
        "needs": ("pythia8mc", "fastjet"),
        "env": {
            "HEPFLOW_NB_EVENTS": str(TTBAR_TRAIN[0]),
            "HEPFLOW_NB_HELDOUT_EVENTS": str(TTBAR_HELDOUT[0]),
            "HEPFLOW_NB_EPOCHS": "1",
            "HEPFLOW_NB_SAMPLES": "16",
        },
        # the session's generated samples, where the notebook looks for its own (it skips
        # generating a file that exists)
        "samples": {"ttbar.root": TTBAR_TRAIN, "ttbar_heldout.root": TTBAR_HELDOUT},
        "writes": ("models/flow/config.json", "report/report.json"),
    },
    "cosmic_walkthrough": {
        "needs": ("emcee",),
        "env": {
            "HEPFLOW_NB_PSEUDO_EXPERIMENTS": "400",
            "HEPFLOW_NB_EPOCHS": "1",
            "HEPFLOW_NB_COSMIC_SAMPLES": "300",
            "HEPFLOW_NB_MCMC_STEPS": "100",
            "HEPFLOW_NB_MCMC_STARTS": "1",
            "HEPFLOW_NB_MOCKS": "20",
        },
        "writes": ("model/flow/config.json", "corner_auger.png", "calibration/coverage.png"),
    },
}


def _marks(path: Path) -> list[pytest.MarkDecorator]:
    needs = SETTINGS.get(path.stem, {}).get("needs", ())
    return [pytest.mark.generation] if "pythia8mc" in needs else []


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem, marks=_marks(p)) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, request):
    settings = SETTINGS.get(path.stem)
    assert settings is not None, f"add the tiny settings of {path.name} to SETTINGS"
    for module in settings["needs"]:
        pytest.importorskip(module)
    for key, value in settings["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HEPFLOW_NB_DIR", str(tmp_path))
    for name, (events, seed) in settings.get("samples", {}).items():
        shutil.copy(request.getfixturevalue("generated_ttbar")(events, seed), tmp_path / name)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend: plots as outputs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torch in the kernel: one thread on a busy machine
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "clear the outputs"
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    for name in settings["writes"]:
        assert (tmp_path / name).is_file(), name
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "no inline plot"
