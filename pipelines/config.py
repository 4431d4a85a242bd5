"""Experiment configuration: a YAML/JSON file with a schema.

The schema is the pydantic models below. Loading checks every key and value
before any stage runs: unknown keys, wrong types and bad values fail with the
full dotted path of the offending key (every bad section at once). Command-line
overrides use the same dotted paths: `--set pretrain.learning_rate=1e-4`.

A pure schema: it reads no checkpoint. What a config leaves to
`model.init_from` (sizes, tokenizer mode) or works out from the model (the
analysis variants) is resolved once by `pipelines.resolve`.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from pipelines.preprocess.inputs import InputSpec as _InputSpec

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


class _Problems:
    """Inside a validator: collects every bad value of the section, so that one
    error names them all (each at its key below the section)."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def check(self, ok: bool, key: str, message: str) -> bool:
        if not ok:
            self.found.append((key, message))
        return ok

    def raise_found(self) -> None:
        if self.found:
            raise PydanticCustomError("config", "{message}", {
                "problems": self.found, "message": "; ".join(f"{k}: {m}" for k, m in self.found)})


def _check(ok: bool, key: str, message: str) -> None:
    """Inside a validator: fail with `message` at `key` below the section."""
    problems = _Problems()
    problems.check(ok, key, message)
    problems.raise_found()


def _section(**kwargs: Any) -> Any:
    """A nested section's default: validated like a given one (`validate_default`),
    so that a missing section's required keys are reported at their full path
    along with every other problem, instead of failing alone and unplaced."""
    return Field(default={}, validate_default=True, **kwargs)


class Section(BaseModel):
    """A config section: an unknown key is an error (reported with the other
    problems of the file, with the closest valid key: see `_unknown_key`)."""
    model_config = ConfigDict(extra="forbid")


class InputSpec(_InputSpec):
    """`pipelines.preprocess.inputs.InputSpec` (its one home), as a config section:
    the same fields and checks, reported at their dotted key (runs inside a validator)."""

    def validate(self, path: str = "input") -> "InputSpec":
        problems = _Problems()
        problems.check(self.format != "memory", path + ".format", "memory inputs are for Python callers, not configs")
        for key, message in self.problems(path):
            problems.check(False, key, message)
        problems.raise_found()
        return self


class CorpusSpec(Section):
    """The pre-training corpus. `text_unit` says what one document of a plain-text
    input is: a "line", a "paragraph" (lines up to a blank line) or a whole
    "file" (a book: GPT-1 chose BooksCorpus for its long contiguous text). A
    document is tokenized as one stream, so its windows hold its sentences in
    order, and the train/validation split is drawn per document. Lines longer
    than `max_line_bytes` and documents longer than `max_document_bytes` are
    rejected into the dead letter."""
    input: InputSpec = _section()
    text_field: str = "text"
    text_unit: Literal["line", "paragraph", "file"] = "line"
    max_line_bytes: int = Field(8 << 20, ge=1)
    max_document_bytes: int = Field(64 << 20, ge=1)

    @model_validator(mode="after")
    def _values(self) -> "CorpusSpec":
        self.input.validate("input")
        return self


