"""CRPropa-3 propagation tables shipped by the installed ``astrotools`` package.

astrotools 1.5 ships three tables, one per infrared background model (``Gilmore12``,
``Dominguez11``, ``Kneiske04``), as ``astrotools/simulation/crpropa3__emin_18.5__emax_21.0__IRB_<irb>.npz``.
Each holds

* ``log10e_bins``: 126 edges in lg(E/eV), 18.5 .. 21.0 in steps of 0.02;
* ``distances``: 100 log-spaced source distances, 1 .. 1500 Mpc;
* ``fractions``: a dict ``{"h", "he", "n", "si", "fe"}`` of arrays of shape
  (125 injected lg E bins, 100 distances, 5 arriving charge groups, 125 arriving lg E bins).
  Entry ``[i, d, c, j]`` is the number of particles of charge group ``c`` arriving in energy
  bin ``j`` per particle injected in bin ``i`` at distance ``d`` (times 1e-4, a constant that
  cancels; fragments count individually, so a nucleus of mass ``A`` yields up to ``A``
  arriving particles). Injection inside a bin is uniform in lg E (an E^-1 spectrum).

The dict is stored as a pickled object array, so reading it needs ``allow_pickle=True``. This
module only ever unpickles the files inside the installed astrotools package directory, located
with :func:`importlib.util.find_spec` (which does not import astrotools: its ``__init__``
imports ``pkg_resources``, gone from recent setuptools). The table is converted once into a
plain sparse cache (``.npz`` of numeric arrays, about 16 MB, read with ``allow_pickle=False``)
under ``$HEPFLOW_CACHE_DIR`` or ``$XDG_CACHE_HOME/hepflow`` (default ``~/.cache/hepflow``),
keyed by the SHA-256 of the source file, and kept in memory per process.

Example:
    >>> table = load_table("Gilmore12")
    >>> table.shape
    (5, 125, 100, 5, 125)
    >>> table.dense("he").shape
    (125, 100, 5, 125)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hepflow.errors import ConfigError, InputError

__all__ = [
    "ARRIVING_CHARGES",
    "IRB_MODELS",
    "TABLE_SPECIES",
    "PropagationTable",
    "astrotools_data_dir",
    "cache_dir",
    "load_table",
]

#: Infrared background models of the shipped tables (astrotools uses Gilmore12 by default).
IRB_MODELS: tuple[str, ...] = ("Gilmore12", "Dominguez11", "Kneiske04")
#: Injected species, in the order of the first axis of :attr:`PropagationTable.shape`.
TABLE_SPECIES: tuple[str, ...] = ("h", "he", "n", "si", "fe")
#: Charge representing each arriving charge group (axis 3 of the table).
ARRIVING_CHARGES: tuple[int, ...] = (1, 2, 7, 14, 26)

_SHAPE = (len(TABLE_SPECIES), 125, 100, len(ARRIVING_CHARGES), 125)
_CACHE_VERSION = 1


def astrotools_data_dir() -> Path:
    """Directory of the installed astrotools package (its data files live below it).

    The package is located without importing it. Raises :class:`~hepflow.errors.InputError`
    when astrotools is not installed.
    """
    spec = importlib.util.find_spec("astrotools")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the cosmic-ray model needs the CRPropa tables and Auger data shipped by the 'astrotools' "
            "package: install it with `pip install 'hepflow[cosmic]'`"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _source_file(irb: str) -> Path:
    if irb not in IRB_MODELS:
        raise ConfigError(f"unknown infrared background {irb!r}; choose one of {', '.join(IRB_MODELS)}")
    path = astrotools_data_dir() / "simulation" / f"crpropa3__emin_18.5__emax_21.0__IRB_{irb}.npz"
    if not path.is_file():
        raise InputError(f"CRPropa table {path} is missing from the installed astrotools package")
    return path


def cache_dir() -> Path:
    """Directory of hepflow's cosmic-ray caches (``$HEPFLOW_CACHE_DIR`` wins over XDG)."""
    if env := os.environ.get("HEPFLOW_CACHE_DIR"):
        return Path(env) / "cosmic"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hepflow" / "cosmic"


