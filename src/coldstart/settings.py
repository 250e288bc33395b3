"""Type checks for settings written as JSON values (`--set`, config files, config.json) before any work starts.

The expected types come from where the settings go, so there is one source of truth:

- model hyperparameters: the annotations of the model's frozen `Config` dataclass (`Recommender.__init__`);
- split parameters: the signature of the protocol function in `data/splits.py` (`check_split`);
- dataset options: the signature of the dataset's loader (`check_data`).

Rules: an `int` must be an integer (not a bool, not 2.5 or 2.0); a `float` accepts integers but not bools or
non-finite values; `X | None` also accepts null; `tuple[float, float, float]` needs a list of exactly three
numbers, `tuple[str, ...]` / `list[str]` a list of any length; `Literal[...]` is a choice. Range and choice checks
that a Config's `__post_init__` already does stay there.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable

from coldstart.errors import DataError

_NAMES = {type(None): ("null", "nulls"), bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings"), Path: ("a path", "paths"),
          dict: ("an object", "objects")}


def _describe(hint: Any, plural: bool = False) -> str:
    """A few words naming what `hint` accepts, for the error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(a, plural) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (tuple, list) or hint in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = list(dict.fromkeys(args))
            inner = _describe(kinds[0], True) if len(kinds) == 1 else "(" + ", ".join(map(_describe, args)) + ")"
            return f"a list of {len(args)} {inner}"
        return f"a list of {_describe(args[0], True)}" if args else "a list"
    if hint in _NAMES:
        return _NAMES[hint][plural]
    return getattr(hint, "__name__", str(hint))


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON-like value fits the type annotation `hint` (see the module docstring for the rules)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and args[-1] is not Ellipsis:  # fixed length: tuple[float, float, float]
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return all(conforms(v, args[0]) for v in value)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(float(value)))
    if hint is Path or hint is os.PathLike:
        return isinstance(value, (str, os.PathLike))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def expected_types(target: type | Callable, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """name -> type annotation of a dataclass's fields or of a function's keyword parameters.

    Args:
        target: a dataclass type (its fields) or a function (its parameters, `*args` / `**kwargs` excluded).
        skip: names left out (e.g. the dataset and seed a protocol function also takes).
    """
    hints = typing.get_type_hints(target)  # resolves `from __future__ import annotations` strings
    if dataclasses.is_dataclass(target):
        names = [f.name for f in dataclasses.fields(target)]
    else:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = [p.name for p in inspect.signature(target).parameters.values() if p.kind in kinds]
    return {n: hints.get(n, Any) for n in names if n not in skip}


def check_values(values: Any, target: type | Callable, owner: str, prefix: str = "",
                 skip: tuple[str, ...] = (), path: str | Path | None = None) -> None:
    """Raise DataError for the first setting that is unknown to `target` or has the wrong type.

    Args:
        values: the settings, a dict name -> JSON value.
        target: a dataclass type or a function whose annotations give the expected types.
        owner: what the settings configure, for the message (e.g. "clcrec", "protocol cold_item").
        prefix: put before a name in the field of the error (e.g. "split." for protocol parameters).
        skip: names of `target` that are not settings.
        path: the file the values came from, if any (named in the error).

    Raises:
        DataError: one line naming the field, what it expects and what it got.
    """
    require_object(values, owner, prefix, path)
    expected = expected_types(target, skip)
    for name, value in values.items():
        if name not in expected:
            raise DataError(f"unknown setting for {owner} (allowed: {', '.join(sorted(expected)) or 'none'})",
                            path=path, field=f"{prefix}{name}")
        if not conforms(value, expected[name]):
            raise DataError(f"expected {_describe(expected[name])}, got {_show(value)}", path=path,
                            field=f"{prefix}{name}")


def require_object(values: Any, owner: str, prefix: str = "", path: str | Path | None = None) -> None:
    """DataError unless `values` is a dict (a JSON object / TOML table) of settings."""
    if not isinstance(values, dict):
        raise DataError(f"expected an object of settings for {owner}, got {_show(values)}", path=path,
                        field=prefix.rstrip(".") or None)


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def check_split(protocol: str, params: dict[str, Any], path: str | Path | None = None) -> None:
    """Check protocol parameters (`split.<name>`) against the protocol function's signature.

    Raises:
        DataError: unknown protocol, unknown parameter or wrong type.
    """
    from coldstart.data.splits import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r} (use {', '.join(PROTOCOLS)})", field="protocol")
    check_values(params, PROTOCOLS[protocol], f"protocol {protocol}", "split.", ("dataset", "seed"), path)


def loader_of(name: str) -> Callable:
    """The loader function `load_dataset(name)` will call (for a folder, `loaders.folder_loader`'s choice).

    Raises:
        DataError: neither a known dataset nor a folder.
    """
    from coldstart.data.loaders import LOADERS, folder_loader

    if name in LOADERS:
        return LOADERS[name][0]
    folder = Path(name)
    if not folder.is_dir():
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(sorted(LOADERS))}; or give a folder path)")
    return folder_loader(folder)


def check_data(dataset: str, options: dict[str, Any], path: str | Path | None = None) -> None:
    """Check dataset options (`data.<name>`) against the loader's signature (plus load_dataset's root, download).

    Raises:
        DataError: unknown dataset, unknown option or wrong type.
    """
    from coldstart.data.loaders import load_dataset

    require_object(options, f"dataset {dataset}", "data.", path)
    own = {k: v for k, v in options.items() if k in ("root", "download")}
    check_values(own, load_dataset, f"dataset {dataset}", "data.", ("name",), path)
    rest = {k: v for k, v in options.items() if k not in own}
    check_values(rest, loader_of(dataset), f"dataset {dataset}", "data.", ("root",), path)
