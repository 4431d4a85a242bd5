"""TFRecord feature specs and dataset metadata: the one contract between the
Beam writers (`pipelines.preprocess`), the tf.data readers (`gpt_keras.data`)
and export. Records are serialized without TensorFlow (`gpt_keras.tf_example`).

An output directory holds, for each split `S`:

    S-00000-of-0000N.tfrecord.gz   GZIP-compressed TFRecord shards of tf.train.Example
    metadata.json                  `DatasetMetadata` (this module)
    stats.json                     statistics (documents, tokens, histograms, labels)
    dead_letter.jsonl              rejected input rows (source, row, reason)

Pre-training records (`kind="pretraining"`):
    token_ids   int64 list   one packed window of 1..max_length tokens

Task records (`kind="task"`):
    token_ids   int64 list   the n_seq sequences of the family's input transform, concatenated
    seq_lengths int64 [n_seq] length of each sequence (so token_ids splits back into [n_seq, None])
    label       int64        class index / correct choice    (not for regression)
    target      float        the score                       (regression only)
    example_id  bytes        stable id of the source row (e.g. "train.csv:17")
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from gpt_keras import tf_example
from gpt_keras.config import SPECIAL_TOKENS

if TYPE_CHECKING:  # TensorFlow and the task module (Keras) load only where records are parsed
    import tensorflow as tf

    from gpt_keras.tasks import TaskFamily

SCHEMA_VERSION = 1
KIND_PRETRAINING = "pretraining"
KIND_TASK = "task"
KINDS = (KIND_PRETRAINING, KIND_TASK)

METADATA_FILENAME = "metadata.json"
STATS_FILENAME = "stats.json"
DEAD_LETTER_FILENAME = "dead_letter.jsonl"
RECORD_SUFFIX = ".tfrecord.gz"
COMPRESSION = "GZIP"

# How documents are joined before being cut into windows (pre-training).
BOUNDARY_POLICIES = ("newline", "concat", "document")
NEWLINE_TOKEN = "\n</w>"  # the last token of the original release's vocabulary


class SchemaMismatchError(ValueError):
    """The data on disk does not fit the model/tokenizer/family it is read for."""


# The splits a task's records are read in: fine-tuning trains on "train" and
# selects on "validation"; evaluation reports "test" (or "validation" without one).
TASK_SPLITS = ("train", "validation", "test")
# Other names datasets give their splits, as a split column's values.
SPLIT_ALIASES = {"dev": "validation", "val": "validation", "valid": "validation", "eval": "validation"}


def task_split(name: str) -> str | None:
    """A dataset's split name (any case, e.g. "Dev") -> one of TASK_SPLITS, or None."""
    key = str(name).strip().lower()
    key = SPLIT_ALIASES.get(key, key)
    return key if key in TASK_SPLITS else None


def shard_prefix(split: str) -> str:
    """File-name prefix of a split's shards (Beam appends -SSSSS-of-NNNNN)."""
    if not split or "/" in split or "-" in split:
        raise ValueError(f"invalid split name {split!r}: use a non-empty name without '/' or '-'")
    return split


def shard_pattern(split: str) -> str:
    """Glob of a split's shards, relative to the output directory."""
    return f"{shard_prefix(split)}-*-of-*{RECORD_SUFFIX}"


# --------------------------------------------------------------------------- features

def pretraining_features() -> "dict[str, tf.io.RaggedFeature]":
    """Parse spec of pre-training records: `token_ids` -> ragged [batch, None] int64."""
    import tensorflow as tf

    return {"token_ids": tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)}


