"""Per-event inference columns: posterior samples and summaries next to the baselines.

:func:`inference_columns` turns the feature columns of selected events into the columns the
inference processor (:mod:`hepflow.neutrino.inference_processor`) writes: ``K`` samples of the
cINN posterior per event with their summaries, the quadratic W-mass-constraint solution
(:mod:`hepflow.neutrino.quadratic`), the feed-forward regression, and the leptonic W mass
reconstructed with each. :func:`finite_outputs` marks the events whose every column is finite:
an event whose extreme but finite inputs overflow (MET of 3e38 GeV) is dropped and counted in
the cutflow step :data:`FINITE_OUTPUTS`, never written with NaN or infinite values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepflow.inference.summaries import marginal_mode
from hepflow.neutrino.features import context_arrays
from hepflow.neutrino.model import neutrino_pz
from hepflow.neutrino.quadratic import lepton_mass, reconstruct_w_mass, solve_neutrino_pz
from hepflow.posterior import FlowPosterior

__all__ = ["FINITE_OUTPUTS", "INFERENCE_COLUMNS", "finite_outputs", "inference_columns"]

#: Summaries of each posterior coordinate: ``flow_<px|py|pz>_<summary>``.
SUMMARIES = ("mode", "peak", "median", "mean", "std")
#: The columns :func:`inference_columns` returns, in this order (the posterior columns that
#: ``hepflow infer neutrino --friend`` aligns with the input events).
INFERENCE_COLUMNS: tuple[str, ...] = (
    "flow_px",
    "flow_py",
    "flow_pz",
    *(f"flow_{c}_{s}" for c in ("px", "py", "pz") for s in SUMMARIES),
    "ff_px",
    "ff_py",
    "ff_pz",
    "quad_pz",
    "quad_pz_alt",
    "quad_is_complex",
    "mw_flow",
    "mw_quad",
    "mw_ff",
)

#: the cutflow step after the feature selection: events whose every inference column is finite
FINITE_OUTPUTS = "finite outputs"


def finite_outputs(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """The events (rows) whose every floating-point value in ``columns`` is finite.

    Example:
        >>> a, b = np.array([1.0, np.inf, 2.0]), np.array([[0.0, 1.0], [1.0, 1.0], [np.nan, 0.0]])
        >>> finite_outputs({"a": a, "b": b, "flag": np.array([True, False, True])})
        array([ True, False, False])
    """
    n = len(next(iter(columns.values()))) if columns else 0
    ok = np.ones(n, bool)
    for values in columns.values():
        if n and np.issubdtype(values.dtype, np.floating):
            ok &= np.isfinite(values.reshape(n, -1)).all(axis=1)
    return ok


@torch.no_grad()
@np.errstate(over="ignore", invalid="ignore")  # extreme inputs that overflow: see finite_outputs
def inference_columns(
    columns: ak.Array,
    flow: FlowPosterior | Any,
    regression: Any,
    *,
    samples: int = 256,
    batch_events: int = 2048,
    seed: int = 7,
) -> dict[str, Any]:
    """Posterior samples, summaries and baselines for every selected event.

    ``flow`` is the cINN's :class:`~hepflow.posterior.FlowPosterior` (or the bare flow); its
    draws come from one torch generator seeded with ``seed`` and shared by the batches of
    ``batch_events`` events, so the columns depend on the seed and the batch size only.

    Returns a dict of columns: ``flow_px/py/pz`` (``samples`` per event), their ``_mode`` (the
    highest-density joint sample), ``_peak`` (the mode of each one-dimensional marginal,
    :func:`hepflow.inference.summaries.marginal_mode`), ``_median``, ``_mean``, ``_std``;
    ``quad_pz``, ``quad_pz_alt``, ``quad_is_complex``;
    ``ff_px/py/pz``; and the reconstructed leptonic W mass ``mw_flow``, ``mw_quad``, ``mw_ff``
    (:data:`INFERENCE_COLUMNS`, in that order).
    """
    posterior = flow if isinstance(flow, FlowPosterior) else FlowPosterior(flow)
    n = len(columns)
    ctx = context_arrays(columns)
    device = next(posterior.model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    px = np.empty((n, samples), np.float32)
    py = np.empty((n, samples), np.float32)
    pz = np.empty((n, samples), np.float32)
    mode = np.empty((n, 3), np.float32)
    peak = np.empty((n, 3), np.float32)
    ff = np.empty((n, 3), np.float32)
    for start in range(0, n, batch_events):
        sl = slice(start, min(start + batch_events, n))
        batch = {k: torch.as_tensor(v[sl], device=device) for k, v in ctx.items()}
        # one generator for all batches: the draws of a batch follow those of the one before
        theta, logp = posterior.sample_context(samples, batch, generator=gen, log_prob=True)
        theta = theta.astype(np.float32)  # the flow's float32 draws, exactly
        logp = logp.astype(np.float32)
        px[sl], py[sl], pz[sl] = theta[..., 0], theta[..., 1], neutrino_pz(*np.moveaxis(theta, -1, 0))
        best = np.argmax(np.where(np.isnan(logp), -np.inf, logp), axis=1)
        rows = np.arange(sl.stop - sl.start)
        mode[sl] = np.stack([px[sl][rows, best], py[sl][rows, best], pz[sl][rows, best]], axis=1)
        peak[sl] = marginal_mode(np.stack([px[sl], py[sl], pz[sl]], axis=-1))
        ff[sl] = regression.predict(batch).float().cpu().numpy()
    out: dict[str, Any] = {"flow_px": px, "flow_py": py, "flow_pz": pz}
    for i, (name, values) in enumerate((("px", px), ("py", py), ("pz", pz))):
        out[f"flow_{name}_mode"] = mode[:, i]
        out[f"flow_{name}_peak"] = peak[:, i]
        out[f"flow_{name}_median"] = np.median(values, axis=1)
        out[f"flow_{name}_mean"] = values.mean(axis=1)
        out[f"flow_{name}_std"] = values.std(axis=1, ddof=1)
    out.update({"ff_px": ff[:, 0], "ff_py": ff[:, 1], "ff_pz": neutrino_pz(ff[:, 0], ff[:, 1], ff[:, 2])})

    lep = {k: ak.to_numpy(columns[f"lep_{k}"]).astype(np.float64) for k in ("px", "py", "pz", "e")}
    mass = lepton_mass(ak.to_numpy(columns.lep_flavor))
    met_px = ak.to_numpy(columns.met_px).astype(np.float64)
    met_py = ak.to_numpy(columns.met_py).astype(np.float64)
    quad = solve_neutrino_pz(lep["px"], lep["py"], lep["pz"], met_px, met_py, lep_mass=mass)
    out["quad_pz"] = np.asarray(quad.pz, np.float32)
    out["quad_pz_alt"] = np.asarray(quad.pz_alt, np.float32)
    out["quad_is_complex"] = np.asarray(quad.is_complex, bool)

    def w_mass(nu_px: np.ndarray, nu_py: np.ndarray, nu_pz: np.ndarray) -> np.ndarray:
        m = reconstruct_w_mass(lep["px"], lep["py"], lep["pz"], lep["e"], nu_px, nu_py, nu_pz, lep_mass=mass)
        return np.asarray(m, np.float32)

    out["mw_flow"] = w_mass(out["flow_px_mode"], out["flow_py_mode"], out["flow_pz_mode"])
    out["mw_quad"] = w_mass(met_px, met_py, out["quad_pz"])
    out["mw_ff"] = w_mass(out["ff_px"], out["ff_py"], out["ff_pz"])
    return {k: np.ascontiguousarray(out[k]) for k in INFERENCE_COLUMNS}
