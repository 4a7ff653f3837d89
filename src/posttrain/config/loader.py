"""Reading a run configuration: YAML files plus ``section.key=value`` overrides, writing the resolved config.

Unknown sections and keys are one-line ``ConfigError``s naming the file and the dotted key, with the nearest
valid key suggested; values go through the typed coercion of ``config/fields.py``; ``RunConfig`` then runs the
cross-field checks (``config/validate.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Optional

import yaml

from ..errors import ConfigError
from ..io_utils import atomic_write_text
from .fields import bounds_text, build_dataclass
from .schema import RunConfig


_SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {name: hints[name] for name in _SECTIONS}


def _section_keys(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(_section_classes()[name])]


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _section_classes().items() for f in dataclasses.fields(cls)]


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    if not close:  # match on the last part only: "lr" vs "train.learning_rate" is hopeless, "train.lr_rate" is not
        tails = {k.split(".")[-1]: k for k in all_keys()}
        hit = difflib.get_close_matches(key.split(".")[-1], list(tails), n=1, cutoff=0.6)
        close = [tails[hit[0]]] if hit else []
    return f"; did you mean '{close[0]}'?" if close else ""


def _build(raw: dict, source: str) -> RunConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model, data, loss, adapter, train)")
    classes = _section_classes()
    sections = {}
    for name, body in raw.items():
        if name not in classes:
            raise ConfigError(f"{source}: unknown section '{name}'{_suggest(str(name))}")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: section '{name}' must be a mapping, got {type(body).__name__}")
        for key in body:
            if key not in _section_keys(name):
                raise ConfigError(f"{source}: unknown key '{name}.{key}'{_suggest(f'{name}.{key}')}")
        sections[name] = build_dataclass(classes[name], body, source, f"{name}.")
    try:
        return RunConfig(**sections)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _override_value(text: str):
    """The value of a ``key=value`` override: a YAML scalar, None when empty, the raw text when not YAML."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.max_steps=10", "loss.mode=all_tokens"]`` -> nested dict; values parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.key=value")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override '{item}': expected section.key=value{_suggest(key.strip())}")
        nested.setdefault(parts[0], {})[parts[1]] = _override_value(text)
    return nested


def set_dotted(raw: dict, overrides: list[str] | None, example: str) -> dict:
    """A copy of ``raw`` with each ``a.b.c=value`` override set at any depth (the configs of multi-run recipes,
    whose keys are not all ``section.key``); ``example`` completes the error for an item without ``=``."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key=value ({example})")
        node = raw
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': {part} is not a section")
        node[last] = _override_value(text)
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping naming the same key twice is an error: plain YAML keeps the last
    value silently, so a second ``learning_rate`` (or a second ``train:`` section) would override the first
    without a word."""


def _unique_mapping(loader, node, deep=False):
    first_line: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": keys given here may override merged ones
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            seen = first_line.get(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if seen is not None:
            raise _DuplicateKey(line, f"'{key}' is given twice (first at line {seen}); remove one of them")
        first_line[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


class _DuplicateKey(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(text: str, source: str):
    """``text`` parsed as YAML (None when empty), with one-line ConfigErrors naming ``source`` and the line: invalid
    YAML, or a key given twice in one mapping."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as err:
        raise ConfigError(f"{source}:{err.line}: {err}") from None
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f"{source}:{line + 1}" if line is not None else str(source)
        raise ConfigError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None


def read_yaml_file(path, kind: str = "config"):
    """The parsed YAML file ({} when empty), with one-line errors: a missing file, invalid YAML (with its line), a
    key given twice."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {kind} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    return parse_yaml(text, str(path)) or {}


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, body in extra.items():
        if isinstance(out.get(section), dict) and isinstance(body, dict):
            out[section] = {**out[section], **body}
        else:
            out[section] = body
    return out


def load_config(path: Optional[str | Path], overrides: Optional[list[str]] = None) -> RunConfig:
    """Load a YAML config (or the defaults when path is None) and apply ``key=value`` overrides."""
    raw: dict = {}
    source = "overrides"
    if path is not None:
        source = str(path)
        raw = read_yaml_file(path)
    cfg = _build(raw, source)
    return apply_overrides(cfg, overrides) if overrides else cfg


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``cfg`` with ``section.key=value`` overrides applied and checked, as ``load_config`` applies them."""
    return _build(_merge(to_dict(cfg), parse_overrides(overrides)), "overrides")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def write_config(cfg: RunConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe() -> str:
    """Every key with its default and help text (for ``--help-config``)."""
    lines = []
    for section, cls in _section_classes().items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            bounds = f.metadata.get("bounds")
            shown = f"  (must be {bounds_text(bounds)})" if bounds else ""
            lines.append(f"  {f.name} = {default!r}{shown}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)
