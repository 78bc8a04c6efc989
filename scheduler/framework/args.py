"""Typed plugin arguments: ``decode_args(ArgsDataclass, raw_mapping)`` validates and builds.

Unknown keys and wrong types raise ``ValueError`` naming the plugin argument, so a typo in a
profile fails at start-up instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["decode_args"]

T = TypeVar("T")

_SCALARS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


def _check(name: str, annotation: str, value: object) -> object:
    options = [a.strip() for a in annotation.split("|")]
    if value is None and "None" in options:
        return None
    for option in options:
        kinds = _SCALARS.get(option)
        if kinds is not None and isinstance(value, kinds) and not (option != "bool" and isinstance(value, bool)):
            return float(value) if option == "float" and isinstance(value, int | float) else value
        if option.startswith(("tuple[", "Mapping[", "dict[")) and isinstance(value, list | tuple | Mapping):
            if option.startswith(("Mapping[", "dict[")):
                return dict(value)
            return tuple(value)
    raise ValueError(f"argument {name!r}: {value!r} is not {annotation}")


def decode_args(kind: type[T], raw: Mapping[str, Any]) -> T:
    if not dataclasses.is_dataclass(kind):
        raise TypeError(f"{kind!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{kind.__name__}: unknown arguments {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(kind)
    values: dict[str, object] = {}
    for key, value in raw.items():
        annotation = fields[key].type if isinstance(fields[key].type, str) else str(hints[key])
        values[key] = _check(f"{kind.__name__}.{key}", str(annotation), value)
    return kind(**values)
