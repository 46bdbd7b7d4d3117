"""Strict configuration loading: TOML (or dicts) into frozen dataclasses.

Unknown keys and wrong types are refused with a message naming the key, the expected type and
the file, never silently ignored.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Cuts:
    ...     pt_min: float = 25.0
    ...     n_min: int = 4
    >>> from_dict(Cuts, {"pt_min": 30})
    Cuts(pt_min=30.0, n_min=4)
    >>> from_dict(Cuts, {"pt_mni": 30})
    Traceback (most recent call last):
    ...
    hepflow.errors.ConfigError: config: unknown key 'pt_mni' for Cuts; known keys: n_min, pt_min

Values are checked too: a dataclass's ``__post_init__`` calls :func:`check_values` with a
:class:`Bound` per field, and :func:`from_dict` names the file, table and key of a value out of
bounds:

    >>> @dataclass(frozen=True)
    ... class Fit:
    ...     lr: float = 1e-3
    ...     def __post_init__(self) -> None:
    ...         check_values(self, lr=POSITIVE)
    >>> from_dict(Fit, {"lr": -1}, where="x.toml [training]")
    Traceback (most recent call last):
    ...
    hepflow.errors.ConfigError: x.toml [training].lr: expected a positive number, got -1.0
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hepflow.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

#: the largest layer width, embedding or bin count a config or model file may ask for: a larger
#: one is refused before anything is allocated (a width of 1e9 would need tens of GB)
MAX_SIZE = 16384


@dataclass(frozen=True)
class Bound:
    """What a config value must be: ``expected`` in words, and the ``test`` it must pass."""

    expected: str
    test: Callable[[Any], bool]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: a finite number > 0 (learning rates, tolerances, time limits)
POSITIVE = Bound("a positive number", lambda v: _number(v) and v > 0)
#: a finite number >= 0 (weight decay)
NON_NEGATIVE = Bound("a number >= 0", lambda v: _number(v) and v >= 0)
#: a fraction in [0, 1) (validation split, dropout)
FRACTION = Bound("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
#: an integer >= 1 (epochs, batch sizes, patience, counts)
COUNT = Bound("a positive integer", lambda v: _integer(v) and v >= 1)
#: a number of posterior samples: an integer >= 2 (a standard deviation needs two)
SAMPLES = Bound("an integer >= 2", lambda v: _integer(v) and v >= 2)
#: an integer >= 0 (seeds)
SEED = Bound("an integer >= 0", lambda v: _integer(v) and v >= 0)
#: a network size: an integer in [1, MAX_SIZE] (widths, depths, embeddings, bins)
SIZE = Bound(f"an integer in [1, {MAX_SIZE}]", lambda v: _integer(v) and 1 <= v <= MAX_SIZE)


class ValueOutOfBounds(ConfigError):
    """A config value outside its :class:`Bound`; ``key`` names the field."""

    def __init__(self, owner: str, key: str, detail: str) -> None:
        super().__init__(f"{owner}.{key}: {detail}")
        self.key = key
        self.detail = detail


def check_values(obj: Any, **bounds: Bound) -> None:
    """Raise :class:`ValueOutOfBounds` for the first field of ``obj`` outside its bound.

    ``None`` passes (an optional setting that is off). Called from ``__post_init__``, so a
    dataclass built in Python is checked as one read from a file is.

    Example:
        >>> @dataclass(frozen=True)
        ... class Net:
        ...     width: int = 64
        ...     def __post_init__(self) -> None:
        ...         check_values(self, width=SIZE)
        >>> Net(width=10**9)
        Traceback (most recent call last):
        ...
        hepflow.config.ValueOutOfBounds: Net.width: expected an integer in [1, 16384], got 1000000000
    """
    for key, bound in bounds.items():
        value = getattr(obj, key)
        if value is not None and not bound.test(value):
            raise ValueOutOfBounds(type(obj).__name__, key, f"expected {bound.expected}, got {value!r}")


#: analysis name -> the package that ships its ``config.toml`` (package data)
ANALYSES = {"neutrino": "hepflow.neutrino", "cosmic": "hepflow.cosmic", "unfolding": "hepflow.unfolding"}


def shipped_config(analysis: str, name: str = "config.toml") -> Path:
    """The config file an analysis ships as package data (what ``config=None`` means everywhere).

    ``hepflow config show ANALYSIS`` prints it; copy it, edit it and pass it with ``--config``.

    Example:
        >>> shipped_config("cosmic").name
        'config.toml'
        >>> shipped_config("cosmic", "config_stick_breaking.toml").is_file()
        True
        >>> shipped_config("muons")
        Traceback (most recent call last):
        ...
        hepflow.errors.ConfigError: unknown analysis 'muons'; choose one of cosmic, neutrino, unfolding
    """
    from importlib.resources import files

    if analysis not in ANALYSES:
        raise ConfigError(f"unknown analysis {analysis!r}; choose one of {', '.join(sorted(ANALYSES))}")
    if Path(name).name != name or not name.endswith(".toml"):
        raise ConfigError(f"{name!r} is not the name of a shipped config file (NAME.toml)")
    path = Path(str(files(ANALYSES[analysis]).joinpath(name)))
    if not path.is_file():
        raise ConfigError(f"hepflow's {analysis} analysis ships no {name} (looked for {path})")
    return path


def read_toml(path: str | os.PathLike[str], *, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    r"""Read a TOML file; errors name the file and the line.

    A top-level ``extends = "other.toml"`` (relative to the file) reads that file first and
    lays this one over it, table by table: a variant of an analysis config states only what
    differs, e.g. ``extends = "config.toml"`` and ``[flow] simplex = "stick_breaking"``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "base.toml").write_text("[flow]\ndepth = 6\nwidth = 128\n")
        >>> _ = (d / "variant.toml").write_text('extends = "base.toml"\n[flow]\nwidth = 64\n')
        >>> read_toml(d / "variant.toml")
        {'flow': {'depth': 6, 'width': 64}}
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError(f"config file {p} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {p} is not valid TOML: {err}") from err
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"config file {p}: 'extends' must be a file name, got {base!r}")
    here = p.resolve()
    target = (here.parent / base).resolve()
    if target in (*_seen, here):
        raise ConfigError(f"config file {p}: 'extends' makes a cycle through {target}")
    if not target.is_file():  # e.g. extends = "config.toml" meant the shipped config
        raise ConfigError(
            f"config file {p}: extends = {base!r} names {target}, which does not exist (it is read "
            "relative to this file); to extend a config shipped with hepflow, give its path: "
            "`hepflow config show ANALYSIS --path`"
        )
    return _overlay(read_toml(target, _seen=(*_seen, here)), data)


