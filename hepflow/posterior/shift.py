"""Domain shift: does an input look like the data a model was trained on?

A model is trustworthy only on inputs like its training data. When it is trained, a small
:class:`TrainingSummary` of its conditioning features is stored in its metadata: per feature
the quantiles of the training context at :data:`LEVELS`, the training counts in the bins that
these quantiles bound, mean, standard deviation, the fraction of exact zeros and of padding, and
the number of events. Padded set elements (jet slots an event does not fill) are no values:
each slot of a set is a feature of its own, summarised over the events that fill it, and only
slots that enough training events fill (``min_count``) are kept.

At inference the input's context is binned on the same edges (:class:`InputTally`, chunk by
chunk) and :func:`compare` tests each feature: the two-sample chi-square statistic of the
training and input bin counts, whose distribution under "same distribution" is computed for
these two sample sizes by drawing both samples from the pooled bin probabilities (a parametric
bootstrap, ``draws`` times), so that 50 events do not cry wolf from fluctuations alone; the
per-feature p-values are corrected for testing many features (Holm). The verdict
(:class:`ShiftResult`) says whether the input looks like the training data and names the
features that differ most with their numbers.

Example:
    >>> rng = np.random.default_rng(1)
    >>> train = {"met_px": rng.normal(0, 25, 20000), "njet": rng.poisson(5, 20000).astype(float)}
    >>> summary = summarize(train)
    >>> same = {"met_px": rng.normal(0, 25, 300), "njet": rng.poisson(5, 300).astype(float)}
    >>> compare(summary, tally(summary, same)).shifted
    False
    >>> wider = {"met_px": 1.6 * rng.normal(0, 25, 300), "njet": rng.poisson(5, 300).astype(float)}
    >>> result = compare(summary, tally(summary, wider))
    >>> result.shifted, result.features[0].name
    (True, 'met_px')
    >>> print(result.verdict())
    input differs from the training data (300 events): met_px
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hepflow.errors import HepflowError, ModelError

__all__ = [
    "LEVELS",
    "DomainShiftError",
    "DomainShiftWarning",
    "FeatureShift",
    "InputTally",
    "ShiftResult",
    "TrainingSummary",
    "compare",
    "context_columns",
    "model_summary",
    "read_summary",
    "summarize",
    "tally",
]

#: quantile levels of the stored summary; neighbouring levels bound the bins of the test
LEVELS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 1.0)
#: the version of the stored summary (``TrainingSummary.to_dict``)
SUMMARY_VERSION = 1
#: the most context values per event that :func:`model_summary` summarises (a few KB stored)
MAX_VALUES = 128
#: significant digits of the stored numbers (bin counts are recomputed on the rounded edges)
DIGITS = 4


class DomainShiftWarning(UserWarning):
    """The input of a model differs from its training data (see :func:`compare`)."""


class DomainShiftError(HepflowError):
    """The input differs from the training data and the caller asked for an error
    (``hepflow infer neutrino --on-shift error``)."""


def _round(value: float) -> float:
    return float(f"{value:.{DIGITS}g}")


def context_columns(
    context: Mapping[str, Any],
    *,
    names: Mapping[str, Sequence[str]] | None = None,
    masks: Mapping[str, str] | None = None,
    slots: int | None = None,
) -> dict[str, np.ndarray]:
    """Named one-dimensional columns of a model context, NaN where there is no value.

    ``context`` maps keys to arrays with one row per event: ``(n,)``, ``(n, d)`` (flat features,
    named by ``names[key]`` or ``key[i]``) or ``(n, m, d)`` (a padded set whose boolean mask is
    ``context[masks[key]]``): set element ``s`` gives the columns ``name[s]`` for ``s <
    slots``, NaN where the event does not fill the slot. Mask arrays give no columns.

    Example:
        >>> ctx = {"flat": np.array([[1.0, 2.0]]), "jets": np.array([[[3.0], [0.0]]]),
        ...        "mask": np.array([[True, False]])}
        >>> cols = context_columns(ctx, names={"flat": ["a", "b"], "jets": ["pt"]}, masks={"jets": "mask"})
        >>> {k: v.tolist() for k, v in cols.items()}
        {'a': [1.0], 'b': [2.0], 'pt[0]': [3.0], 'pt[1]': [nan]}
    """
    names = names or {}
    masks = dict(masks or {})
    mask_keys = set(masks.values())
    out: dict[str, np.ndarray] = {}
    for key, value in context.items():
        if key in mask_keys:
            continue
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
        labels = list(names.get(key, []))
        if arr.ndim == 1:
            out[key] = arr
        elif arr.ndim == 2:
            for i in range(arr.shape[1]):
                out[labels[i] if i < len(labels) else f"{key}[{i}]"] = arr[:, i]
        elif arr.ndim == 3:
            if key in masks:
                if masks[key] not in context:
                    raise ModelError(f"the context has no mask {masks[key]!r} for its set {key!r}")
                raw = context[masks[key]]
                present = np.asarray(raw.detach().cpu() if hasattr(raw, "detach") else raw, dtype=bool)
            else:
                present = np.ones(arr.shape[:2], bool)
            for s in range(arr.shape[1] if slots is None else min(slots, arr.shape[1])):
                for i in range(arr.shape[2]):
                    name = labels[i] if i < len(labels) else f"{key}[{i}]"
                    out[f"{name}[{s}]"] = np.where(present[:, s], arr[:, s, i], np.nan)
        else:
            raise ModelError(f"context {key!r} has {arr.ndim} dimensions; expected 1, 2 or 3")
    return out


def _edges(quantiles: Sequence[float]) -> np.ndarray:
    """The bin edges: the unique inner quantiles (1 % to 99 %). The minimum and maximum are no
    edges: a bin beyond them would hold a handful of training values whose count is too noisy an
    estimate of its probability, and one input value there would dominate the statistic. When
    the 99 % quantile is the maximum (a discrete feature), an edge just above it separates the
    values the training never reached, as the 1 % edge does below when it is the minimum."""
    edges = np.unique(np.asarray(quantiles[1:-1], dtype=np.float64))
    if float(quantiles[-1]) == edges[-1]:
        edges = np.append(edges, np.nextafter(edges[-1], np.inf))
    return edges


def _bins(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts per bin: ``< edges[0]``, ``[edges[i], edges[i+1])``, ``>= edges[-1]``."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


@dataclass
class TrainingSummary:
    """What a model records about its training context (see :func:`summarize`).

    ``features`` maps each feature to ``n`` (events with a value), ``padding`` (fraction of
    events without one), ``zeros`` (fraction of exact zeros among the values), ``mean``,
    ``std``, ``quantiles`` (at :data:`LEVELS`) and ``counts`` (training values per bin of the
    unique quantiles). ``layout`` says how a context maps to features (:func:`context_columns`'s
    ``names``, ``masks``, ``slots``, and ``keys``: the order of positional context arrays).
    """

    events: int
    features: dict[str, dict[str, Any]]
    layout: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plain-JSON form stored in a model's metadata (``training_summary``)."""
        return {
            "version": SUMMARY_VERSION,
            "levels": list(LEVELS),
            "events": self.events,
            "layout": self.layout,
            "features": self.features,
        }

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "training_summary") -> TrainingSummary:
        """The summary stored by :meth:`to_dict`; :class:`~hepflow.errors.ModelError` names
        what is malformed."""
        if not isinstance(doc, Mapping):
            raise ModelError(f"{where} is not an object")
        if doc.get("version") != SUMMARY_VERSION or list(doc.get("levels", [])) != list(LEVELS):
            raise ModelError(
                f"{where} has version {doc.get('version')!r}; this hepflow reads version {SUMMARY_VERSION}"
            )
        features = doc.get("features")
        if not isinstance(features, Mapping) or not features:
            raise ModelError(f"{where}: 'features' must be a non-empty object")
        for name, f in features.items():
            try:
                counts = np.asarray(f["counts"], dtype=np.int64)
                if len(f["quantiles"]) != len(LEVELS) or len(counts) != len(_edges(f["quantiles"])) + 1:
                    raise ValueError("quantiles and counts do not match")
                if (counts < 0).any() or int(counts.sum()) != int(f["n"]) or int(f["n"]) < 1:
                    raise ValueError("counts do not add up to n")
                for key in ("mean", "std", "zeros", "padding"):
                    if not math.isfinite(float(f[key])):
                        raise ValueError(f"{key} is not finite")
            except (KeyError, TypeError, ValueError) as err:
                raise ModelError(f"{where}: feature {name!r} is malformed ({err})") from err
        layout = doc.get("layout", {})
        return cls(events=int(doc.get("events", 0)), features=dict(features), layout=dict(layout or {}))

    def columns(self, *context: Any) -> dict[str, np.ndarray]:
        """The feature columns of a context given as a mapping or as positional arrays in the
        order of ``layout["keys"]``."""
        if len(context) == 1 and isinstance(context[0], Mapping):
            ctx = dict(context[0])
        elif len(context) == 1 and not self.layout.get("keys"):
            ctx = {"context": context[0]}
        else:
            keys = list(self.layout.get("keys", []))
            if len(keys) != len(context):
                raise ModelError(
                    f"the training summary expects {len(keys)} context arrays ({', '.join(keys)}), "
                    f"got {len(context)}"
                )
            ctx = dict(zip(keys, context, strict=True))
        return context_columns(
            ctx,
            names=self.layout.get("names"),
            masks=self.layout.get("masks"),
            slots=self.layout.get("slots"),
        )