def task_features(is_regression: bool) -> dict[str, Any]:
    """Parse spec of task records. `token_ids` comes back as ragged
    [batch, n_seq, None] int64: the flat ids are split by `seq_lengths`."""
    import tensorflow as tf

    features: dict[str, Any] = {
        "token_ids": tf.io.RaggedFeature(
            tf.int64, value_key="token_ids", row_splits_dtype=tf.int64,
            partitions=[tf.io.RaggedFeature.RowLengths("seq_lengths")]),
        "example_id": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    if is_regression:
        features["target"] = tf.io.FixedLenFeature([], tf.float32)
    else:
        features["label"] = tf.io.FixedLenFeature([], tf.int64)
    return features


def encode_pretraining_example(token_ids: Sequence[int]) -> bytes:
    """Serialized tf.train.Example of one packed window."""
    if not len(token_ids):
        raise ValueError("a pre-training record needs at least one token")
    return tf_example.serialize({"token_ids": tf_example.feature("int64_list", token_ids)})


def encode_task_example(sequences: Sequence[Sequence[int]], *, label: int | None = None,
                        target: float | None = None, example_id: str = "") -> bytes:
    """Serialized tf.train.Example of one task example: the family's n_seq
    input sequences plus exactly one of `label` (int) or `target` (float)."""
    if (label is None) == (target is None):
        raise ValueError("a task record needs exactly one of label (classification, choice) or target (regression)")
    flat = [int(t) for seq in sequences for t in seq]
    feature = {
        "token_ids": tf_example.feature("int64_list", flat),
        "seq_lengths": tf_example.feature("int64_list", [len(seq) for seq in sequences]),
        "example_id": tf_example.feature("bytes_list", [example_id.encode("utf-8")]),
    }
    if label is not None:
        feature["label"] = tf_example.feature("int64_list", [int(label)])
    else:
        feature["target"] = tf_example.feature("float_list", [float(target)])
    return tf_example.serialize(feature)


# --------------------------------------------------------------------------- metadata

@dataclasses.dataclass
class VocabInfo:
    """Identity of the vocabulary the ids come from (see GPTTokenizer)."""

    fingerprint: str
    n_vocab: int
    special_ids: dict[str, int]
    mode: str = "hf"

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "VocabInfo":
        return cls(tokenizer.fingerprint, tokenizer.n_vocab, dict(tokenizer.special_ids), tokenizer.mode)

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: BPE vocabulary plus the special tokens."""
        return self.n_vocab + len(SPECIAL_TOKENS)


@dataclasses.dataclass
class SplitInfo:
    """One split: `records` TFRecord records written from `rows` input rows;
    `fraction` is the hash-split share (None when the split came with the input)."""

    records: int = 0
    rows: int = 0
    fraction: float | None = None


@dataclasses.dataclass
class DatasetMetadata:
    """Contents of `metadata.json`.

    counts: `input` rows read (documents or labeled examples), `written` rows
    that made it into records, `rejected` rows sent to the dead letter;
    input == written + rejected. `records` is the number of TFRecord records
    (packed windows for pre-training; one per example for tasks).
    """

    kind: str
    max_length: int
    vocab: VocabInfo
    splits: dict[str, SplitInfo]
    counts: dict[str, int]
    family: str | None = None
    label_names: list[str] | None = None
    is_regression: bool = False
    num_choices: int | None = None
    num_sequences: int = 1
    boundary_policy: str | None = None
    boundary_token_id: int | None = None
    split_method: str = "hash"
    split_salt: str = ""
    compression: str = COMPRESSION
    sources: list[str] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    # ---- (de)serialization

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DatasetMetadata":
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown metadata keys {unknown}; this reader knows schema version {SCHEMA_VERSION}")
        try:
            values["vocab"] = VocabInfo(**values["vocab"])
            values["splits"] = {k: SplitInfo(**v) for k, v in values["splits"].items()}
            metadata = cls(**values)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed dataset metadata: {e}") from None
        metadata.validate()
        return metadata

    @classmethod
    def from_json(cls, text: str) -> "DatasetMetadata":
        return cls.from_dict(json.loads(text))

    # ---- checks

    @property
    def evaluation_split(self) -> str:
        """The split results are reported on: "test" when it holds records, else "validation"."""
        test = self.splits.get("test")
        return "test" if test is not None and test.records > 0 else "validation"

    def validate(self) -> "DatasetMetadata":
        """Raises ValueError listing every inconsistency; returns self."""
        p = []
        if self.schema_version != SCHEMA_VERSION:
            p.append(f"schema_version {self.schema_version} is not the supported {SCHEMA_VERSION}")
        if self.kind not in KINDS:
            p.append(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.max_length, int) or self.max_length < 1:
            p.append(f"max_length must be a positive int, got {self.max_length!r}")
        if not self.vocab.fingerprint or self.vocab.n_vocab < 1:
            p.append("vocab needs a fingerprint and n_vocab >= 1")
        expected_specials = {t: self.vocab.n_vocab + i for i, t in enumerate(SPECIAL_TOKENS)}
        if self.vocab.special_ids != expected_specials:
            p.append(f"special ids {self.vocab.special_ids} must be {expected_specials}")
        missing = [k for k in ("input", "written", "rejected", "records") if k not in self.counts]
        if missing:
            p.append(f"counts lack {missing}")
        elif self.counts["input"] != self.counts["written"] + self.counts["rejected"]:
            p.append(f"counts do not add up: input {self.counts['input']} != written {self.counts['written']} "
                     f"+ rejected {self.counts['rejected']}")
        elif sum(s.records for s in self.splits.values()) != self.counts["records"]:
            p.append("split record counts do not sum to counts['records']")
        for name in self.splits:
            try:
                shard_prefix(name)
            except ValueError as e:
                p.append(str(e))
        if self.kind == KIND_PRETRAINING:
            if self.family is not None or self.num_sequences != 1:
                p.append("pre-training data has no family and one sequence per record")
            if self.boundary_policy not in BOUNDARY_POLICIES:
                p.append(f"boundary_policy must be one of {BOUNDARY_POLICIES}, got {self.boundary_policy!r}")
            if (self.boundary_policy == "newline") != (self.boundary_token_id is not None):
                p.append("boundary_token_id is set exactly when boundary_policy is 'newline'")
        elif self.kind == KIND_TASK:
            p.extend(self._task_problems())
        if p:
            raise ValueError("invalid dataset metadata: " + "; ".join(p))
        return self

    def _task_problems(self) -> list[str]:
        from gpt_keras.tasks import TaskFamily

        try:
            family = TaskFamily.parse(self.family)
        except ValueError as e:
            return [str(e)]
        p = []
        if self.is_regression != family.is_regression:
            p.append(f"is_regression={self.is_regression} contradicts family {family.value}")
        if family is TaskFamily.MULTIPLE_CHOICE:
            if not isinstance(self.num_choices, int) or self.num_choices < 2:
                p.append(f"multiple_choice needs num_choices >= 2, got {self.num_choices!r}")
        elif self.num_choices is not None:
            p.append(f"num_choices is only for multiple_choice, got {self.num_choices!r}")
        if family.is_regression or family is TaskFamily.MULTIPLE_CHOICE:
            if self.label_names is not None:
                p.append(f"{family.value} has no label names")
        elif not self.label_names or len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
            p.append(f"{family.value} needs >= 2 distinct label names, got {self.label_names!r}")
        if family is not TaskFamily.MULTIPLE_CHOICE or isinstance(self.num_choices, int):
            if self.num_sequences != family.num_sequences(self.num_choices):
                p.append(f"num_sequences {self.num_sequences} != {family.num_sequences(self.num_choices)} "
                         f"for {family.value}")
        return p

    @property
    def num_labels(self) -> int | None:
        """Head size for classification-like families (None otherwise)."""
        return len(self.label_names) if self.label_names else None

    def check_compatible(self, *, kind: str | None = None, family: "str | TaskFamily | None" = None,
                         fingerprint: str | None = None, config=None, source: str = "the data") -> None:
        """Raises SchemaMismatchError when this data does not fit what the caller
        expects: the record kind, the task family, the tokenizer's fingerprint,
        or a `GPTConfig` (vocab_size == n_vocab and n_ctx >= max_length)."""
        from gpt_keras.tasks import TaskFamily

        p = []
        if kind is not None and kind != self.kind:
            p.append(f"it holds {self.kind} records, not {kind} records")
        if family is not None:
            wanted = TaskFamily.parse(family).value
            if wanted != self.family:
                p.append(f"its task family is {self.family!r}, but the model is for {wanted!r}")
        if fingerprint is not None and fingerprint != self.vocab.fingerprint:
            p.append(f"it was tokenized with vocabulary {self.vocab.fingerprint[:12]}... but the model's tokenizer "
                     f"is {fingerprint[:12]}...: the ids would mean different tokens")
        if config is not None:
            if config.vocab_size != self.vocab.n_vocab:
                p.append(f"its vocabulary has {self.vocab.n_vocab} BPE tokens but config.vocab_size is "
                         f"{config.vocab_size}")
            if config.n_ctx < self.max_length:
                p.append(f"its sequences are up to {self.max_length} tokens but config.n_ctx is {config.n_ctx}")
        if p:
            raise SchemaMismatchError(f"{source} does not match the model: " + "; ".join(p) +
                                      ". Re-run preprocessing with the model's vocabulary/family, or load the "
                                      "matching model.")


def metadata_path(directory: str) -> str:
    return directory.rstrip("/") + "/" + METADATA_FILENAME


def write_metadata(directory: str, metadata: DatasetMetadata) -> str:
    """Validates and writes `metadata.json` (local or any tf.io.gfile path)."""
    import tensorflow as tf

    metadata.validate()
    path = metadata_path(directory)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(metadata.to_json())
    return path


def read_metadata(directory: str) -> DatasetMetadata:
    """Reads and validates `metadata.json`; a clear error if there is none."""
    import tensorflow as tf

    path = metadata_path(directory)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {METADATA_FILENAME} in '{directory}': not a preprocessed dataset directory "
                                f"(run `python -m pipelines.preprocess corpus|task ...` to create one)")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        return DatasetMetadata.from_json(text)
    except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None