def _overlay(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``top`` replacing its own; tables are merged key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _overlay(dict(out[key]), value)
        else:
            out[key] = value
    return out


class AnalysisConfig:
    """Base of the dataclass that holds a whole analysis config (every table of its TOML).

    Subclasses name the analysis whose shipped file ``None`` means (``shipped``); they are frozen
    dataclasses read strictly by :func:`from_dict`.

    Example:
        >>> from dataclasses import dataclass, field
        >>> @dataclass(frozen=True)
        ... class Generation:
        ...     n: int = 10
        >>> @dataclass(frozen=True)
        ... class Cosmic(AnalysisConfig):
        ...     shipped = "cosmic"
        ...     generation: Generation = field(default_factory=Generation)
        >>> Cosmic.load(Cosmic()).generation.n  # an instance is used as it is
        10
        >>> Cosmic.load()  # None: the shipped hepflow/cosmic/config.toml, read strictly
        Traceback (most recent call last):
        ...
        hepflow.errors.ConfigError: .../config.toml: unknown key 'check' for Cosmic; known keys: ...
    """

    #: the analysis whose shipped ``config.toml`` ``None`` stands for (see :func:`shipped_config`)
    shipped: typing.ClassVar[str]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None) -> Any:
        """Read a TOML file (None: the shipped one); unknown tables and keys are refused, naming the file."""
        p = shipped_config(cls.shipped) if path is None else Path(path)
        return from_dict(cls, read_toml(p), where=str(p))

    @classmethod
    def load(cls, config: Any = None) -> Any:
        """``config`` itself if it is one, else :meth:`from_file` of it (a path, or None)."""
        return config if isinstance(config, cls) else cls.from_file(config)


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types.

    Nested dataclass fields are built recursively from nested tables; ints are accepted for
    float fields; lists for tuple fields.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} for {cls.__name__}; known keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    # the tables of an analysis config are TOML tables: "x.toml [training].lr"
    table = isinstance(cls, type) and issubclass(cls, AnalysisConfig)
    kwargs = {
        name: _coerce(value, hints[name], f"{where} [{name}]" if table else f"{where}.{name}")
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except ValueOutOfBounds as err:
        raise ConfigError(f"{where}.{err.key}: {err.detail}") from err
    except (TypeError, ValueError, ConfigError) as err:
        raise ConfigError(f"{where}: {err}") from err


def load(cls: type[T], path: str | os.PathLike[str], *, section: str | None = None) -> T:
    """Load dataclass ``cls`` from a TOML file, optionally from one ``[section]``."""
    data = read_toml(path)
    where = str(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{path}: missing section [{section}]")
        data, where = data[section], f"{path} [{section}]"
    return from_dict(cls, data, where=where)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON/TOML-friendly dict (tuples become lists)."""
    return _plain(dataclasses.asdict(obj))


def json_plain(obj: Any) -> Any:
    """A JSON round trip: tuples become lists, and ints and floats compare by value.

    Example:
        >>> json_plain({"range": (1, 2.0)}) == {"range": [1.0, 2]}
        True
    """
    import json

    return json.loads(json.dumps(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where=where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    return value
