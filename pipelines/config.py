"""Experiment configuration: a YAML/JSON file with a schema.

The schema is the dataclasses below. Loading checks every key and value
before any stage runs: unknown keys, wrong types and bad values fail with the
full dotted path of the offending key. Command-line overrides use the same
dotted paths: `--set pretrain.learning_rate=1e-4`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any

import yaml

from pipelines.preprocess.inputs import InputSpec as _InputSpec

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class InputSpec(_InputSpec):
    """`pipelines.preprocess.inputs.InputSpec` (its one home), as a config section:
    the same fields, with errors raised as ConfigError."""

    def validate(self, path: str = "input") -> "InputSpec":
        _check(self.format != "memory", path + ".format", "memory inputs are for Python callers, not configs")
        try:
            return super().validate(path)
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclasses.dataclass
class CorpusSpec:
    input: InputSpec = dataclasses.field(default_factory=InputSpec)
    text_field: str = "text"

    def validate(self, path: str) -> None:
        self.input.validate(path + ".input")


@dataclasses.dataclass
class TaskSpec:
    name: str = ""
    family: str = "classification"
    input: InputSpec = dataclasses.field(default_factory=InputSpec)
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # family field -> column(s)
    label_field: str = "label"
    label_names: list[str] = dataclasses.field(default_factory=list)  # empty: derived from the data
    num_choices: int = 0
    val_fraction: float = 0.1   # for model selection, by a stable hash
    test_fraction: float = 0.1  # held out for `evaluate`, by a stable hash

    def validate(self, path: str) -> None:
        from gpt_keras.tasks import TaskFamily  # light import: no TF graph work
        _check(bool(self.name) and self.name.replace("_", "").isalnum(), path + ".name",
               f"must be a non-empty identifier, got {self.name!r}")
        try:
            family = TaskFamily.parse(self.family)
        except ValueError as e:
            raise ConfigError(f"{path}.family: {e}") from None
        missing = [f for f in family.fields if f not in self.fields]
        _check(not missing, path + ".fields", f"{family.value} needs a column for {missing}")
        _check(family is not TaskFamily.MULTIPLE_CHOICE or self.num_choices >= 2, path + ".num_choices",
               "multiple_choice needs num_choices >= 2")
        _check(0.0 < self.val_fraction and 0.0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1.0,
               path, "need val_fraction > 0, test_fraction >= 0 and val_fraction + test_fraction < 1")
        self.input.validate(path + ".input")


@dataclasses.dataclass
class PreprocessSpec:
    vocab_dir: str = ""          # reuse a vocabulary; empty: learn one from the corpus
    num_merges: int = 8000
    tokenizer_mode: str = "hf"
    n_ctx: int = 128
    val_fraction: float = 0.05
    max_bad_fraction: float = 0.01
    corpus: CorpusSpec = dataclasses.field(default_factory=CorpusSpec)
    tasks: list[TaskSpec] = dataclasses.field(default_factory=list)

    def validate(self, path: str) -> None:
        _check(self.num_merges > 0, path + ".num_merges", "must be > 0")
        _check(self.tokenizer_mode in ("hf", "original"), path + ".tokenizer_mode", "must be hf or original")
        _check(self.n_ctx >= 8, path + ".n_ctx", "must be >= 8")
        _check(0.0 < self.val_fraction < 1.0, path + ".val_fraction", "must be in (0, 1)")
        _check(0.0 <= self.max_bad_fraction <= 1.0, path + ".max_bad_fraction", "must be in [0, 1]")
        self.corpus.validate(path + ".corpus")
        names = [t.name for t in self.tasks]
        _check(len(names) == len(set(names)), path + ".tasks", f"task names must be unique, got {names}")
        for i, task in enumerate(self.tasks):
            task.validate(f"{path}.tasks[{i}]")


@dataclasses.dataclass
class ModelSpec:
    preset: str = "demo"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self, path: str) -> None:
        from gpt_keras.config import GPTConfig
        try:
            GPTConfig.from_preset(self.preset, **self.overrides)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from None


@dataclasses.dataclass
class OptimSpec:
    batch_size: int = 32
    learning_rate: float = 2.5e-4
    schedule: str = "warmup_cosine"
    warmup: float = 2000        # steps (warmup_cosine) or fraction of steps (warmup_linear)
    epochs: float = 1.0         # passes over the training data
    max_steps: int = 0          # cap on optimizer steps (0: none)
    steps_per_checkpoint: int = 200
    validation_batches: int = 0  # batches of the validation split per evaluation (0: all of it)
    l2: float = 0.01
    max_grad_norm: float = 1.0
    jit_compile: bool = True

    def validate(self, path: str) -> None:
        _check(self.batch_size > 0, path + ".batch_size", "must be > 0")
        _check(self.learning_rate > 0, path + ".learning_rate", "must be > 0")
        _check(self.schedule in ("warmup_cosine", "warmup_linear", "constant"), path + ".schedule",
               f"must be warmup_cosine, warmup_linear or constant; got {self.schedule!r}")
        _check(self.warmup >= 0, path + ".warmup", "must be >= 0")
        _check(self.epochs > 0, path + ".epochs", "must be > 0")
        _check(self.max_steps >= 0 and self.steps_per_checkpoint > 0, path, "max_steps >= 0, steps_per_checkpoint > 0")
        _check(self.validation_batches >= 0, path + ".validation_batches", "must be >= 0 (0: the whole split)")


@dataclasses.dataclass
class FinetuneSpec(OptimSpec):
    learning_rate: float = 6.25e-5
    schedule: str = "warmup_linear"
    warmup: float = 0.002
    epochs: float = 3.0
    lm_weight: float = 0.5
    ablation_without_pretraining: bool = True  # also train from scratch (the paper's ablation)
    early_stopping_patience: int = 0           # evaluations without improvement (0: off)
    # Task batches vary in length; without XLA each batch is padded only to its
    # longest row instead of recompiling or padding everything to n_ctx.
    jit_compile: bool = False

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.lm_weight >= 0, path + ".lm_weight", "must be >= 0")


@dataclasses.dataclass
class ExportSpec:
    base_dir: str = ""          # default: <work_dir>/serving
    model_name: str = ""        # default: the first task's name


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "demo"
    work_dir: str = "runs/demo"
    seed: int = 0
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    preprocess: PreprocessSpec = dataclasses.field(default_factory=PreprocessSpec)
    pretrain: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    finetune: FinetuneSpec = dataclasses.field(default_factory=FinetuneSpec)
    export: ExportSpec = dataclasses.field(default_factory=ExportSpec)

    def validate(self) -> "ExperimentConfig":
        self.model.validate("model")
        self.preprocess.validate("preprocess")
        self.pretrain.validate("pretrain")
        self.finetune.validate("finetune")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: {message}")


def _build(cls, values: Any, path: str):
    """Construct dataclass `cls` from plain values, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key(s) {[where + k for k in unknown]}; valid keys here: {sorted(known)}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k) for k, v in values.items()}
    return cls(**kwargs)


def _coerce(hint, value: Any, path: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
    return value


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
            node = node[int(part)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:i + 1])} is not a section")
    last = parts[-1]
    value = yaml.safe_load(raw)
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_config(name_or_path: str, overrides: list[str] = ()) -> ExperimentConfig:
    """Load, override and validate an experiment config."""
    path = resolve_config_path(name_or_path)
    with open(path) as f:
        try:
            values = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid YAML/JSON: {e}") from None
    values = values or {}
    for assignment in overrides:
        apply_override(values, assignment)
    try:
        return _build(ExperimentConfig, values, "").validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