class TaskSpec(Section):
    """A labeled task. Its splits come from the first of these that it has:
    * `splits`: an input per split (train, validation, test): separate files,
      or a TFDS dataset's splits under these names;
    * `split_field`: a column holding each row's split (train, validation or
      test; dev, val, valid and eval mean validation, in any case);
    * a TFDS `input`'s own split names (the dataset's splits, or `tfds_splits`);
    * else a stable hash of the row's text, by `val_fraction` and `test_fraction`.
    Given splits are used exactly, row for row. When the given splits have no
    validation split (files, TFDS), `val_fraction` of the train rows move to
    validation by the same stable hash, since fine-tuning selects on it; a test
    split is never carved out of given ones (without one, `evaluate` reports
    the validation split and says so). A split column must give validation rows."""
    name: str = ""
    family: str = "classification"
    input: InputSpec = Field(default_factory=InputSpec)
    splits: dict[Literal["train", "validation", "test"], InputSpec] = {}
    split_field: str = ""
    fields: dict[str, Any] = {}  # family field -> column(s)
    label_field: str = "label"
    label_names: list[str] = []  # empty: derived from the data
    num_choices: int = 0
    val_fraction: float = 0.1   # for model selection, by a stable hash
    test_fraction: float = 0.1  # held out for `evaluate`, by a stable hash (not with given splits)

    @model_validator(mode="after")
    def _values(self) -> "TaskSpec":
        from gpt_keras.tasks import TaskFamily
        problems = _Problems()
        problems.check(bool(self.name) and self.name.replace("_", "").isalnum(), "name",
                       f"must be a non-empty identifier, got {self.name!r}")
        try:
            family = TaskFamily.parse(self.family)
        except ValueError as e:
            family = problems.check(False, "family", str(e)) or None
        missing = [f for f in family.fields if f not in self.fields] if family else []
        problems.check(not missing, "fields", f"{family and family.value} needs a column for {missing}")
        problems.check(family is not TaskFamily.MULTIPLE_CHOICE or self.num_choices >= 2, "num_choices",
                       "multiple_choice needs num_choices >= 2")
        problems.check(0.0 < self.val_fraction and 0.0 <= self.test_fraction
                       and self.val_fraction + self.test_fraction < 1.0,
                       "", "need val_fraction > 0, test_fraction >= 0 and val_fraction + test_fraction < 1")
        if self.splits:
            problems.check("input" not in self.model_fields_set, "input",
                           "give either input (one input, split by a hash or a column) or splits (an input per "
                           "split), not both")
            problems.check("train" in self.splits, "splits", f"needs a train input; got {sorted(self.splits)}")
            problems.check(not self.split_field, "split_field", "is for one input with a split column; with "
                           "splits, each input's rows belong to its split")
        problems.check(not self.splits_given or self.test_fraction == 0 or "test_fraction" not in self.model_fields_set,
                       "test_fraction",
                       "is for hash splitting, but this task's splits are given (splits, split_field or a TFDS "
                       "input): its test split is the given one; remove test_fraction")
        inputs = {f"splits.{k}": v for k, v in self.splits.items()} if self.splits else {"input": self.input}
        for key, spec in inputs.items():
            try:
                spec.validate(key)
            except PydanticCustomError as e:
                problems.found.extend(e.context["problems"])
        problems.raise_found()
        return self

    @property
    def splits_given(self) -> bool:
        """Whether the data names its splits (else they are drawn by a hash)."""
        return bool(self.splits or self.split_field or self.input.format == "tfds")


DEFAULT_NUM_MERGES = 8000
DEFAULT_TOKENIZER_MODE = "hf"
DEFAULT_PRESET = "demo"


class PreprocessSpec(Section):
    """`num_merges` and `tokenizer_mode` are optional so that "asks for" differs
    from "left alone": unset, they come from `model.init_from`'s checkpoint when
    there is one (its vocabulary and text handling win), else from the defaults
    above; set, they must agree with the checkpoint."""
    vocab_dir: str = ""          # reuse a vocabulary; empty: learn one from the corpus (or take init_from's)
    num_merges: int | None = Field(None, gt=0)               # unset: DEFAULT_NUM_MERGES
    tokenizer_mode: Literal["hf", "original"] | None = None  # unset: the checkpoint's, else DEFAULT_TOKENIZER_MODE
    n_ctx: int = Field(128, ge=8)
    val_fraction: float = Field(0.05, gt=0, lt=1)
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    # TFRecord shards per split (0: the runner decides; DirectRunner writes one).
    # Several shards make pre-training's shuffle global: tf.data shuffles the
    # files, interleaves them, then shuffles within a buffer of records.
    num_shards: int = Field(0, ge=0)
    corpus: CorpusSpec = _section()
    tasks: list[TaskSpec] = []

    @model_validator(mode="after")
    def _values(self) -> "PreprocessSpec":
        names = [t.name for t in self.tasks]
        _check(len(names) == len(set(names)), "tasks", f"task names must be unique, got {names}")
        return self


class ModelSpec(Section):
    """A gpt_keras preset plus field overrides, or a checkpoint to start from.

    The vocabulary size comes from the tokenizer: the preset's is a default;
    an override must agree. `init_from`: a directory in the original OpenAI
    release layout, the HF `openai-gpt` layout or the gpt_keras model format
    (detected); its sizes, vocabulary and tokenizer mode win, and a `preset`,
    `overrides` or preprocess key that disagrees is an error. `n_head` is for
    the original layout, which carries no config (default: GPT-1's 64-wide
    heads, n_embd // 64)."""
    preset: str | None = None   # unset: DEFAULT_PRESET, or the checkpoint's sizes with init_from
    overrides: dict[str, Any] = {}
    init_from: str = ""
    n_head: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _values(self) -> "ModelSpec":
        self.gpt_config()
        return self

    def gpt_config(self, **fields: Any):
        """The preset with the overrides (and `fields`) applied."""
        from gpt_keras.config import GPTConfig
        try:
            return GPTConfig.from_preset(self.preset or DEFAULT_PRESET, **{**self.overrides, **fields})
        except (ValueError, TypeError) as e:
            _check(False, "", str(e))