def summarize(
    columns: Mapping[str, Any],
    *,
    min_count: int = 50,
    min_fraction: float = 0.01,
    layout: Mapping[str, Any] | None = None,
) -> TrainingSummary:
    """The :class:`TrainingSummary` of training feature columns (NaN = no value: padding).

    Features with fewer than ``min_count`` values (fewer than the number of events, for a
    training set smaller than that) or values in fewer than ``min_fraction`` of the events (jet
    slots few events fill) are left out: their test would have little power and
    they would only make the summary bigger. ``layout`` is stored as it is (see
    :meth:`TrainingSummary.columns`).

    Example:
        >>> s = summarize({"x": np.arange(1000.0), "slot": np.r_[np.arange(10.0), [np.nan] * 990]})
        >>> list(s.features), s.features["x"]["quantiles"][5], s.events
        (['x'], 499.5, 1000)
    """
    events = max((len(np.asarray(raw)) for raw in columns.values()), default=0)
    features: dict[str, dict[str, Any]] = {}
    for name, raw in columns.items():
        values = np.asarray(raw, dtype=np.float64)
        present = values[np.isfinite(values)]
        # a training set smaller than min_count keeps the features every event fills
        if len(present) < max(1, min(min_count, events), min_fraction * len(values)):
            continue
        quantiles = [_round(q) for q in np.quantile(present, LEVELS)]
        counts = _bins(_edges(quantiles), present)
        features[name] = {
            "n": len(present),
            "padding": _round(1.0 - len(present) / len(values)),
            "zeros": _round(float(np.mean(present == 0.0))),
            "mean": _round(float(present.mean())),
            "std": _round(float(present.std())),
            "quantiles": quantiles,
            "counts": [int(c) for c in counts],
        }
    return TrainingSummary(events=events, features=features, layout=dict(layout or {}))


