"""Shared fixtures: the real CMS NanoAOD samples and small derived files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import pytest
import uproot

SAMPLES = Path(__file__).parent / "samples"
COLLECTIONS = ("Jet", "Electron", "Muon", "GenPart", "MET", "PFMET")
#: per-event branches the processors read besides the collections
EVENT_BRANCHES = ("run", "luminosityBlock", "event", "genWeight")
#: a neutrino config small enough to train in seconds
TINY_NEUTRINO = {
    "summary": {"set_width": 16, "set_heads": 2, "flat_embedding": 8, "jet_embedding": 8},
    "flow": {"depth": 2, "width": 16, "bins": 4},
    "regression": {"width": 16, "layers": 1},
    "training": {"epochs": 1, "batch_size": 64, "seed": 3, "min_events": 50},
}


def load_benchmark(name: str) -> Any:
    """The script ``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    return _load_script("benchmarks", name)


def load_tool(name: str) -> Any:
    """The script ``tools/<name>.py`` as a module."""
    return _load_script("tools", name)


def _load_script(folder: str, name: str) -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def nano_v12() -> Path:
    """200 real CMS semileptonic ttbar events, NanoAODv12 (see tests/samples/README.md)."""
    return SAMPLES / "nano_tt_v12.root"


@pytest.fixture(scope="session")
def nano_v15() -> Path:
    """200 real CMS all-hadronic ttbar events, NanoAODv15 (MET stored as PFMET)."""
    return SAMPLES / "nano_tt_v15.root"


def write_nanoaod_subset(
    src: Path, dst: Path, *, drop: Sequence[str] = (), entry_stop: int | None = None
) -> Path:
    """Copy the branches of ``src`` that the neutrino processor reads into a new TTree at ``dst``.

    ``drop`` removes branches (e.g. ``"Jet_btagDeepFlavB"``) to test missing-branch errors.
    """
    return write_nanoaod(dst, read_nanoaod(src, drop=drop, entry_stop=entry_stop))


def read_nanoaod(
    src: Path, *, drop: Sequence[str] = (), entry_stop: int | None = None
) -> dict[str, ak.Array]:
    """The branches of ``src`` that the neutrino processor reads: event ids, the generator weight,
    flat MET branches and
    one record array per collection (``Jet``, ``Electron``, ...), ready for :func:`write_nanoaod`."""
    tree = uproot.open(src)["Events"]
    names = [
        k for k in tree.keys() if (k in EVENT_BRANCHES or k.split("_")[0] in COLLECTIONS) and k not in drop
    ]
    arrays = tree.arrays(names, entry_stop=entry_stop)
    branches: dict[str, ak.Array] = {}
    for coll in COLLECTIONS:
        fields = [k[len(coll) + 1 :] for k in arrays.fields if k.startswith(coll + "_")]
        if not fields:
            continue
        if arrays[f"{coll}_{fields[0]}"].ndim == 1:
            branches.update({f"{coll}_{f}": arrays[f"{coll}_{f}"] for f in fields})
        else:
            branches[coll] = ak.zip({f: arrays[f"{coll}_{f}"] for f in fields})
    branches.update({k: arrays[k] for k in EVENT_BRANCHES if k in arrays.fields})
    return branches


def write_nanoaod(dst: Path, branches: dict[str, ak.Array]) -> Path:
    """Write :func:`read_nanoaod` branches (possibly modified) as an ``Events`` TTree at ``dst``."""
    with uproot.recreate(dst) as fout:
        fout.mktree("Events", {k: v.type for k, v in branches.items()})
        fout["Events"].extend(branches)
    return dst


@pytest.fixture(scope="session")
def auger() -> Any:
    """The published Auger observation (spectrum and Xmax histograms from astrotools), built once."""
    from hepflow.cosmic import Observation

    return Observation.from_auger()


@pytest.fixture(scope="session")
def model(auger: Any) -> Any:
    """The cosmic-ray forward model for the Auger binning, built once for every cosmic test."""
    from hepflow.cosmic import ForwardModel

    return ForwardModel(auger)


@pytest.fixture(scope="session")
def generated_ttbar(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``get(events, seed) -> Path``: a generated ttbar file (the default pileup), made once per
    test session for every test that asks for the same size and seed (read-only: copy it to
    change it). Pythia and the pileup library take seconds to start, so the tests that train,
    the demo and the notebook share these samples instead of generating their own."""
    from hepflow.generate.ttbar import generate_ttbar

    root = tmp_path_factory.mktemp("generated_ttbar")
    made: dict[tuple[int, int], Path] = {}

    def get(events: int, seed: int) -> Path:
        if (events, seed) not in made:
            path = root / f"tt_{events}_seed{seed}.root"
            generate_ttbar(path, events=events, seed=seed, progress=False)
            made[events, seed] = path
        return made[events, seed]

    return get


#: the generated samples the tests share (``generated_ttbar``): the demo's and the notebook's
#: training sample (seed 1) and held-out sample (seed 2)
TTBAR_TRAIN = (700, 1)
TTBAR_HELDOUT = (350, 2)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, nano_v12: Path) -> Path:
    """Flow and regression trained for one epoch on the v12 sample (twice: 104 events, 98 with a
    truth neutrino)."""
    from hepflow.config import from_dict
    from hepflow.neutrino.config import NeutrinoConfig
    from hepflow.neutrino.pipeline import train
    from hepflow.neutrino.processor import NeutrinoFeatureProcessor
    from hepflow.processing import RunConfig, build_fileset, run_processor

    d = tmp_path_factory.mktemp("tiny_models")
    copy = d / "copy.root"
    copy.write_bytes(nano_v12.read_bytes())
    run_processor(
        NeutrinoFeatureProcessor(), build_fileset([nano_v12, copy]), d / "features", RunConfig(progress=False)
    )
    train(d / "features", d / "models", config=from_dict(NeutrinoConfig, TINY_NEUTRINO), progress=False)
    return d / "models"