@functools.cache
def _finetune_recipe() -> dict[str, Any]:
    """The paper's fine-tuning recipe where gpt_keras defines it (its one home):
    `TrainSettings`' defaults and those of `gpt_keras.train.finetune`'s
    arguments (lm_weight, lora_rank). Read on first use, not at import, so that
    importing the schema (`run.py --help`) needs no TensorFlow."""
    import inspect  # pylint: disable=g-import-not-at-top
    from gpt_keras import train  # pylint: disable=g-import-not-at-top

    arguments = inspect.signature(train.finetune).parameters
    return {**dataclasses.asdict(train.TrainSettings()), **{k: arguments[k].default for k in ("lm_weight", "lora_rank")}}


def _recipe(key: str, **constraints: Any) -> Any:
    """A field whose default is the fine-tuning recipe's `key` (`_finetune_recipe`),
    validated like a given value (so TrainSettings' `epochs=3` is this schema's 3.0)."""
    return Field(default_factory=lambda: _finetune_recipe()[key], validate_default=True, **constraints)


Schedule = Literal["warmup_cosine", "warmup_linear", "constant"]


class OptimSpec(Section):
    """What pre-training and fine-tuning share. The defaults are pre-training's
    (the paper's section 4.1); weight decay, clipping and the dtype policy are
    the same for both: the fine-tuning recipe's (`_finetune_recipe`)."""
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(2.5e-4, gt=0)
    schedule: Schedule = "warmup_cosine"
    warmup: float = Field(2000, ge=0)  # steps (warmup_cosine) or fraction of steps (warmup_linear)
    epochs: float = Field(1.0, gt=0)   # passes over the training data
    max_steps: int = Field(0, ge=0)    # cap on optimizer steps (0: none)
    steps_per_checkpoint: int = Field(200, gt=0)
    validation_batches: int = Field(0, ge=0)  # batches of the validation split per evaluation (0: all of it)
    l2: float = _recipe("l2")
    max_grad_norm: float = _recipe("max_grad_norm")
    jit_compile: StrictBool | None = None  # None: XLA for float32 (and on GPUs), none for bf16 on CPUs
    # Variables stay float32; mixed policies compute in bf16/fp16; auto: bf16 where the
    # machine has it in hardware and the model is wide enough (gpt_keras.precision).
    dtype_policy: str = _recipe("dtype_policy")

    @model_validator(mode="after")
    def _dtype_policy(self) -> "OptimSpec":
        from gpt_keras.precision import CHOICES  # pylint: disable=g-import-not-at-top  (their one home)
        _check(self.dtype_policy in CHOICES, "dtype_policy",
               f"must be one of {', '.join(CHOICES)}; got {self.dtype_policy!r}")
        return self


class PretrainSpec(OptimSpec):
    # false: no pre-training stage; fine-tuning starts from model.init_from as it is
    # (true with init_from: continued pre-training on preprocess.corpus).
    enabled: StrictBool = True
    # Model directories kept at log-spaced steps (and step 0), for the paper's
    # Figure 2 (right): zero-shot performance against pre-training updates.
    snapshots: int = Field(0, ge=0)
    # Dropout (embd, attn, resid) while pre-training only; unset: the model's. Fine-tuning
    # uses the model's. Less than one pass over the corpus has nothing to overfit.
    dropout: float | None = Field(None, ge=0, lt=1)
    # A wall-clock budget: pre-training stops at the first step past it, so that a slow
    # machine runs fewer steps instead of longer, and the stage's metrics say how many.
    max_minutes: float | None = Field(None, gt=0)


