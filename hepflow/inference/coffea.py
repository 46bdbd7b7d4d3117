"""Posterior samples inside your own coffea processor, via ``coffea.ml_tools.torch_wrapper``.

Export the sampler of a trained model once (:func:`hepflow.inference.export.export_torchscript`),
then, in your processor, build a :class:`PosteriorSampler` from the TorchScript file and call it
on the context arrays of a chunk together with the chunk's identity; it returns an
``(n, samples, theta_dim)`` array of posterior samples. The model is loaded lazily on each worker
(``torch_wrapper`` keeps it out of the pickled processor), on the GPU when one is available.

Example (in a processor's ``process``)::

    from hepflow.inference.coffea import PosteriorSampler
    from hepflow.neutrino.contract import neutrino_context

    sampler = PosteriorSampler("sampler.pt", samples=256, latent_dim=3, theta_dim=3, seed=1)
    ctx = neutrino_context(met_pt=..., met_phi=..., lepton=..., jets=..., jet_btag=...)
    nu = sampler(ctx["flat"], ctx["jets"], ctx["mask"], chunk=events.metadata)  # (n, 256, 3)

With ``training_summary="models/neutrino/flow"`` (the model directory), ``sampler.check_inputs(
ctx["flat"], ctx["jets"], ctx["mask"])`` compares computed context arrays with the model's
training data and returns the verdict (:mod:`hepflow.posterior.shift`), warning with a
:class:`~hepflow.posterior.shift.DomainShiftWarning` when they differ.

The noise of a call is drawn from a generator seeded by
:func:`~hepflow.outputs.chunks.chunk_seed` (``seed`` and the chunk's file, ``entrystart`` and
``entrystop``): two chunks get independent noise, the same chunk processed twice (a rerun, a
retried task) gets the same samples. Without ``chunk`` the noise depends on ``seed`` and the
number of events only, which is fine for a single array but makes equally long chunks share
their noise.

For ONNX serving (e.g. a Triton inference server), :func:`~hepflow.inference.export.export_onnx`
writes the same sampler with inputs named after the context keys plus ``noise``; feed standard
normal noise of shape ``(n, samples, latent_dim)``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from coffea.ml_tools.torch_wrapper import torch_wrapper

from hepflow.errors import InputError, ModelError
from hepflow.outputs.chunks import chunk_seed

if TYPE_CHECKING:
    from hepflow.posterior.shift import ShiftResult, TrainingSummary

__all__ = ["PosteriorSampler"]


class PosteriorSampler(torch_wrapper):
    """``torch_wrapper`` around an exported hepflow sampler: context arrays in, samples out.

    Call it as ``sampler(*context, chunk=events.metadata)`` with the context arrays in the order
    of the exported ``forward`` (for the neutrino model ``flat, jets, mask``; awkward or numpy
    arrays, one row per event). It returns ``(n, samples, theta_dim)`` float32 samples (an
    awkward array for awkward inputs, numpy for numpy inputs); zero events give a
    ``(0, samples, theta_dim)`` array without running the model.

    Arguments:
        torch_jit: TorchScript file written by ``export_torchscript``.
        samples: posterior samples per event.
        latent_dim: the model's latent (noise) dimension, ``model.latent_dim`` (``theta_dim``
            minus one per simplex constraint).
        theta_dim: the model's parameter dimension, ``model.theta_dim`` (the last axis of the
            samples).
        seed: seed of the standard-normal noise. With ``chunk`` the noise generator is seeded by
            :func:`~hepflow.outputs.chunks.chunk_seed` (``seed`` and the chunk's file and entry
            range), so chunks get independent noise and a rerun of a chunk gives the same
            samples; without ``chunk`` by ``seed`` alone, so the noise depends on the number of
            events only.
        training_summary: the model directory (or a
            :class:`~hepflow.posterior.shift.TrainingSummary`) whose training summary
            :meth:`check_inputs` compares inputs with.

    Example:
        >>> import tempfile, numpy as np, hepflow
        >>> from hepflow.inference.export import export_torchscript
        >>> model = hepflow.ConditionalINN(2, 3, depth=2, width=8)
        >>> path = export_torchscript(model, tempfile.mkdtemp() + "/sampler.pt")
        >>> sampler = PosteriorSampler(str(path), samples=5, latent_dim=2, theta_dim=2, seed=1)
        >>> context = np.zeros((4, 3), np.float32)
        >>> meta = {"filename": "a.root", "entrystart": 0, "entrystop": 10}
        >>> sampler(context, chunk=meta).shape
        (4, 5, 2)
        >>> bool((sampler(context, chunk=meta) == sampler(context, chunk=meta)).all())
        True
        >>> other = dict(meta, entrystart=10, entrystop=20)
        >>> bool((sampler(context, chunk=meta) == sampler(context, chunk=other)).any())
        False
    """

    def __init__(
        self,
        torch_jit: str,
        *,
        samples: int,
        latent_dim: int,
        theta_dim: int,
        seed: int = 0,
        training_summary: TrainingSummary | str | os.PathLike[str] | None = None,
    ) -> None:
        for name, value in (("samples", samples), ("latent_dim", latent_dim), ("theta_dim", theta_dim)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"PosteriorSampler: {name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise InputError(f"PosteriorSampler: seed must be an integer, got {seed!r}")
        super().__init__(str(torch_jit), expected_output_shape=(None, int(samples), int(theta_dim)))
        self.samples = int(samples)
        self.latent_dim = int(latent_dim)
        self.theta_dim = int(theta_dim)
        self.seed = int(seed)
        self.training_summary, self._summary_source = _summary(training_summary)
        self._said_no_summary = False

    def check_inputs(self, *context: Any, alpha: float = 0.01, warn: bool = True) -> ShiftResult | None:
        """Compare context arrays (as for a call, or one mapping ``{key: array}``) with the
        model's training summary (:mod:`hepflow.posterior.shift`); returns the
        :class:`~hepflow.posterior.shift.ShiftResult` (``.shifted``, ``.verdict()``,
        ``.summary()``) and, with ``warn``, issues a
        :class:`~hepflow.posterior.shift.DomainShiftWarning` when the input differs. A model that
        records no summary gives None and a warning, once. Needs ``training_summary`` (the model
        directory) at construction; dask-awkward arrays are refused: check a computed sample.
        """
        from dask.base import is_dask_collection

        from hepflow.posterior.shift import DomainShiftWarning, compare, tally

        if self._summary_source is None:
            raise InputError(
                "PosteriorSampler.check_inputs needs the model's training summary: pass "
                "training_summary=<model directory> when building the sampler"
            )
        if self.training_summary is None:
            if not self._said_no_summary:
                warnings.warn(
                    f"{self._summary_source} records no training summary (saved before hepflow stored "
                    "one): the input cannot be compared with its training data",
                    DomainShiftWarning,
                    stacklevel=2,
                )
                self._said_no_summary = True
            return None
        arrays = (
            list(context[0].values()) if len(context) == 1 and isinstance(context[0], Mapping) else context
        )
        if any(is_dask_collection(c) for c in arrays):
            raise InputError("PosteriorSampler.check_inputs needs computed arrays: pass a computed sample")
        if len(context) == 1 and isinstance(context[0], Mapping):
            ctx: tuple[Any, ...] = ({k: _numpy(v) for k, v in context[0].items()},)
        else:
            ctx = tuple(_numpy(c) for c in context)
        summary = self.training_summary
        result = compare(summary, tally(summary, summary.columns(*ctx)), alpha=alpha)
        if warn and result.shifted:
            warnings.warn(result.summary(), DomainShiftWarning, stacklevel=2)
        return result

    def __call__(self, *context: Any, chunk: Mapping[str, Any] | None = None) -> Any:
        """Samples for the events of one chunk; ``chunk`` is its ``events.metadata``.

        Dask-awkward context arrays (coffea's dask mode) are sampled per partition; each
        partition's noise is seeded by ``seed`` and a hash of the partition's context values, so
        partitions get independent noise and a rerun over the same partitions the same samples
        (``chunk`` is not needed there: dask-mode metadata names the dataset, not the partition).
        """
        if not context:
            raise InputError("PosteriorSampler needs the context arrays, got none")
        from dask.base import is_dask_collection

        if any(is_dask_collection(c) for c in context):
            return super().__call__(*context, noise_seed=self.seed, by_content=True)
        noise_seed = self.seed if chunk is None else chunk_seed(self.seed, chunk)
        # the seed travels as a keyword through torch_wrapper (awkward, dask and numpy paths)
        # to numpy_call, where the noise is drawn
        return super().__call__(*context, noise_seed=noise_seed, by_content=False)

    def _create_model(self) -> Any:
        with warnings.catch_warnings():
            # torch 2.x announces the TorchScript deprecation on every load
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*TorchScript.*")
            return super()._create_model()

    def prepare_awkward(
        self, *context: Any, noise_seed: int, by_content: bool = False
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The context arrays as they are (dtypes are set in :meth:`numpy_call`)."""
        return context, {"noise_seed": noise_seed, "by_content": by_content}

    def validate_numpy_input(
        self, *context: np.ndarray, noise_seed: int | None = None, by_content: bool = False
    ) -> None:
        """Every context input has one row per event (dtypes: numbers or booleans)."""
        n = len(context[0])
        for i, arr in enumerate(context):
            if len(arr) != n:
                raise InputError(f"context input {i} has {len(arr)} rows, expected {n} (as input 0)")
            if arr.dtype.kind not in "fiub":
                raise InputError(f"context input {i} has dtype {arr.dtype}, expected numbers or booleans")

    def numpy_call(
        self, *context: np.ndarray, noise_seed: int | None = None, by_content: bool = False
    ) -> np.ndarray:
        """Draw the chunk's ``(n, samples, latent_dim)`` noise and run the sampler on it; with
        ``by_content`` (a dask partition) the noise seed also hashes the context values."""
        n = len(context[0])
        if n == 0:  # nothing to run (and some torch ops refuse empty batches)
            return np.zeros((0, self.samples, self.theta_dim), np.float32)
        # numbers as float32 (what the sampler was traced with); boolean masks stay boolean
        arrays = [a if a.dtype == bool else np.ascontiguousarray(a, np.float32) for a in context]
        seed = self.seed if noise_seed is None else noise_seed
        rng = np.random.default_rng([seed, *content_key(arrays)] if by_content else seed)
        noise = rng.standard_normal((n, self.samples, self.latent_dim)).astype(np.float32)
        try:
            out = super().numpy_call(*arrays, noise)
        except RuntimeError as err:  # shapes that do not fit the traced sampler
            raise ModelError(
                f"{self.torch_jit}: the sampler failed on inputs of shapes "
                f"{[a.shape for a in arrays]} and noise {noise.shape} (check latent_dim and the "
                f"order of the context inputs): {err}"
            ) from err
        if out.shape != (n, self.samples, self.theta_dim):
            raise ModelError(
                f"{self.torch_jit}: the sampler returned shape {out.shape}, expected "
                f"({n}, {self.samples}, {self.theta_dim}); check theta_dim"
            )
        return out


def _numpy(array: Any) -> np.ndarray:
    """An awkward (regular) or numpy array as numpy."""
    import awkward as ak

    return ak.to_numpy(array) if isinstance(array, ak.Array) else np.asarray(array)


def _summary(source: Any) -> tuple[TrainingSummary | None, str | None]:
    """(the training summary, where it came from) of a ``training_summary`` argument."""
    from hepflow.posterior.shift import TrainingSummary, read_summary

    if source is None:
        return None, None
    if isinstance(source, TrainingSummary):
        return source, "the given training summary"
    if isinstance(source, str | os.PathLike):
        return read_summary(source), str(source)
    raise InputError(
        f"PosteriorSampler: training_summary must be a model directory or a TrainingSummary, "
        f"got {type(source).__name__}"
    )


def content_key(arrays: list[np.ndarray]) -> list[int]:
    """A stable key of the values of ``arrays`` (shapes, dtypes and bytes): four 64-bit words of
    a SHA-256, the identity of a dask partition that does not depend on the process or machine.

    Example:
        >>> a = np.arange(3.0)
        >>> content_key([a]) == content_key([a.copy()]), content_key([a]) == content_key([a + 1])
        (True, False)
    """
    digest = hashlib.sha256()
    for array in arrays:
        values = np.ascontiguousarray(array)
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    raw = digest.digest()
    return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, 32, 8)]