def model_summary(
    model: Any, context: Any, *, names: Mapping[str, Sequence[str]] | None = None
) -> TrainingSummary | None:
    """The :class:`TrainingSummary` of a model's training ``context`` (a tensor or a dict of
    them, as :func:`hepflow.fit` takes it): the model's context keys and the masks of its padded
    sets make the layout; features are named by ``names`` (``{key: [name, ...]}``) or
    ``key[i]``. :func:`hepflow.fit` records it as ``model.training_summary`` and
    :func:`hepflow.save_model` stores it. A context of more than :data:`MAX_VALUES` values per
    event (the cosmic analysis's 943 binned features) or an array of more than three dimensions
    (an image) gets none (None): the model then records no training summary.

    Example:
        >>> import torch, hepflow
        >>> model = hepflow.ConditionalINN(2, 3, depth=2, width=8)
        >>> s = model_summary(model, torch.randn(500, 3), names={"context": ["a", "b", "c"]})
        >>> list(s.features), s.events
        (['a', 'b', 'c'], 500)
    """
    encoder = getattr(model, "context_encoder", None)
    if isinstance(context, Mapping):
        width = sum(int(np.prod(tuple(v.shape[1:]) or (1,))) for v in context.values())
    else:
        width = int(np.prod(tuple(context.shape[1:]) or (1,)))
    arrays = context.values() if isinstance(context, Mapping) else [context]
    if width > MAX_VALUES or any(len(v.shape) > 3 for v in arrays):
        return None  # too wide to summarise in a few KB, or not flat features and padded sets
    keys = list(getattr(model, "context_keys", []) or [])
    masks = encoder.masks if encoder is not None else {}
    ctx = dict(context) if isinstance(context, Mapping) else {"context": context}
    layout: dict[str, Any] = {"keys": keys, "masks": masks}
    if names:
        layout["names"] = {k: list(v) for k, v in names.items()}
    return summarize(context_columns(ctx, names=names, masks=masks), layout=layout)


@dataclass
class _Tally:
    counts: np.ndarray
    n: int = 0
    missing: int = 0
    total: float = 0.0
    squares: float = 0.0