class FinetuneSpec(OptimSpec):
    # A list is a grid: one model per value, and the one that does best on the
    # validation split is kept (each variant - pre-trained, scratch - picks its own).
    learning_rate: float | list[float] = _recipe("learning_rate")
    schedule: Schedule = _recipe("schedule")
    warmup: float = _recipe("warmup", ge=0)
    epochs: float = _recipe("epochs", gt=0)
    # Small tasks get more passes: epochs are raised until training takes at least this
    # many steps (whole passes; the best pass on the validation split is kept anyway).
    min_steps: int = Field(0, ge=0)
    lm_weight: float = _recipe("lm_weight", ge=0)
    # The paper's Figure 2 (left), the original's --n_transfer: the embeddings and the
    # first n blocks come from the pre-trained model, the rest start fresh (unset: all).
    n_transfer: int | None = Field(None, ge=0)
    ablation_without_pretraining: StrictBool = True  # also train from scratch (the paper's ablation)
    early_stopping_patience: int = 0                 # evaluations without improvement (0: off)
    # Task batches vary in length; without XLA each batch is padded only to its
    # longest row instead of recompiling or padding everything to n_ctx.
    jit_compile: StrictBool = _recipe("jit_compile")
    transfer: str = "full"                     # what learns: full | frozen | lora | layer_mix (gpt_keras.transfer)
    lora_rank: int = _recipe("lora_rank", gt=0)  # adapter rank with transfer: lora
    # Paired seeds (docs/seeds.md): every fine-tuned variant once per seed, each its own
    # stage (`finetune/<task>-seed<k>`); the seed drives head init, dropout and data order,
    # never the data split (the experiment `seed`). Empty: one run with the experiment `seed`.
    seeds: list[int] = []

    @model_validator(mode="after")
    def _values(self) -> "FinetuneSpec":
        from gpt_keras.transfer import MODES  # pylint: disable=g-import-not-at-top  (their one home)
        problems = _Problems()
        problems.check(self.transfer in MODES, "transfer", f"must be one of {', '.join(MODES)}; got {self.transfer!r}")
        rates = self.learning_rates
        problems.check(bool(rates) and all(r > 0 for r in rates), "learning_rate",
                       f"must be > 0, or a non-empty list of values > 0 (a grid); got {self.learning_rate!r}")
        repeated = sorted({k for k in self.seeds if self.seeds.count(k) > 1})
        negative = [k for k in self.seeds if k < 0]
        problems.check(not repeated and not negative, "seeds",
                       f"must be distinct integers >= 0 (each names a stage, finetune/<task>-seed<k>); got "
                       f"{self.seeds}: " + "; ".join(filter(None, (repeated and f"{repeated} repeated",
                                                                   negative and f"{negative} negative"))))
        problems.raise_found()
        return self

    @property
    def learning_rates(self) -> list[float]:
        """The learning rate(s) to try: one, or the grid."""
        return list(self.learning_rate) if isinstance(self.learning_rate, list) else [self.learning_rate]


class PromptSpec(Section):
    """How a classification-like task is asked of the LM zero/few-shot."""
    template: str = "{text} very"  # the paper's sentiment heuristic: append "very"
    # One word per label, in label order (empty: the label names); or per label a list of
    # candidate words, of which the combination best on the validation split is kept.
    label_words: list[str | list[str]] = []


class AnalysisSpec(Section):
    """Transfer without (full) fine-tuning, beside the fine-tuned models: the
    paper's section 5 (zero-shot) and cheaper fine-tuning modes. Off by default;
    `pipelines/configs/analysis.yaml` turns it on over a finished demo run."""
    transfer: list[str] = []                  # more modes fine-tuned from the pre-trained model, compared
    learning_rates: dict[str, float] = {}     # per mode (default finetune.learning_rate)
    zero_shot: StrictBool = False             # score each task with the LM alone
    few_shot: list[int | Literal["max"]] = []  # demonstrations per query; "max": as many as fit
    calibrate: StrictBool = True              # label offsets / thresholds fitted on the validation split
    prompts: dict[str, PromptSpec] = {}       # per task name
    # The paper's Table 5: also fine-tune without the auxiliary LM loss (lambda = 0);
    # the full model and the one without pre-training are the finetune stage's.
    table5: StrictBool = False
    # The paper's Figure 2: fine-tune with 0..n_layer-1 pre-trained blocks (left), and
    # score every pre-training snapshot zero-shot (right; needs pretrain.snapshots).
    figure2: StrictBool = False
    # Data efficiency (the paper's and ULMFiT's argument): fine-tune the pre-trained model
    # and its scratch twin on only this many labelled examples (a random subset per seed,
    # nested across sizes); evaluate draws test accuracy against examples, up to all of them.
    data_efficiency: list[int] = []
    data_efficiency_min_steps: int | None = Field(None, ge=1)  # their finetune.min_steps (unset: finetune's)

    @model_validator(mode="after")
    def _values(self) -> "AnalysisSpec":
        from gpt_keras.transfer import MODES  # pylint: disable=g-import-not-at-top
        bad = [m for m in self.transfer + list(self.learning_rates) if m not in MODES]
        _check(not bad, "transfer", f"unknown transfer mode(s) {bad}; modes are {', '.join(MODES)}")
        _check(all(k == "max" or k > 0 for k in self.few_shot), "few_shot", "must be positive integers or 'max'")
        _check(all(v > 0 for v in self.learning_rates.values()), "learning_rates", "must be > 0")
        _check(all(n > 0 for n in self.data_efficiency) and len(set(self.data_efficiency)) == len(self.data_efficiency),
               "data_efficiency", f"must be distinct numbers of examples > 0; got {self.data_efficiency}")
        candidates = [task for task, prompt in self.prompts.items() if any(isinstance(w, list) for w in prompt.label_words)]
        _check(self.calibrate or not candidates, "prompts",
               f"candidate label words ({', '.join(candidates)}) are chosen on the validation split: "
               "set analysis.calibrate: true, or give one word per label")
        return self


