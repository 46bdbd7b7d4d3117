"""Cosmic-ray pseudo-experiments and shower lists from the forward model, as ROOT ntuples.

Two file formats, both plain ROOT ``TTree`` s written with uproot and atomically (the file
appears under its name only when complete):

``PseudoExperiments`` (:func:`generate_cosmic`), one entry per pseudo-experiment:

* ``index`` (int64): entry number;
* ``gamma``, ``lg_rcut``, ``f_H``, ``f_He``, ``f_N``, ``f_Si``, ``f_Fe`` (double): the true
  parameters, drawn from the prior (or from the ``[proposal]``, recorded in the metadata);
* ``nu_E``, ``nu_X`` (double), only with ``[systematics] enabled``: the nuisances of the entry,
  drawn from their priors (:class:`~hepflow.cosmic.Systematics`); the parameters above are then
  distributed as the prior marginalised over them, which is what a cINN trained on the file learns;
* ``spectrum`` (int32[n_E]): spectrum counts, Poisson around the reference total;
* ``xmax`` (int32[n_M][n_X]): Xmax histograms, multinomial with the reference numbers of Xmax
  events per energy bin (:meth:`hepflow.cosmic.ForwardModel.simulate`).

``Showers`` (:func:`write_showers`, :func:`generate_showers`), one entry per air shower:
``lg_e`` (double, lg(E/eV)) and ``xmax`` (double, g/cm^2, NaN without an Xmax measurement).

Both files hold a ``metadata`` string (JSON): what produced the file (parameters or prior, forward
model, seed, binning). :func:`load_observation` reads either format (or the lg E x Xmax histogram
written by ``hepflow process cosmic``) back as an :class:`~hepflow.cosmic.Observation`.

The analysis configuration (the shipped ``config.toml``, :mod:`hepflow.cosmic.config`) is read into
:class:`CosmicConfig` (sections ``[prior]``, ``[proposal]``, ``[model]``, ``[generation]``, ``[mcmc]``, and
``[flow]``, ``[training]``, ``[inference]``, ``[comparison]`` of :mod:`hepflow.cosmic.analysis`);
unknown keys are refused.

Example:
    >>> stats = generate_cosmic("pe.root", n=1000, seed=1, progress=False)  # doctest: +SKIP
    >>> print(stats.summary())  # doctest: +SKIP
    wrote 1000 pseudo-experiments to pe.root in 0.3 s (3500 pseudo-experiments/s: ...)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepflow import __version__
from hepflow.config import to_dict
from hepflow.cosmic import PARAMETER_NAMES, Binning, ForwardModel, Observation
from hepflow.cosmic.auger import load_xmax, xmax_acceptance
from hepflow.cosmic.config import CosmicConfig, load_config
from hepflow.cosmic.propagation import GROUP_MASSES
from hepflow.cosmic.source import as_params
from hepflow.cosmic.systematics import NUISANCE_NAMES
from hepflow.cosmic.xmax import sample_xmax
from hepflow.errors import ConfigError, InputError
from hepflow.outputs.atomic import atomic_write

__all__ = [
    "PSEUDO_EXPERIMENT_TREE",
    "SHOWER_TREE",
    "CosmicGenerationStats",
    "generate_cosmic",
    "generate_showers",
    "load_observation",
    "read_pseudo_experiments",
    "read_showers",
    "sample_showers",
    "write_showers",
]

PSEUDO_EXPERIMENT_TREE = "PseudoExperiments"
SHOWER_TREE = "Showers"
#: Name of the lg E x Xmax histogram in the observation file of ``hepflow process cosmic``.
HISTOGRAM_NAME = "showers"
#: Pseudo-experiments per random-number stream: the output depends on the seed and ``n`` only,
#: not on ``batch_size``.
RNG_CHUNK = 1024


# ---------------------------------------------------------------------- pseudo-experiments
@dataclass(frozen=True)
class CosmicGenerationStats:
    """What :func:`generate_cosmic` did, with the time spent in each stage (seconds)."""

    path: Path
    n: int
    seconds: float
    setup_seconds: float
    simulate_seconds: float
    write_seconds: float

    @property
    def per_second(self) -> float:
        """Pseudo-experiments per second, setup of the forward model excluded."""
        busy = self.seconds - self.setup_seconds
        return self.n / busy if busy > 0 else float("inf")

    def summary(self) -> str:
        """One line: entries written, time, rate and its split, output path."""
        return (
            f"wrote {self.n} pseudo-experiments to {self.path} in {self.seconds:.1f} s "
            f"({self.per_second:.0f} pseudo-experiments/s: model setup {self.setup_seconds:.1f} s, "
            f"prior + simulation {self.simulate_seconds:.1f} s, writing {self.write_seconds:.1f} s)"
        )


def generate_cosmic(
    output: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int | None = None,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> CosmicGenerationStats:
    """Draw ``n`` parameter vectors from the prior (the ``[proposal]`` when it is not the prior) and
    simulate one pseudo-experiment each; with ``[systematics] enabled`` each also gets its own
    nuisances ``nu_E, nu_X`` from their priors (written as branches, recorded in the metadata).

    Writes the ``PseudoExperiments`` tree (module docstring) to ``output``. Parameters and
    pseudo-experiments come from independent random streams per block of :data:`RNG_CHUNK`
    entries derived from ``seed``, so the content depends on ``seed`` and ``n`` only;
    ``batch_size`` is the number of entries per written basket (memory ~4 kB per entry).

    Args:
        output: the ROOT file to write.
        n: number of pseudo-experiments (default: ``[generation] n`` of the config).
        seed: random seed (default: ``[generation] seed``).
        config: a :class:`CosmicConfig` or a TOML file (prior, forward model, generation
            defaults; default settings without).
        batch_size: entries per basket (default: ``[generation] batch_size``).
        progress: show a tqdm progress bar.
        overwrite: replace an existing ``output`` (otherwise :class:`~hepflow.errors.OutputError`).
    """
    from tqdm.auto import tqdm

    cfg = load_config(config)
    n = cfg.generation.n if n is None else n
    seed = cfg.generation.seed if seed is None else seed
    batch_size = cfg.generation.batch_size if batch_size is None else batch_size
    if n < 1 or batch_size < 1:
        raise ConfigError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    start = time.perf_counter()
    proposal = cfg.proposal.build(cfg.prior.build())
    systematics = cfg.systematics.build()
    model = cfg.model.build(systematics=systematics)
    n_e, n_m, n_x = model.binning.shape
    setup = time.perf_counter() - start
    simulate_s = write_s = 0.0
    metadata = _metadata(
        "pseudo-experiments",
        model,
        seed=seed,
        n=n,
        prior=to_dict(cfg.prior),
        model_config=to_dict(cfg.model),
        **({} if proposal.is_prior else {"proposal": cfg.proposal.metadata()}),
        **({} if systematics is None else {"systematics": cfg.systematics.metadata()}),
    )
    import uproot

    branch_types: dict[str, Any] = {"index": np.int64}
    branch_types.update(dict.fromkeys(PARAMETER_NAMES, np.float64))
    if systematics is not None:
        branch_types.update(dict.fromkeys(NUISANCE_NAMES, np.float64))
    branch_types["spectrum"] = np.dtype((np.int32, (n_e,)))
    branch_types["xmax"] = np.dtype((np.int32, (n_m, n_x)))
    with (
        atomic_write(output, overwrite=overwrite) as tmp,
        uproot.recreate(tmp) as fout,
        tqdm(total=n, unit="pe", disable=not progress, desc="pseudo-experiments") as bar,
    ):
        fout["metadata"] = json.dumps(metadata)
        fout.mktree(PSEUDO_EXPERIMENT_TREE, branch_types, title="cosmic-ray pseudo-experiments")
        buffer: list[dict[str, np.ndarray]] = []
        buffered = 0
        for k, first in enumerate(range(0, n, RNG_CHUNK)):
            t0 = time.perf_counter()
            size = min(RNG_CHUNK, n - first)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
            theta = proposal.sample(size, rng)
            if systematics is not None:
                nu = systematics.sample(size, rng)
                sim = model.simulate(np.concatenate([theta, nu], axis=1), rng)
            else:
                sim = model.simulate(theta, rng)
            block = {"index": np.arange(first, first + size, dtype=np.int64)}
            block.update({name: theta[:, i] for i, name in enumerate(PARAMETER_NAMES)})
            if systematics is not None:
                block.update({name: nu[:, i] for i, name in enumerate(NUISANCE_NAMES)})
            block["spectrum"] = sim["spectrum"].astype(np.int32)
            block["xmax"] = sim["xmax"].astype(np.int32)
            buffer.append(block)
            buffered += size
            t1 = time.perf_counter()
            simulate_s += t1 - t0
            if buffered >= batch_size or first + size == n:
                fout[PSEUDO_EXPERIMENT_TREE].extend(
                    {key: np.concatenate([b[key] for b in buffer]) for key in branch_types}
                )
                buffer, buffered = [], 0
            write_s += time.perf_counter() - t1
            bar.update(size)
        t2 = time.perf_counter()
    write_s += time.perf_counter() - t2  # closing, fsync, rename
    return CosmicGenerationStats(
        path=Path(output),
        n=n,
        seconds=time.perf_counter() - start,
        setup_seconds=setup,
        simulate_seconds=simulate_s,
        write_seconds=write_s,
    )


def read_pseudo_experiments(
    path: str | os.PathLike[str], *, entry_start: int | None = None, entry_stop: int | None = None
) -> dict[str, np.ndarray]:
    """Read a ``PseudoExperiments`` file: ``theta`` (n, 7), ``spectrum`` (n, n_E), ``xmax`` (n, n_M, n_X)."""
    names = [*PARAMETER_NAMES, "spectrum", "xmax"]
    arrays = _read_tree(path, PSEUDO_EXPERIMENT_TREE, names, entry_start=entry_start, entry_stop=entry_stop)
    return {
        "theta": np.stack([arrays[name] for name in PARAMETER_NAMES], axis=1),
        "spectrum": np.asarray(arrays["spectrum"]),
        "xmax": np.asarray(arrays["xmax"]),
    }


# ---------------------------------------------------------------------- shower lists
def sample_showers(
    theta: np.ndarray,
    rng: np.random.Generator | int | None = None,
    *,
    model: ForwardModel | None = None,
    n_spectrum: float | None = None,
    n_xmax: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Individual showers ``(lg_e, xmax)`` for one parameter vector, consistent with the forward model.

    * energies: per 0.02 lg E cell of the model, a Poisson number of showers with mean
      ``n_spectrum`` x the cell's share of the expected spectrum counts (arriving numbers x
      effective exposure of its spectrum bin), uniform in lg E inside the cell; binned, the
      spectrum is distributed as :meth:`ForwardModel.simulate`'s;
    * Xmax: each shower in the Xmax energy range gets an arriving mass group (drawn with the
      arriving composition of its cell) and a true Xmax from the generalized Gumbel at its
      energy; it is kept for the Xmax sample with probability acceptance(true Xmax) (times the
      ratio of the lowest effective exposure in its Xmax energy bin to its own, so that the energy
      distribution inside wide Xmax energy bins follows the arriving flux as in the model);
      ``n_xmax[m]`` of the kept showers of energy bin ``m`` (all of them if fewer) get a
      reconstructed Xmax (true Xmax plus the double-Gaussian resolution of the bin), the others NaN.

    The Gumbel is evaluated at each shower's own energy; the model evaluates it at the cell
    centre (a difference below 1 g/cm^2 in <Xmax>).

    Args:
        theta: one parameter vector (7,).
        rng: seed or generator.
        model: the forward model (default: :class:`ForwardModel` with the Auger data).
        n_spectrum: expected number of showers in the spectrum (default ``model.n_spectrum``).
        n_xmax: (n_M,) numbers of showers with Xmax per energy bin (default ``model.n_xmax``).

    Returns:
        ``lg_e`` and ``xmax`` arrays (one entry per shower, sorted by energy).

    Example:
        >>> lg_e, xmax = sample_showers([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0], rng=1)
        >>> obs = Observation.from_showers(lg_e, xmax)
        >>> obs.n_xmax.astype(int).tolist() == Observation.from_auger().n_xmax.astype(int).tolist()
        True
    """
    gen = np.random.default_rng(rng)
    m = model if model is not None else ForwardModel()
    p = as_params(theta)
    if p.shape[0] != 1:
        raise ConfigError(f"sample_showers takes one parameter vector, got {p.shape[0]}")
    n_s = m.n_spectrum if n_spectrum is None else float(n_spectrum)
    counts = m.n_xmax if n_xmax is None else np.asarray(n_xmax, dtype=float)
    if counts.shape != m.n_xmax.shape or np.any(counts < 0) or not np.allclose(counts, np.rint(counts)):
        raise ConfigError(f"n_xmax must be {m.n_xmax.size} non-negative integers, got {counts}")
    if not (np.isfinite(n_s) and n_s >= 0):
        raise ConfigError(f"n_spectrum must be finite and >= 0, got {n_s}")
    binning = m.binning
    arriving = m.arriving(p)[0]  # (groups, cells)
    per_cell = arriving.sum(axis=0)
    centres = m.lg_e_centers
    half = 0.5 * np.diff(centres).mean()
    spec_bin = _bin_of(centres, binning.spectrum_edges)
    shape = m.spectrum_shape(p, arriving=arriving[None])[0]  # (n_E,)
    in_bin = np.bincount(spec_bin[spec_bin >= 0], weights=per_cell[spec_bin >= 0], minlength=shape.size)
    # relative effective exposure per spectrum bin, from the model itself (shape = arriving x exposure)
    exposure = np.divide(shape, in_bin, out=np.zeros_like(shape), where=in_bin > 0)
    cell_mean = np.where(spec_bin >= 0, per_cell * exposure[np.maximum(spec_bin, 0)], 0.0)
    total = cell_mean.sum()
    cell_mean = n_s * cell_mean / total if total > 0 else cell_mean
    n_cell = gen.poisson(cell_mean)
    cell = np.repeat(np.arange(centres.size), n_cell)
    lg_e = centres[cell] + half * (2.0 * gen.random(cell.size) - 1.0)

    xmax = np.full(cell.size, np.nan)
    x_bin = _bin_of(lg_e, binning.xmax_energy_edges)
    candidates = np.flatnonzero(x_bin >= 0)
    if candidates.size:
        comp = arriving[:, cell[candidates]]
        comp = comp / np.maximum(comp.sum(axis=0, keepdims=True), np.finfo(float).tiny)
        group = (gen.random(candidates.size) > np.cumsum(comp, axis=0)[:-1]).sum(axis=0)
        true_x = sample_xmax(lg_e[candidates], np.log(GROUP_MASSES[group]), gen, model=m.hadronic_model)
        data = load_xmax()
        n_m = binning.shape[1]
        acc, res = data.acceptance[-n_m:], data.resolution[-n_m:]
        b = x_bin[candidates]
        s_bin = _bin_of(lg_e[candidates], binning.spectrum_edges)
        keep_p = np.empty(candidates.size)
        for k in range(n_m):
            sel = b == k
            rel = exposure[s_bin[sel]]
            floor = rel.min() if rel.size else 1.0
            keep_p[sel] = xmax_acceptance(true_x[sel], *acc[k]) * floor / rel
        kept = gen.random(candidates.size) < keep_p
        for k in range(n_m):
            pool = np.flatnonzero(kept & (b == k))
            chosen = gen.permutation(pool)[: round(float(counts[k]))]
            sigma1, sigma2, frac = res[k]
            sigma = np.where(gen.random(chosen.size) < frac, sigma1, sigma2)
            xmax[candidates[chosen]] = true_x[chosen] + sigma * gen.standard_normal(chosen.size)
    order = np.argsort(lg_e, kind="stable")
    return lg_e[order], xmax[order]