class InputTally:
    """The input's feature values binned on a summary's edges, added chunk by chunk.

    Holds per feature the bin counts, the number of values and of events without one, and the
    sums for mean and standard deviation: memory independent of the number of events.
    """

    def __init__(self, summary: TrainingSummary) -> None:
        self.summary = summary
        self.events = 0
        self._edges = {k: _edges(f["quantiles"]) for k, f in summary.features.items()}
        self._tallies = {k: _Tally(np.zeros(len(e) + 1, np.int64)) for k, e in self._edges.items()}

    def add(self, columns: Mapping[str, Any]) -> InputTally:
        """Add the feature columns of some events (:meth:`TrainingSummary.columns`); a feature
        of the summary that the columns lack is refused."""
        n = None
        for name, t in self._tallies.items():
            if name not in columns:
                raise ModelError(f"the input has no feature {name!r}, which the training summary records")
            values = np.asarray(columns[name], dtype=np.float64)
            n = len(values)
            present = values[np.isfinite(values)]
            t.counts += _bins(self._edges[name], present)
            t.n += len(present)
            t.missing += len(values) - len(present)
            t.total += float(present.sum())
            t.squares += float((present**2).sum())
        self.events += n or 0
        return self

    def __iter__(self) -> Iterator[tuple[str, _Tally]]:
        return iter(self._tallies.items())


def tally(summary: TrainingSummary, columns: Mapping[str, Any]) -> InputTally:
    """The :class:`InputTally` of one set of feature columns."""
    return InputTally(summary).add(columns)


