"""Shared fixtures of the cosmic-ray pipeline tests: the forward model and small generated files."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hepflow.cosmic import ForwardModel

#: The first minimum quoted for the Auger combined fit (EPOS-LHC).
COMBINED_FIT = np.array([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0])
#: An interior parameter point (every fraction > 0) for accuracy tests.
INTERIOR = np.array([1.2, 18.75, 0.15, 0.35, 0.3, 0.15, 0.05])
N_PSEUDO = 1500
#: the smallest cINN the pipeline tests train (each file sets its own training and MCMC sizes)
TINY_FLOW = {
    "depth": 2,
    "width": 16,
    "bins": 4,
    "summary_width": 16,
    "flat_embedding": 8,
    "xmax_embedding": 8,
    "cnn_channels": [4],
    "mlp_embedding": 8,
}


def _numpy_openblas() -> tuple[object, object] | None:
    """get/set functions of the OpenBLAS that numpy loaded (Linux), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    libs = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line.lower()})
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


@pytest.fixture(scope="package", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """Run these tests with one OpenBLAS thread, restored afterwards.

    The likelihood works on batches of 12 to 32 rows, where BLAS threads on a shared two-core
    machine make each call ~6x slower (measured); one thread also leaves the other core to others.
    """
    funcs = _numpy_openblas()
    if funcs is None:
        yield
        return
    get, put = funcs
    old = int(get())
    put(1)
    try:
        yield
    finally:
        put(old)


@pytest.fixture(scope="session")
def pe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small PseudoExperiments file (default config, seed 11)."""
    from hepflow.cosmic.generate import generate_cosmic

    path = tmp_path_factory.mktemp("cosmic") / "pe.root"
    generate_cosmic(path, n=N_PSEUDO, seed=11, batch_size=700, progress=False)
    return path


@pytest.fixture(scope="session")
def showers(model: ForwardModel) -> tuple[np.ndarray, np.ndarray]:
    """One Auger-sized shower list at the combined-fit point."""
    from hepflow.cosmic.generate import sample_showers

    return sample_showers(COMBINED_FIT, 5, model=model)


@pytest.fixture(scope="session")
def shower_file(tmp_path_factory: pytest.TempPathFactory, showers: tuple[np.ndarray, np.ndarray]) -> Path:
    from hepflow.cosmic.generate import write_showers

    path = tmp_path_factory.mktemp("cosmic") / "showers.root"
    write_showers(path, *showers, metadata={"theta": COMBINED_FIT.tolist()})
    return path


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread, restored afterwards: on a busy machine two are slower, not faster."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
