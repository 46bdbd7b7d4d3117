"""The pretrained cosmic-ray model shipped with hepflow, selected as ``--model pretrained``.

The model lives in this package's ``model/`` folder (package data): the files
``hepflow train cosmic`` writes that inference needs (:data:`MODEL_FILES`), ``card.json`` and
``card.md`` (:mod:`hepflow.modelcard`). It was trained with the energy-scale and Xmax-scale
nuisances (``[systematics] enabled = true``): its posterior is marginalised over them, and its
card records the whole config it was trained with, which ``--model pretrained`` uses when no
``--config`` is given (:func:`resolve`). ``tools/build_pretrained_cosmic.py`` installs a trained
model with its card. :func:`resolve` checks every file against the card's sha256 first.

Example:
    >>> resolve("models/mine", None)
    (PosixPath('models/mine'), None)
    >>> is_pretrained("pretrained"), is_pretrained("./pretrained")
    (True, False)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hepflow import __version__, modelcard
from hepflow.errors import ModelError
from hepflow.modelcard import PRETRAINED, is_pretrained

__all__ = [
    "LOCATION",
    "MODEL_FILES",
    "PRETRAINED",
    "available",
    "card_line",
    "install_model",
    "is_pretrained",
    "pretrained_config",
    "pretrained_dir",
    "render_card",
    "resolve",
    "verified_card",
]

#: where the shipped model lives (package data)
LOCATION = Path(__file__).resolve().parent / "model"
#: the files of a ``hepflow train cosmic`` output that inference needs, and that ship
MODEL_FILES: tuple[str, ...] = ("flow/config.json", "flow/model.safetensors", "training.json")
#: how to make the model again, for the refusals
REBUILD = "rebuild it: docs/cosmic_model.md, 'The pretrained cosmic model'"


def available() -> bool:
    """Whether this installation ships a pretrained cosmic model (its card at least; not verified)."""
    return (LOCATION / modelcard.CARD_JSON).is_file()


def pretrained_dir() -> Path:
    """The shipped model's folder, every file checked against its card.

    Raises :class:`~hepflow.errors.ModelError` when this installation has no pretrained cosmic
    model, or when a file is missing, unlisted or altered.
    """
    verified_card()
    return LOCATION


def verified_card() -> dict[str, Any]:
    """The shipped model's card, after every file was checked against it (as :func:`pretrained_dir`)."""
    if not available():
        raise ModelError(
            f"no pretrained cosmic model ships with this installation of hepflow {__version__} "
            f"(nothing in {LOCATION}): pass --model DIR of a model from `hepflow train cosmic`"
        )
    return modelcard.verify_model(LOCATION, rebuild=REBUILD)


def pretrained_config() -> Any:
    """The :class:`~hepflow.cosmic.config.CosmicConfig` the shipped model was trained with (its
    card's ``config``)."""
    from hepflow.cosmic.config import CosmicConfig

    card = modelcard.read_card(LOCATION, rebuild=REBUILD)
    if not isinstance(card.get("config"), Mapping):
        raise ModelError(f"{LOCATION / modelcard.CARD_JSON} records no config: {REBUILD}")
    return CosmicConfig.from_dict(dict(card["config"]), where=str(LOCATION / modelcard.CARD_JSON))


def resolve(model: str | os.PathLike[str], config: Any) -> tuple[Path, Any]:
    """``(model directory, config)`` for a cosmic step: for ``"pretrained"`` the verified shipped
    model and, when ``config`` is None, the config it was trained with; otherwise both unchanged
    (a config that disagrees with the model is refused where the model is loaded)."""
    if not is_pretrained(model):
        return Path(model), config
    where = pretrained_dir()
    return where, pretrained_config() if config is None else config


def card_line() -> str:
    """One line on the shipped model: pseudo-experiments, seed, systematics and date."""
    card, where = verified_card(), LOCATION
    data = card.get("training_data", {})
    syst = "with" if (card.get("config") or {}).get("systematics", {}).get("enabled") else "without"
    n = data.get("pseudo_experiments", "?")
    return (
        f"pretrained cosmic model {where}: trained on {n} pseudo-experiments (seed {data.get('seed', '?')}) "
        f"{syst} the energy- and Xmax-scale nuisances, built {card.get('date', '?')} with hepflow "
        f"{card.get('hepflow_version', '?')}; card: {where / modelcard.CARD_MD}"
    )


def render_card(card: Mapping[str, Any]) -> str:
    """The cosmic model card as markdown.

    Example:
        >>> print(render_card({"model": "m", "hepflow_version": "0.1.0", "date": "2026-12-07",
        ...                    "files": {"a": {"sha256": "ab", "bytes": 2}}}).splitlines()[0])
        # Pretrained cosmic-ray model: m
    """
    lines = [f"# Pretrained cosmic-ray model: {card.get('model', 'hepflow')}", ""]
    lines.append(f"Built {card.get('date', '?')} with hepflow {card.get('hepflow_version', '?')}.")
    if text := card.get("intended_use"):
        lines += ["", text]
    lines += modelcard.render_sections(card, [("training_data", "Training data")])
    if auger := card.get("auger"):
        lines += ["", "## On the published Auger data, against the MCMC with the same nuisances", ""]
        lines += [f"- {line}" for line in auger.get("lines", [])]
        if table := auger.get("per_parameter"):
            lines += ["", "| parameter | MCMC mean (sd) | cINN mean (sd) | shift (MCMC sd) | width ratio |"]
            lines.append("|---|---|---|---|---|")
            for name, r in table.items():
                lines.append(
                    f"| {name} | {r['mcmc_mean']:.4g} ({r['mcmc_std']:.2g}) | {r['cinn_mean']:.4g} "
                    f"({r['cinn_std']:.2g}) | {r['mean_shift']:+.2f} | {r['width_ratio']:.2f} |"
                )
    if mocks := card.get("mocks"):
        lines += mock_lines(mocks)
    lines += modelcard.render_files(card)
    return "\n".join(lines) + "\n"