@dataclass
class FeatureShift:
    """One feature's comparison: the chi-square ``statistic`` of training and input bin counts
    with ``bins`` non-empty bins, its ``p_value`` under "same distribution" for these sample
    sizes (``p_floor``: no null draw reached it, the p-value is below ``p_value``), whether it
    is ``rejected`` after the correction for many features, the means and standard deviations,
    and the bin whose input fraction differs most from the training fraction."""

    name: str
    n: int
    statistic: float
    bins: int
    p_value: float
    p_floor: bool
    rejected: bool
    train_mean: float
    train_std: float
    input_mean: float
    input_std: float
    worst_bin: str
    train_fraction: float
    input_fraction: float

    def describe(self) -> str:
        """One line with the numbers (``met_px: input mean ... vs training ...; p < 1e-04``)."""
        p = f"p < {self.p_value:.0e}" if self.p_floor else f"p = {self.p_value:.2g}"
        return (
            f"{self.name}: input mean {self.input_mean:.4g}, std {self.input_std:.4g} vs training "
            f"mean {self.train_mean:.4g}, std {self.train_std:.4g}; {self.name} {self.worst_bin}: "
            f"{100 * self.input_fraction:.1f}% of the input vs {100 * self.train_fraction:.1f}% of "
            f"training; chi2 {self.statistic:.1f} ({self.bins} bins, {self.n} values), {p}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (recorded in ``run.json``)."""
        return {
            k: (_round(v) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in self.__dict__.items()
        }


@dataclass
class ShiftResult:
    """The verdict of :func:`compare`: ``shifted`` when any feature differs after the
    correction for testing ``len(features)`` features at level ``alpha``; ``features`` sorted
    by p-value, then statistic (the most different first)."""

    shifted: bool
    events: int
    alpha: float
    features: list[FeatureShift]
    training_events: int = 0

    @property
    def differing(self) -> list[FeatureShift]:
        """The features that differ (rejected), most different first."""
        return [f for f in self.features if f.rejected]

    def verdict(self) -> str:
        """One line: whether the input looks like the training data, and which features differ."""
        if self.events == 0:
            return "no input events: nothing to compare with the training data"
        if not self.shifted:
            tested = len(self.features)
            return f"input looks like the training data ({self.events} events, {tested} features tested)"
        names = ", ".join(f.name for f in self.differing[:5])
        more = len(self.differing) - 5
        return f"input differs from the training data ({self.events} events): {names}" + (
            f" and {more} more" if more > 0 else ""
        )

    def summary(self, *, top: int = 3) -> str:
        """The verdict and the ``top`` most different features with their numbers."""
        lines = [self.verdict()]
        shown = self.differing[:top] if self.shifted else self.features[:top]
        lines += [f"  {f.describe()}" for f in shown]
        if self.shifted:
            lines.append(
                "  the posterior may be miscalibrated on this input: see docs/domain_shift.md "
                "(train on your own full-simulation MC)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (recorded in ``run.json`` under ``domain_shift``)."""
        return {
            "verdict": self.verdict(),
            "shifted": self.shifted,
            "events": self.events,
            "training_events": self.training_events,
            "alpha": self.alpha,
            "features": [f.to_dict() for f in self.features],
        }


def _chi2(train: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Two-sample chi-square of bin counts (last axis), bins empty in both skipped."""
    n_train = train.sum(axis=-1, keepdims=True).astype(np.float64)
    n_data = data.sum(axis=-1, keepdims=True).astype(np.float64)
    pooled = (train + data).astype(np.float64)
    diff = train / np.maximum(n_train, 1) - data / np.maximum(n_data, 1)
    terms = np.divide(diff**2, pooled, out=np.zeros_like(pooled), where=pooled > 0)
    return (n_train * n_data)[..., 0] * terms.sum(axis=-1)


def _label(edges: np.ndarray, k: int) -> str:
    """The range of bin ``k`` in words (the edge just above a discrete maximum reads '=' / '>')."""
    split = len(edges) > 1 and edges[-1] == np.nextafter(edges[-2], np.inf)
    if k == 0:
        return f"< {edges[0]:.4g}"
    if k == len(edges):
        return f"> {edges[-2]:.4g}" if split else f">= {edges[-1]:.4g}"
    if split and k == len(edges) - 1:
        return f"= {edges[-2]:.4g}"
    return f"in [{edges[k - 1]:.4g}, {edges[k]:.4g})"


def compare(
    summary: TrainingSummary,
    data: InputTally,
    *,
    alpha: float = 0.01,
    draws: int = 10000,
    seed: int = 0,
) -> ShiftResult:
    """Test every feature of ``data`` against ``summary`` (see the module docstring).

    Args:
        summary: the model's training summary.
        data: the input, binned (:class:`InputTally`, :func:`tally`).
        alpha: the family-wise false-alarm rate: the probability that an input of the training
            distribution is called different (Holm's correction over the tested features).
        draws: null draws per feature; the smallest p-value is ``1 / (draws + 1)``.
        seed: seed of the null draws (the verdict is reproducible).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    tested: list[dict[str, Any]] = []
    for name, t in data:
        if t.n == 0:
            continue
        f = summary.features[name]
        train = np.asarray(f["counts"], np.int64)
        pooled = (train + t.counts) / (train.sum() + t.n)
        observed = float(_chi2(train, t.counts))
        null = _chi2(
            rng.multinomial(int(train.sum()), pooled, size=draws), rng.multinomial(t.n, pooled, size=draws)
        )
        exceed = int((null >= observed * (1 - 1e-9)).sum())
        edges = _edges(f["quantiles"])
        train_frac, data_frac = train / train.sum(), t.counts / t.n
        worst = int(np.argmax(np.abs(data_frac - train_frac)))
        mean = t.total / t.n
        tested.append(
            {
                "name": name,
                "n": t.n,
                "statistic": observed,
                "bins": int(((train + t.counts) > 0).sum()),
                "p_value": (exceed + 1) / (draws + 1),
                "p_floor": exceed == 0,
                "train_mean": float(f["mean"]),
                "train_std": float(f["std"]),
                "input_mean": mean,
                "input_std": math.sqrt(max(t.squares / t.n - mean**2, 0.0)),
                "worst_bin": _label(edges, worst),
                "train_fraction": float(train_frac[worst]),
                "input_fraction": float(data_frac[worst]),
            }
        )
    tested.sort(key=lambda r: (r["p_value"], -r["statistic"]))
    m = len(tested)
    rejecting = True
    features = []
    for i, row in enumerate(tested):  # Holm: step down while p_(i) <= alpha / (m - i)
        rejecting = rejecting and row["p_value"] <= alpha / (m - i)
        features.append(FeatureShift(rejected=rejecting, **row))
    return ShiftResult(
        shifted=any(f.rejected for f in features),
        events=data.events,
        alpha=alpha,
        features=features,
        training_events=summary.events,
    )


def read_summary(model_dir: str | os.PathLike[str]) -> TrainingSummary | None:
    """The training summary stored with a model (a saved flow, a training output with
    ``flow/``, or an ensemble: its first member's), or None for a model saved without one
    (before hepflow recorded it). Reads only ``config.json``."""
    from hepflow.flows.serialization import read_config
    from hepflow.posterior.loading import is_ensemble, member_names, model_path

    path = model_path(model_dir)
    if is_ensemble(path):
        path = model_path(path / member_names(path)[0])
    doc = (read_config(path).get("metadata") or {}).get("training_summary")
    if doc is None:
        return None
    return TrainingSummary.from_dict(doc, where=f"{path}/config.json: metadata.training_summary")
