"""The model card of a pretrained neutrino model: what it was trained on, how well it does, and
the sha256 of every model file (:mod:`hepflow.modelcard`).

A pretrained neutrino model directory holds the files ``hepflow train neutrino`` writes that
inference needs (:data:`MODEL_FILES`), ``card.json`` and ``card.md``. :func:`install_model`
copies a trained model into such a directory and writes the card; :func:`verify_model` checks it
before the model is loaded: a missing card, a missing, unlisted or altered file, or a model over
:data:`MAX_BYTES` is refused with one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hepflow import modelcard
from hepflow.modelcard import (
    CARD_JSON,
    CARD_MD,
    MAX_BYTES,
    render_files,
    render_sections,
    sha256_file,
    value_text,
)

__all__ = [
    "CARD_JSON",
    "CARD_MD",
    "MAX_BYTES",
    "MODEL_FILES",
    "install_model",
    "render_card",
    "sha256_file",
    "verify_model",
]

#: the files of a ``hepflow train neutrino`` output that inference needs, and that ship
MODEL_FILES: tuple[str, ...] = (
    "flow/config.json",
    "flow/model.safetensors",
    "regression/config.json",
    "regression/model.safetensors",
    "training.json",
)
#: how to make the model again, for the refusals
REBUILD = "rebuild it: docs/training.md, 'The pretrained neutrino model'"


def verify_model(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file of a pretrained neutrino model against its card; returns the card
    (:func:`hepflow.modelcard.verify_model`)."""
    return modelcard.verify_model(directory, max_bytes=MAX_BYTES, rebuild=REBUILD)


def install_model(
    model_dir: str | os.PathLike[str], target: str | os.PathLike[str], *, card: Mapping[str, Any]
) -> dict[str, Any]:
    """Copy the :data:`MODEL_FILES` of a trained model into ``target`` with its card
    (:func:`hepflow.modelcard.install_files`; ``card`` is the record of what the model was
    trained and tested on, see ``tools/build_pretrained.py``)."""
    return modelcard.install_files(
        model_dir,
        target,
        files=MODEL_FILES,
        card=card,
        render=render_card,
        what="hepflow train neutrino",
        max_bytes=MAX_BYTES,
    )


def render_card(card: Mapping[str, Any]) -> str:
    """The model card as markdown: summary, training data, detector, held-out metrics, files.

    Example:
        >>> print(render_card({"model": "m", "hepflow_version": "0.1.0", "date": "2026-12-06",
        ...                    "files": {"a": {"sha256": "ab", "bytes": 2}}}).splitlines()[0])
        # Pretrained neutrino model: m
    """
    lines = [f"# Pretrained neutrino model: {card.get('model', 'hepflow')}", ""]
    lines.append(f"Built {card.get('date', '?')} with hepflow {card.get('hepflow_version', '?')}.")
    if text := card.get("intended_use"):
        lines += ["", text]
    lines += render_sections(
        card, [("training_data", "Training data"), ("held_out", "Held-out sample"), ("detector", "Detector")]
    )
    if metrics := card.get("metrics"):
        lines += ["", "## Metrics on the held-out sample", ""]
        lines += [f"- {line}" for line in metrics.get("verdicts", [])]
        res = metrics.get("resolution", {})
        if res:
            lines += ["", "| estimate | component | bias (GeV) | RMS (GeV) | core width IQR/1.349 (GeV) |"]
            lines.append("|---|---|---|---|---|")
            for method, comps in res.items():
                for comp in ("px", "py", "pz"):
                    if r := comps.get(comp):
                        lines.append(
                            f"| {method} | {comp} | {r['bias']:.2f} | {r['rms']:.2f} | {r['iqr_width']:.2f} |"
                        )
        if cov := metrics.get("coverage"):
            lines += ["", "Coverage of the flow's central intervals (nominal: the level):", ""]
            for level, comps in cov.items():
                lines.append(f"- {level}: " + ", ".join(f"{k} {v:.3f}" for k, v in comps.items()))
        for key in sorted(set(metrics) - {"verdicts", "resolution", "coverage"}):
            lines.append(f"- {key}: {value_text(metrics[key])}")
    lines += render_files(card)
    return "\n".join(lines) + "\n"