@dataclass(frozen=True, eq=False)
class PropagationTable:
    """A CRPropa table as plain arrays, stored sparsely.

    Attributes:
        irb: infrared background model.
        lg_e_edges: (126,) lg(E/eV) bin edges, shared by injected and arriving energies.
        distances: (100,) source distances in Mpc.
        index: flat indices into :attr:`shape` of the non-zero entries (sorted).
        values: the non-zero entries.
    """

    irb: str
    lg_e_edges: np.ndarray
    distances: np.ndarray
    index: np.ndarray
    values: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(injected species, injected lg E, distance, arriving charge group, arriving lg E)."""
        return _SHAPE  # type: ignore[return-value]

    @property
    def lg_e_centers(self) -> np.ndarray:
        """(125,) bin centres in lg(E/eV)."""
        return 0.5 * (self.lg_e_edges[1:] + self.lg_e_edges[:-1])

    def dense(self, species: str) -> np.ndarray:
        """The (125, 100, 5, 125) table of one injected species (``"h"``, ``"he"``, ...)."""
        if species not in TABLE_SPECIES:
            raise ConfigError(f"unknown species {species!r}; choose one of {', '.join(TABLE_SPECIES)}")
        s = TABLE_SPECIES.index(species)
        block = int(np.prod(_SHAPE[1:]))
        lo, hi = np.searchsorted(self.index, [s * block, (s + 1) * block])
        out = np.zeros(block)
        out[self.index[lo:hi] - s * block] = self.values[lo:hi]
        return out.reshape(_SHAPE[1:])

    def contract_distance(self, weights: np.ndarray) -> np.ndarray:
        """Sum over source distances with ``weights`` (100,): returns (5, 125, 5, 125).

        Example:
            >>> w = np.zeros(100); w[0] = 1.0  # all sources at 1 Mpc
            >>> load_table().contract_distance(w).shape
            (5, 125, 5, 125)
        """
        weights = np.asarray(weights, dtype=float)
        if weights.shape != (_SHAPE[2],):
            raise ConfigError(f"distance weights must have shape ({_SHAPE[2]},), got {weights.shape}")
        s, i, d, c, j = np.unravel_index(self.index, _SHAPE)
        out_index = np.ravel_multi_index((s, i, c, j), (_SHAPE[0], _SHAPE[1], _SHAPE[3], _SHAPE[4]))
        n_out = _SHAPE[0] * _SHAPE[1] * _SHAPE[3] * _SHAPE[4]
        flat = np.bincount(out_index, weights=self.values * weights[d], minlength=n_out)
        return flat.reshape(_SHAPE[0], _SHAPE[1], _SHAPE[3], _SHAPE[4])


def _convert(path: Path, irb: str) -> PropagationTable:
    """Read the pickled astrotools file (trusted: inside the installed package) into arrays."""
    with np.load(path, allow_pickle=True) as data:
        fractions = data["fractions"].item()
        edges = np.asarray(data["log10e_bins"], dtype=float)
        distances = np.asarray(data["distances"], dtype=float)
    dense = np.stack([np.asarray(fractions[s], dtype=float) for s in TABLE_SPECIES])
    if dense.shape != _SHAPE or edges.shape != (126,) or distances.shape != (100,):
        raise InputError(f"CRPropa table {path} has unexpected shapes {dense.shape}, {edges.shape}")
    index = np.flatnonzero(dense)
    return PropagationTable(irb, edges, distances, index.astype(np.int64), dense.ravel()[index])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_cache(path: Path, irb: str) -> PropagationTable | None:
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ("version", "lg_e_edges", "distances", "index", "values")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    index, values = arrays["index"], arrays["values"]
    ok = (
        int(arrays["version"]) == _CACHE_VERSION
        and arrays["lg_e_edges"].shape == (126,)
        and arrays["distances"].shape == (100,)
        and index.shape == values.shape
        and index.ndim == 1
        and (index.size == 0 or (index[0] >= 0 and index[-1] < np.prod(_SHAPE)))
        and bool(np.all(np.diff(index) > 0))
    )
    if not ok:
        return None
    return PropagationTable(irb, arrays["lg_e_edges"], arrays["distances"], index.astype(np.int64), values)


def _write_cache(path: Path, table: PropagationTable) -> None:
    """Write atomically; a cache that cannot be written is not an error (it is rebuilt)."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                version=np.array(_CACHE_VERSION),
                lg_e_edges=table.lg_e_edges,
                distances=table.distances,
                index=table.index,
                values=table.values,
            )
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@functools.lru_cache(maxsize=len(IRB_MODELS))
def _load_cached(irb: str, cache: str) -> PropagationTable:
    source = _source_file(irb)
    target = Path(cache) / f"crpropa3_{irb}_{_sha256(source)[:16]}.npz"
    table = _read_cache(target, irb)
    if table is None:
        table = _convert(source, irb)
        _write_cache(target, table)
    return table


def load_table(irb: str = "Gilmore12", *, cache: str | os.PathLike[str] | None = None) -> PropagationTable:
    """Load the CRPropa table for infrared background ``irb`` from the installed astrotools.

    Args:
        irb: one of :data:`IRB_MODELS`.
        cache: directory of the plain-array cache (default :func:`cache_dir`).

    Example:
        >>> load_table("Kneiske04").distances[[0, -1]].round(6).tolist()
        [1.0, 1500.0]
    """
    return _load_cached(irb, str(Path(cache) if cache is not None else cache_dir()))
