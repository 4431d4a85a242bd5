"""Loading a config: a shipped name or a file, `extends`, and `--set` overrides."""
from __future__ import annotations

import json
import os
from typing import Any

import yaml

from pipelines.config.experiment import ExperimentConfig
from pipelines.config.validation import ConfigError, build_section

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _extended(values: Any, path: str, seen: tuple = ()) -> Any:
    """`extends: demo` at the top of a config: the named config's values, with
    this file's sections merged over them key by key."""
    if not isinstance(values, dict) or "extends" not in values:
        return values
    base_path = resolve_config_path(values.pop("extends"))
    if base_path in seen + (path,):
        raise ConfigError(f"{path}: 'extends' makes a cycle through {base_path}")
    with open(base_path) as f:
        base = _extended(yaml.safe_load(f) or {}, base_path, seen + (path,))
    return _merged(base, values)


def _merged(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in over.items()}}
    return over


def resolve_config_path(name_or_path: str) -> str:
    """A shipped config name (`demo`, `gpt1`) or a file path."""
    if os.path.exists(name_or_path):
        return name_or_path
    for ext in (".yaml", ".yml", ".json"):
        candidate = os.path.join(CONFIG_DIR, name_or_path + ext)
        if os.path.exists(candidate):
            return candidate
    shipped = sorted(os.path.splitext(f)[0] for f in os.listdir(CONFIG_DIR))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor a shipped config {shipped}")


def apply_override(values: dict, assignment: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to nested plain values."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like key.path=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = values
    for i, part in enumerate(parts[:-1]):
        if part.isdigit() and isinstance(node, list):
            _check_index(node, int(part), key, append=False)
            node = node[int(part)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i + 1])} is not a section")
    last = parts[-1]
    value = yaml.safe_load(raw)
    if isinstance(node, list):
        if _check_index(node, int(last), key, append=True):
            node.append(value)
        else:
            node[int(last)] = value
    else:
        node[last] = value


def _check_index(items: list, index: int, key: str, append: bool) -> bool:
    """True when `index` appends (allowed for the last part of a key only)."""
    if index < len(items) or (append and index == len(items)):
        return index == len(items)
    raise ConfigError(f"override {key!r}: index {index} is out of range for a list of {len(items)} item(s)"
                      + (f"; use {len(items)} to append" if append else ""))


def load_config(name_or_path: str, overrides: list[str] = ()) -> ExperimentConfig:
    """Load, override and validate an experiment config."""
    path = resolve_config_path(name_or_path)
    with open(path) as f:
        try:
            values = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    values = _extended(values or {}, path)
    for assignment in overrides:
        apply_override(values, assignment)
    try:
        return build_section(ExperimentConfig, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
