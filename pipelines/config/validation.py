"""How config sections validate, and how their errors read.

Every section is a `Section` (pydantic, unknown keys forbidden). Inside a
section's validator, `Problems` collects every bad value so that one error
names them all; `build_section` turns pydantic's errors into one
`ConfigError` whose messages name the full dotted key
(`pretrain.learning_rate: must be > 0`; an unknown key with the closest
valid one).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class Problems:
    """Inside a validator: collects every bad value of the section, so that one
    error names them all (each at its key below the section)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def check(self, ok: bool, key: str, message: str) -> bool:
        """Records `message` at `key` unless `ok`; returns `ok`."""
        if not ok:
            self.found.append((key, message))
        return ok

    def raise_found(self) -> None:
        """Fails with every recorded problem (`build_section` places each at its key)."""
        if self.found:
            raise PydanticCustomError("config", "{message}", {
                "problems": self.found, "message": "; ".join(f"{k}: {m}" for k, m in self.found)})


def check(ok: bool, key: str, message: str) -> None:
    """Inside a validator: fail with `message` at `key` below the section."""
    problems = Problems()
    problems.check(ok, key, message)
    problems.raise_found()


def subsection(**kwargs: Any) -> Any:
    """A nested section's default: validated like a given one (`validate_default`),
    so that a missing section's required keys are reported at their full path
    along with every other problem, instead of failing alone and unplaced."""
    return Field(default={}, validate_default=True, **kwargs)


class Section(BaseModel):
    """A config section: an unknown key is an error (reported with the other
    problems of the file, with the closest valid key: see `_unknown_key`)."""
    model_config = ConfigDict(extra="forbid")


# pydantic error types -> the words users see: "expected int, got 'abc'", "must be > 0"
_TYPES = {"int": "int", "float": "float", "bool": "bool", "string": "str", "list": "list", "dict": "mapping",
          "model": "mapping", "dataclass": "mapping"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _keys_at(cls: Any, loc: tuple) -> list[str]:
    """The valid keys of the section at `loc` (a pydantic error's location) below `cls`."""
    def unwrap(t: Any) -> Any:  # list[X], dict[K, X], X | None -> X
        while typing.get_origin(t) in (list, dict, typing.Union, types.UnionType):
            t = next(a for a in reversed(typing.get_args(t)) if a is not type(None))
        return t

    for part in loc:  # list indices and dict keys name no field: they only unwrap
        cls = unwrap(cls)
        if isinstance(cls, type) and issubclass(cls, BaseModel) and part in cls.model_fields:
            cls = cls.model_fields[part].annotation
    cls = unwrap(cls)
    if dataclasses.is_dataclass(cls):
        return sorted(f.name for f in dataclasses.fields(cls) if f.name != "rows")  # rows: Python callers only
    return sorted(getattr(cls, "model_fields", {}))


def _unknown_key(where: str, key: str, valid: list[str]) -> str:
    """`where.key: unknown key; did you mean 'where.closest'?` (else the valid keys)."""
    full = f"{where}.{key}".lstrip(".")
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"{full}: unknown key; did you mean {f'{where}.{close[0]}'.lstrip('.')!r}?"
    return f"{full}: unknown key; valid keys here: {', '.join(valid)}"


def _messages(err: dict, path: str, cls: type[BaseModel]) -> list[str]:
    """One pydantic error below `cls` -> the messages users see, each at its full dotted key."""
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    where = (path + where).lstrip(".")
    ctx, kind = err.get("ctx", {}), err["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # the latter from InputSpec, a dataclass
        parent, _, key = where.rpartition(".")
        return [_unknown_key(parent, key, _keys_at(cls, err["loc"][:-1]))]
    if kind == "config":
        found = ctx.get("problems") or [(ctx.get("key", ""), ctx["message"])]
        return [(f"{full}: {message}" if (full := ".".join(filter(None, (where, key)))) else message)
                for key, message in found]
    return [_message(err, where)]


def _message(err: dict, where: str) -> str:
    ctx, kind = err.get("ctx", {}), err["type"]
    if kind == "value_error":  # a ValueError from a validator, e.g. "key: message" from a plain dataclass
        return f"{where}: {ctx['error']}" if where else str(ctx["error"])
    if kind in _BOUNDS:
        return f"{where}: must be {_BOUNDS[kind]} {next(iter(ctx.values()))}"
    if kind == "literal_error":
        return f"{where}: must be {ctx['expected'].replace(chr(39), '')}; got {err['input']!r}"
    base = kind.rsplit("_", 1)[0]
    if base in _TYPES and kind.endswith(("_type", "_parsing")):
        return f"{where or 'config'}: expected {_TYPES[base]}, got {err['input']!r}"
    return f"{where or 'config'}: {err['msg']}"


def build_section(cls: type[BaseModel], values: Any, path: str = ""):
    """Validate plain values into config model `cls` (a section, or the whole
    experiment); every error names its dotted key below `path`."""
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        messages = list(dict.fromkeys(m for err in e.errors() for m in _messages(err, path, cls)))
        if len(messages) == 1:
            raise ConfigError(messages[0]) from None
        raise ConfigError(f"{len(messages)} problems:\n" + "\n".join(f"  - {m}" for m in messages)) from None
