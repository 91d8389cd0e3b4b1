"""The generic configuration loader: frozen dataclasses from YAML.

Each stage's options dataclass lives next to the code it configures (``FeatureConfig`` in
``features``, ``ModelConfig`` in ``model``, ...; ``RecipeConfig`` in ``recipe`` composes them).
This module only turns plain data into those dataclasses: unknown keys, wrong types, values
outside a ``Literal[...]`` and impossible values raise :class:`ConfigError` naming the key, so a
typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import AsrError


class ConfigError(AsrError):
    """A configuration value is unknown, of the wrong type or out of range."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 also reads on/off/yes/no as booleans, which
    turns ``--set train.amp=off`` into False.)"""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


MAX_YAML_ALIASES = 64          # a config needs few; a "billion laughs" file needs many
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlevel = 60, 60, 3


def _show(value: Any) -> str:
    """A bounded repr for error messages (a huge or deeply nested value stays one short line)."""
    return _SHOW.repr(value)


def _yaml(text: str, where: str) -> Any:
    """Parse YAML 1.2-style, refusing alias bombs before anything is expanded."""
    aliases = sum(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, Loader=_Loader))
    if aliases > MAX_YAML_ALIASES:
        raise ConfigError(f"{where}: {aliases} YAML aliases (at most {MAX_YAML_ALIASES}); refusing to expand them")
    return yaml.load(text, Loader=_Loader)


def require(ok: bool, key: str, rule: str) -> None:
    """Raise :class:`ConfigError` ``key: rule`` unless ``ok`` (used by the configs' ``check``)."""
    if not ok:
        raise ConfigError(f"{key}: {rule}")


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain JSON/YAML-able values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {_show(value)} not allowed; allowed: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_show(value)}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {_show(value)}")


def load_yaml(cls: type, path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read a YAML file into dataclass ``cls``; ``overrides`` maps dotted keys (``train.epochs``)
    to values. Every problem is a :class:`ConfigError` naming the file and the key."""
    path = Path(path)
    try:
        data = _yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except (OSError, yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{path}: cannot read config: {_show(str(e))}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: override {dotted!r}: {key!r} is not a section")
        node[leaf] = value
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def digest(obj: Any) -> str:
    """Short stable hash of a config tree (dataclasses, dicts, lists, scalars)."""
    return hashlib.sha256(json.dumps(to_dict(obj), sort_keys=True).encode()).hexdigest()[:12]


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` with the value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override {_show(text)}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), _yaml(raw, f"override {key.strip()!r}")
    except yaml.YAMLError as e:
        raise ConfigError(f"override {_show(text)}: not a YAML value ({e})") from None


def file_digests(section: Any) -> dict[str, str]:
    """SHA-256 of the files a section names as inputs (its ``input_files()``), so editing a
    grammar in place reruns what was made from it. A missing file is recorded as missing: finished
    stages then stop with their "different config" error instead of silently going on."""
    files = section.input_files() if hasattr(section, "input_files") else ()
    return {str(f): hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).is_file() else "missing"
            for f in files}
