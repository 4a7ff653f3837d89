"""Typed config fields: help text, the one dataclass-from-mapping builder, typed coercion, "did you mean".

Every posttrain config dataclass (the run sections, task declarations, the grid, PCP and self-training files)
declares its fields with ``help_field`` and is built from YAML through ``build_dataclass``, so an unknown key, a
missing required key or a value of the wrong type is one ``ConfigError`` line naming the file and the key, with
the nearest valid key suggested.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, Callable, Literal

from ..errors import ConfigError, did_you_mean


def help_field(default, help_text: str, bounds: str | None = None, **kw):
    """A dataclass field with help text (``posttrain config`` prints it) and, for numbers, the interval its values
    must lie in (``bounds="[0, 1)"``, ``"(0, inf)"``, ``"[1, inf)"``; ``check_bounds`` enforces it). List/dict
    defaults are copied per instance. Every posttrain config dataclass declares its fields with it."""
    metadata = {"help": help_text}
    if bounds is not None:
        metadata["bounds"] = parse_bounds(bounds)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


_BOUNDS = re.compile(r"^([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])$")


def parse_bounds(text: str) -> tuple:
    """"[0, 1)" -> (0.0, 1.0, True, False): low, high, whether each end is included."""
    match = _BOUNDS.match(text.strip())
    if not match:
        raise ValueError(f"bounds {text!r}: expected an interval such as [0, 1) or (0, inf)")
    opening, low, high, closing = match.groups()
    return float(low), float(high), opening == "[", closing == "]"


def bounds_text(bounds: tuple) -> str:
    """The condition a value breaks, as an error says it: ">= 1", "> 0", "in [0, 1)"."""
    low, high, low_in, high_in = bounds
    number = lambda x: format(int(x) if float(x).is_integer() else x, "")  # noqa: E731
    if math.isinf(high):
        return f"{'>=' if low_in else '>'} {number(low)}"
    if math.isinf(low):
        return f"{'<=' if high_in else '<'} {number(high)}"
    return f"in {'[' if low_in else '('}{number(low)}, {number(high)}{']' if high_in else ')'}"


def in_bounds(value, bounds: tuple) -> bool:
    low, high, low_in, high_in = bounds
    if isinstance(value, float) and math.isnan(value):
        return False
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return above and below


def check_bounds(obj, prefix: str = "") -> None:
    """A one-line ConfigError for the first field of dataclass ``obj`` whose value lies outside its declared
    ``bounds`` (None passes: an optional field left unset)."""
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("bounds")
        value = getattr(obj, f.name)
        if bounds is None or value is None or isinstance(value, bool):
            continue
        if not in_bounds(value, bounds):
            raise ConfigError(f"{prefix}{f.name}: must be {bounds_text(bounds)}, got {value!r}")


def coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        # 1 == True in Python: an integer is not one of a choice's booleans (train.packing: auto, true, false)
        int_for_bool = type(value) is int and any(isinstance(a, bool) for a in args)
        if value not in args or int_for_bool:
            hint = did_you_mean(value, args, cutoff=0.6)
            if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans
                hint = " (YAML reads no, off, yes and on as true/false: quote the word)"
            choices = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)  # YAML's words
            raise ConfigError(f"{key}: expected one of {choices}, got {value!r}{hint}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is list or origin is list:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return value
    if (tp is dict or origin is dict) and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _default_error(source: str, prefix: str, err: ConfigError) -> ConfigError:
    text = str(err)
    return ConfigError(f"{source}: {'' if text.startswith(prefix) else prefix}{text}")


def build_dataclass(cls, raw, source: str, prefix: str = "", *, typed: bool = True,
                    on_error: Callable[[str, str, ConfigError], ConfigError] = _default_error):
    """A (possibly nested) config dataclass from a mapping: unknown key (with the nearest one suggested), missing
    required key, and (``typed``) a value of the wrong type are one-line ConfigErrors naming ``source: prefix.key``.
    Errors raised by the dataclass's own checks (``__post_init__``) are re-worded by ``on_error``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'{did_you_mean(key, names, shown=prefix)}")
        if typed and dataclasses.is_dataclass(hints[key]):
            values[key] = build_dataclass(hints[key], value or {}, source, f"{prefix}{key}.")
        else:
            values[key] = coerce(value, hints[key], f"{source}: {prefix}{key}") if typed else value
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{source}: missing key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(prefix + name for name in missing)}")
    try:
        return cls(**values)
    except ConfigError as err:
        raise on_error(source, prefix, err) from None
