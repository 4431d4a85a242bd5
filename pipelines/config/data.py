"""The preprocess section: the corpus to pre-train on and the labelled tasks,
each an input (`InputSpec`), and how they are tokenized and split."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from pipelines.config.validation import Problems, Section, check, subsection
from pipelines.preprocess.inputs import InputSpec as _InputSpec


class InputSpec(_InputSpec):
    """`pipelines.preprocess.inputs.InputSpec` (its one home), as a config section:
    the same fields and checks, reported at their dotted key (runs inside a validator)."""

    def validate(self, path: str = "input") -> "InputSpec":
        problems = Problems()
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
    input: InputSpec = subsection()
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
        problems = Problems()
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
    corpus: CorpusSpec = subsection()
    tasks: list[TaskSpec] = []

    @model_validator(mode="after")
    def _values(self) -> "PreprocessSpec":
        names = [t.name for t in self.tasks]
        check(len(names) == len(set(names)), "tasks", f"task names must be unique, got {names}")
        return self