def _bin_of(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (bins closed on the left), -1 outside."""
    k = np.searchsorted(edges, x, side="right") - 1
    return np.where((x >= edges[0]) & (x < edges[-1]), k, -1)


def write_showers(
    output: str | os.PathLike[str],
    lg_e: np.ndarray,
    xmax: np.ndarray | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``Showers`` tree: ``lg_e`` and ``xmax`` (NaN where a shower has no Xmax), atomically.

    Example:
        >>> write_showers("showers.root", [18.75, 19.2], [740.0, np.nan])  # doctest: +SKIP
        PosixPath('showers.root')
    """
    import uproot

    e = np.asarray(lg_e, dtype=np.float64).ravel()
    x = np.full_like(e, np.nan) if xmax is None else np.asarray(xmax, dtype=np.float64).ravel()
    if x.shape != e.shape:
        raise InputError(f"showers: lg_e has {e.size} entries but xmax has {x.size}")
    if not np.all(np.isfinite(e)):
        raise InputError("showers: lg_e must be finite")
    with atomic_write(output, overwrite=overwrite) as tmp, uproot.recreate(tmp) as fout:
        fout["metadata"] = json.dumps({"content": "showers", **(metadata or {})}, default=_plain)
        fout.mktree(SHOWER_TREE, {"lg_e": np.float64, "xmax": np.float64}, title="air showers")
        if e.size:
            fout[SHOWER_TREE].extend({"lg_e": e, "xmax": x})
    return Path(output)


def generate_showers(
    output: str | os.PathLike[str],
    *,
    theta: np.ndarray,
    seed: int,
    config: CosmicConfig | str | os.PathLike[str] | None = None,
    n_spectrum: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Sample one observation's showers for ``theta`` (:func:`sample_showers`) into a ``Showers`` file."""
    cfg = load_config(config)
    model = cfg.model.build()
    p = as_params(theta)
    lg_e, xmax = sample_showers(p, seed, model=model, n_spectrum=n_spectrum)
    meta = _metadata(
        "showers",
        model,
        seed=seed,
        theta=dict(zip(PARAMETER_NAMES, p[0].tolist(), strict=True)),
        model_config=to_dict(cfg.model),
    )
    return write_showers(output, lg_e, xmax, metadata=meta, overwrite=overwrite)


def read_showers(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``lg_e`` and ``xmax`` of a ``Showers`` tree."""
    arrays = _read_tree(path, SHOWER_TREE, ["lg_e", "xmax"])
    return np.asarray(arrays["lg_e"], dtype=float), np.asarray(arrays["xmax"], dtype=float)


# ---------------------------------------------------------------------- observations from files
def load_observation(
    source: str | os.PathLike[str],
    *,
    binning: Binning | None = None,
    entry: int = 0,
) -> Observation:
    """An observation by name or from a file.

    * ``"auger"``: the published Auger data (spectrum 2020, Xmax 2014) in ``binning``;
    * a ROOT file with a ``Showers`` tree: the showers binned (:meth:`Observation.from_showers`);
    * a ROOT file with the lg E x Xmax histogram ``showers`` written by ``hepflow process cosmic``;
    * a ROOT file with a ``PseudoExperiments`` tree: entry ``entry``.

    Args:
        source: ``"auger"`` or a path.
        binning: an Auger binning (default: above 10^18.7 eV).
        entry: the pseudo-experiment to take from a ``PseudoExperiments`` file.
    """
    from hepflow.cosmic.features import histogram_observation

    b = binning if binning is not None else Binning.auger()
    if str(source) == "auger":
        lg_e_min = float(b.spectrum_edges[0])
        obs = Observation.from_auger(lg_e_min=lg_e_min)
        if obs.binning != b:
            raise ConfigError("the Auger data exist only in the Auger binning (Binning.auger)")
        return obs
    import uproot

    path = Path(source)
    if not path.is_file():
        raise InputError(f"observation {path} does not exist (give 'auger' or a ROOT file)")
    try:
        with uproot.open(path) as f:
            classes = f.classnames(recursive=False)
            names = {k.split(";")[0]: v for k, v in classes.items()}
            if HISTOGRAM_NAME in names and names[HISTOGRAM_NAME].startswith("TH2"):
                h = f[HISTOGRAM_NAME].to_hist()
                return histogram_observation(h, binning=b, source=str(path))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path} as a ROOT file: {err}") from err
    if names.get(SHOWER_TREE) == "TTree":
        lg_e, xmax = read_showers(path)
        return Observation.from_showers(lg_e, xmax, binning=b, source=str(path))
    if names.get(PSEUDO_EXPERIMENT_TREE) == "TTree":
        if entry < 0:
            raise ConfigError(f"entry must be >= 0, got {entry}")
        data = read_pseudo_experiments(path, entry_start=entry, entry_stop=entry + 1)
        if data["theta"].shape[0] != 1:
            raise InputError(f"{path}: no entry {entry} in {PSEUDO_EXPERIMENT_TREE}")
        return Observation(b, data["spectrum"][0], data["xmax"][0], source=f"{path} entry {entry}")
    raise InputError(
        f"{path} holds neither a {SHOWER_TREE} nor a {PSEUDO_EXPERIMENT_TREE} tree nor a "
        f"'{HISTOGRAM_NAME}' histogram (found: {', '.join(sorted(names)) or 'nothing'})"
    )


# ---------------------------------------------------------------------- helpers
def _read_tree(
    path: str | os.PathLike[str],
    name: str,
    branches: list[str],
    *,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> dict[str, np.ndarray]:
    """Read ``branches`` of tree ``name`` as numpy arrays; errors name the file, tree and branches."""
    import uproot

    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {p} does not exist")
    try:
        with uproot.open(p) as f:
            if name not in f:
                found = ", ".join(f.keys(cycle=False)) or "nothing"
                raise InputError(f"{p} has no {name} tree (found: {found})")
            tree = f[name]
            missing = [b for b in branches if b not in tree]
            if missing:
                raise InputError(f"{p}: {name} lacks branches {', '.join(missing)}")
            return tree.arrays(branches, entry_start=entry_start, entry_stop=entry_stop, library="np")
    except InputError:
        raise
    except (OSError, ValueError, uproot.DeserializationError) as err:
        raise InputError(f"cannot read {name} from {p}: {err}") from err


def _metadata(content: str, model: ForwardModel, **extra: Any) -> dict[str, Any]:
    b = model.binning
    return {
        "content": content,
        "hepflow": __version__,
        "model": model.description,
        "binning": {
            "spectrum_edges": b.spectrum_edges.tolist(),
            "xmax_energy_edges": b.xmax_energy_edges.tolist(),
            "xmax_edges": [float(b.xmax_edges[0]), float(b.xmax_edges[-1]), b.xmax_edges.size - 1],
        },
        "n_spectrum": model.n_spectrum,
        "n_xmax": model.n_xmax.tolist(),
        **extra,
    }


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