def mock_lines(mocks: Mapping[str, Any]) -> list[str]:
    """The card's ``mocks`` section (from ``hepflow compare cosmic``) as markdown: per parameter
    the median shift and width ratio against the MCMC, the calibration and the speed.

    Example:
        >>> row = {"abs_mean_shift": {"median": 0.19}, "width_ratio": {"median": 1.03},
        ...        "width_within_tol": 0.8}
        >>> mocks = {"n_mocks": 10, "summary": {"all": row}, "timing": {"time_ratio_median": 4748.6},
        ...          "calibration": {"n_observations": 500, "n_samples": 1000,
        ...                          "max_coverage_deviation": {"0.68": 0.025, "0.95": 0.014}}}
        >>> print("\\n".join(mock_lines(mocks)[5:]))  # doctest: +NORMALIZE_WHITESPACE
        | parameter | median abs(mean shift) (MCMC sd) | median width ratio | widths within 20 % |
        |---|---|---|---|
        | all | 0.19 | 1.03 | 80 % |
        <BLANKLINE>
        Calibration on 500 further mocks x 1000 samples: largest coverage deviation 0.025 at 68 %,
        0.014 at 95 % (against the levels a calibrated posterior gives with that many samples).
        <BLANKLINE>
        Speed: the cINN is 4749 times faster than the MCMC per posterior (median).
    """
    lines = ["", "## On simulated mocks", ""]
    summary = mocks.get("summary") or {}
    lines += [
        f"{mocks.get('n_mocks', '?')} mock observations with parameters and nuisances from the priors, each "
        "against the MCMC with the nuisances (`hepflow compare cosmic`):",
        "",
        "| parameter | median abs(mean shift) (MCMC sd) | median width ratio | widths within 20 % |",
        "|---|---|---|---|",
    ]
    for name, row in summary.items():
        if isinstance(row, Mapping) and isinstance(row.get("abs_mean_shift"), Mapping):  # not "targets"
            lines.append(
                f"| {name} | {row['abs_mean_shift']['median']:.2f} | {row['width_ratio']['median']:.2f} "
                f"| {100 * row.get('width_within_tol', float('nan')):.0f} % |"
            )
    if cal := mocks.get("calibration"):
        dev = cal.get("max_coverage_deviation") or {}
        lines += [
            "",
            f"Calibration on {cal.get('n_observations', '?')} further mocks x {cal.get('n_samples', '?')} "
            "samples: largest coverage deviation "
            + ", ".join(f"{float(v):.3f} at {100 * float(k):.0f} %" for k, v in dev.items())
            + " (against the levels a calibrated posterior gives with that many samples).",
        ]
    if (ratio := (mocks.get("timing") or {}).get("time_ratio_median")) is not None:
        lines += ["", f"Speed: the cINN is {ratio:.0f} times faster than the MCMC per posterior (median)."]
    return lines


def install_model(
    model_dir: str | os.PathLike[str],
    target: str | os.PathLike[str] = LOCATION,
    *,
    config: Any,
    seed: int | None = None,
    auger: Mapping[str, Any] | None = None,
    mocks: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Install a trained cosmic model (one cINN) with its card: the training record of its
    ``training.json``, the seed of its pseudo-experiments (``hepflow generate cosmic --seed``),
    the whole ``config`` it was trained with (a :class:`~hepflow.cosmic.config.CosmicConfig`),
    and what was measured: ``auger`` (an
    ``hepflow infer cosmic --importance --mcmc`` summary on the Auger data) and ``mocks`` (a
    ``hepflow compare cosmic`` summary), each optional."""
    import json

    from hepflow.config import json_plain, to_dict

    src = Path(model_dir)
    try:
        training = json.loads((src / "training.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"{src / 'training.json'}: not a `hepflow train cosmic` output ({err})") from err
    # the card's config makes the training sample again: its [generation] is the sample's
    n = training.get("pseudo_experiments")
    if isinstance(n, int) and seed is not None:
        config = dataclasses.replace(
            config, generation=dataclasses.replace(config.generation, n=n, seed=seed)
        )
    card: dict[str, Any] = {
        "model": src.name,
        "hepflow_version": __version__,
        "date": datetime.date.today().isoformat(),
        "intended_use": (
            "The posterior of the source parameters (spectral index, rigidity cutoff, five element "
            "fractions) for the Auger spectrum and Xmax data and observations like it, marginalised "
            "over the energy-scale and Xmax-scale nuisances. Amortized: on the published Auger data "
            "use it with --importance (its weights reproduce the MCMC) or refine it for the "
            "observation (`hepflow refine cosmic --model pretrained`); the card says how far the "
            "plain cINN is from the MCMC there."
        ),
        "training_data": {
            "pseudo_experiments": training.get("pseudo_experiments"),
            "seed": seed,
            "file": training.get("data"),
            "epochs": training.get("epochs"),
            "parameters": training.get("parameters"),
            "best_val_loss": training.get("best_val_loss"),
        },
        "config": json_plain(to_dict(config)),
    }
    if auger is not None:
        card["auger"] = json_plain(auger)
    if mocks is not None:
        card["mocks"] = json_plain(mocks)
    return modelcard.install_files(
        src, target, files=MODEL_FILES, card=card, render=render_card, what="hepflow train cosmic"
    )
