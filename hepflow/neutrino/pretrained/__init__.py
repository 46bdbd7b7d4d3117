"""The pretrained neutrino model shipped with hepflow, selected as ``--model pretrained``.

The model lives in this package's ``model/`` folder (package data): the files
``hepflow train neutrino`` writes that inference needs, ``card.json`` and ``card.md``
(:mod:`hepflow.neutrino.pretrained.card`). ``tools/build_pretrained.py``
(:mod:`hepflow.neutrino.pretrained.build`) trains, tests and installs it. :func:`resolve_model`
turns the name :data:`PRETRAINED` into that folder after checking every file against the card's
sha256; any other value is a model directory and passes unchanged.
:func:`hepflow.neutrino.model.load_models` (``load_models("pretrained")``), the inference
processor and :func:`hepflow.neutrino.pipeline.infer` resolve their model with it. An installation without a
pretrained model says so in one line (:func:`pretrained_dir`).

Example:
    >>> resolve_model("models/mine")
    PosixPath('models/mine')
    >>> is_pretrained("pretrained"), is_pretrained("./pretrained")
    (True, False)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hepflow import __version__
from hepflow.errors import ModelError
from hepflow.generate.detector import calorimeter_description
from hepflow.modelcard import PRETRAINED, is_pretrained
from hepflow.neutrino.pretrained.card import CARD_JSON, verify_model

__all__ = [
    "LOCATION",
    "PRETRAINED",
    "available",
    "card_line",
    "detector_note",
    "is_pretrained",
    "pretrained_dir",
    "resolve_model",
    "verify_model",
]

#: where the shipped model lives (package data)
LOCATION = Path(__file__).resolve().parent / "model"


def available() -> bool:
    """Whether this installation ships a pretrained model (its card at least; not verified)."""
    return (LOCATION / CARD_JSON).is_file()


def pretrained_dir() -> Path:
    """The shipped model's folder, every file checked against its card (a few ms for a few MB).

    Raises :class:`~hepflow.errors.ModelError` when this installation has no pretrained model,
    when its card is missing, or when a file is missing, unlisted or altered.
    """
    if not LOCATION.is_dir() or not any(LOCATION.iterdir()):
        raise ModelError(
            f"no pretrained neutrino model ships with this installation of hepflow {__version__} "
            f"(nothing in {LOCATION}): pass --model DIR of a model from `hepflow train neutrino`, or "
            "build the pretrained one with tools/build_pretrained.py (docs/training.md)"
        )
    verify_model(LOCATION)
    return LOCATION


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """The model directory ``model`` names: the verified shipped model for ``"pretrained"``,
    ``model`` itself otherwise."""
    return pretrained_dir() if is_pretrained(model) else Path(model)


def _seeds(seeds: object) -> str:
    """``11-30`` for a run of consecutive seeds, the list otherwise."""
    if isinstance(seeds, list) and len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return str(seeds if seeds is not None else "?")


def card_line() -> str:
    """One line on the shipped model: events, seeds, detector and date from its card."""
    where = pretrained_dir()
    card = verify_model(where)
    data = card.get("training_data", {})
    line = (
        f"pretrained model {where}: trained on {data.get('events_used', '?')} selected of "
        f"{data.get('generated_events', '?')} generated ttbar events (seeds {_seeds(data.get('seeds'))}), "
        f"built {card.get('date', '?')} with hepflow {card.get('hepflow_version', '?')}; card: "
        f"{where / 'card.md'}"
    )
    return line + detector_note(card)


def detector_note(card: dict[str, Any]) -> str:
    """ "" when the card's model was trained with this installation's fast detector, else a
    sentence saying that it was not and what differs (cards without the record say so too).

    Example:
        >>> detector_note({"detector": {"calorimeters": calorimeter_description()}})
        ''
        >>> detector_note({"detector": {}})[:60]
        '; note: its card does not record the calorimeters it was tra'
    """
    trained = card.get("detector", {}).get("calorimeters")
    now = calorimeter_description()
    if trained == now:
        return ""
    if trained is None:
        return f"; note: its card does not record the calorimeters it was trained with (this detector: {now})"
    return (
        f"; note: trained on another version of the fast detector ({trained}; this hepflow: {now}), "
        "so its calibration on samples generated now is not the card's (docs/detector.md, "
        "'Pileup and the MET'); train one on your samples and pass --model DIR (docs/training.md)"
    )
