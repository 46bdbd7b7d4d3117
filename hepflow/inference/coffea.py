"""Posterior samples inside your own coffea processor, via ``coffea.ml_tools.torch_wrapper``.

Export the sampler of a trained model once (:func:`hepflow.inference.export.export_torchscript`),
then, in your processor, build a :class:`PosteriorSampler` from the TorchScript file and call it
on awkward arrays of the context tensors; it returns an ``(n, K, theta_dim)`` array of posterior
samples. The model is loaded lazily on each worker (``torch_wrapper`` keeps it out of the pickled
processor), on the GPU when one is available.

Example (in a processor's ``process``)::

    from hepflow.neutrino.features import context_arrays
    from hepflow.inference.coffea import PosteriorSampler

    sampler = PosteriorSampler("sampler.pt", samples=256, latent_dim=3, seed=1)
    ctx = context_arrays(columns)                      # flat, jets, mask
    nu = sampler(*(ak.Array(ctx[k]) for k in ("flat", "jets", "mask")))   # (n, 256, 3)

For ONNX serving (e.g. a Triton inference server), :func:`~hepflow.inference.export.export_onnx`
writes the same sampler with inputs named after the context keys plus ``noise``; feed standard
normal noise of shape ``(n, K, latent_dim)``.
"""

from __future__ import annotations

import warnings
from typing import Any

import awkward as ak
import numpy as np
from coffea.ml_tools.torch_wrapper import torch_wrapper


class PosteriorSampler(torch_wrapper):
    """``torch_wrapper`` around an exported hepflow sampler: context arrays in, samples out.

    Arguments:
        torch_jit: TorchScript file written by ``export_torchscript``.
        samples: posterior samples per event (K).
        latent_dim: the model's latent dimension (``model.latent_dim``).
        seed: seed of the standard-normal noise; the noise of a call depends on the seed and the
            number of events only, so results are reproducible chunk by chunk.
    """

    def __init__(self, torch_jit: str, *, samples: int, latent_dim: int, seed: int = 0) -> None:
        super().__init__(torch_jit, expected_output_shape=(None, samples, latent_dim))
        self.samples = samples
        self.latent_dim = latent_dim
        self.seed = seed

    def _create_model(self) -> Any:
        with warnings.catch_warnings():
            # torch 2.x announces the TorchScript deprecation on every load
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*TorchScript.*")
            return super()._create_model()

    def validate_numpy_input(self, *args: np.ndarray, **kwargs: np.ndarray) -> None:
        """Every input has one row per event; the noise is ``(n, samples, latent_dim)``."""
        from hepflow.errors import InputError

        if kwargs:
            raise InputError(
                f"PosteriorSampler takes positional context arrays, got keywords {sorted(kwargs)}"
            )
        *context, noise = args
        n = len(noise)
        if noise.shape[1:] != (self.samples, self.latent_dim):
            raise InputError(
                f"noise has shape {noise.shape}, expected (n, {self.samples}, {self.latent_dim})"
            )
        for i, arr in enumerate(context):
            if len(arr) != n:
                raise InputError(f"context input {i} has {len(arr)} rows, expected {n}")

    def prepare_awkward(self, *context: ak.Array) -> tuple[tuple[ak.Array, ...], dict[str, Any]]:
        n = len(context[0])
        rng = np.random.default_rng(self.seed)
        noise = rng.standard_normal((n, self.samples, self.latent_dim)).astype(np.float32)
        # numbers as float32 (what the sampler was traced with); boolean masks stay boolean
        arrays = tuple(c if "bool" in str(c.type) else ak.values_astype(c, np.float32) for c in context)
        return (*arrays, ak.Array(noise)), {}