class ExportSpec(Section):
    base_dir: str = ""          # default: <work_dir>/serving
    model_name: str = ""        # default: the first task's name


class ExperimentConfig(Section):
    name: str = "demo"
    work_dir: str = "runs/demo"
    seed: int = 0
    model: ModelSpec = _section()
    preprocess: PreprocessSpec = _section()
    pretrain: PretrainSpec = _section()
    finetune: FinetuneSpec = _section()
    export: ExportSpec = _section()
    analysis: AnalysisSpec = _section()

    @model_validator(mode="after")
    def _sizes(self) -> "ExperimentConfig":
        problems = _Problems()
        if self.model.init_from:
            self._init_from_keys(problems)  # sizes are the checkpoint's: pipelines.init_from checks them
        else:
            self._preset_sizes(problems)
        tasks = [t.name for t in self.preprocess.tasks]
        problems.check(not self.export.model_name or self.export.model_name in tasks, "export.model_name",
                       f"{self.export.model_name!r} is not a task in preprocess.tasks {tasks}")
        unknown = sorted(set(self.analysis.prompts) - set(tasks))
        problems.check(not unknown, "analysis.prompts", f"{unknown} are not tasks in preprocess.tasks {tasks}")
        problems.raise_found()
        return self

    def _preset_sizes(self, problems: _Problems) -> None:
        if not problems.check(self.pretrain.enabled, "pretrain.enabled",
                              "false needs model.init_from (a checkpoint to fine-tune instead of pre-training); "
                              "set model.init_from=<dir> or pretrain.enabled=true"):
            return  # the sizes would be the checkpoint's: checking the preset's would only mislead
        config, want = self.model.gpt_config(), self.preprocess.n_ctx
        preset = f"model.preset={self.model.preset or DEFAULT_PRESET!r}"
        key = ("model.overrides.n_ctx={}" if "n_ctx" in self.model.overrides
               else f"{preset} has n_ctx={{}}").format(config.n_ctx)
        problems.check(config.n_ctx >= want, "", f"{key}, less than preprocess.n_ctx={want}: the model must fit "
                       f"the records; set model.overrides.n_ctx >= {want} or lower preprocess.n_ctx")
        problems.check(self.model.n_head is None, "model.n_head", "is for model.init_from in the original release "
                       "layout; set the heads with model.overrides.n_head")
        n = self.finetune.n_transfer
        problems.check(n is None or n <= config.n_layer, "finetune.n_transfer",
                       f"{n} is more than the model's {config.n_layer} blocks ({preset}); use 0..{config.n_layer} "
                       "or leave it unset (all)")

    def _init_from_keys(self, problems: _Problems) -> None:
        problems.check(self.preprocess.num_merges is None, "preprocess.num_merges",
                       "asks for a learned vocabulary, but the vocabulary comes from model.init_from; remove "
                       "preprocess.num_merges (or model.init_from to pre-train from scratch)")

    @property
    def num_merges(self) -> int:
        """BPE merges of a learned vocabulary (`preprocess.num_merges` or the default)."""
        return self.preprocess.num_merges or DEFAULT_NUM_MERGES

    @property
    def export_task(self) -> str:
        """The task whose fine-tuned model `export` serves ("" without tasks)."""
        return self.export.model_name or next((t.name for t in self.preprocess.tasks), "")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


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
