"""Task rows: the field map of a family, and each row read checked into a
`TaskRow` (its texts, label, split and example id) or a dead letter.

Field mapping (`field_map`: family field -> input column):
  classification   text
  entailment       premise, hypothesis
  similarity       text_a, text_b
  regression       text_a, text_b          (label column holds the float target)
  multiple_choice  context, choices        (choices: one list column, or a list of numbered columns)
plus `label` (default "label") and `id` (default "id"; the column used as
example_id when a row has it, else "<file>:<row>"). Unmapped fields default to
their own names. TFDS datasets this project knows have their maps in TFDS_TASKS.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, NamedTuple

import apache_beam as beam

from gpt_keras import schema
from gpt_keras.tasks import TaskFamily
from pipelines.preprocess.rows import SourceRow, dead, text_field
from pipelines.preprocess.splits import SplitAssigner, content_digest

# Field maps of TFDS datasets this project knows (family, field_map).
TFDS_TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "glue/sst2": ("classification", {"text": "sentence", "id": "idx"}),
    "glue/cola": ("classification", {"text": "sentence", "id": "idx"}),
    "glue/mnli": ("entailment", {"premise": "premise", "hypothesis": "hypothesis", "id": "idx"}),
    "glue/rte": ("entailment", {"premise": "sentence1", "hypothesis": "sentence2", "id": "idx"}),
    "glue/qnli": ("entailment", {"premise": "question", "hypothesis": "sentence", "id": "idx"}),
    "glue/mrpc": ("similarity", {"text_a": "sentence1", "text_b": "sentence2", "id": "idx"}),
    "glue/qqp": ("similarity", {"text_a": "question1", "text_b": "question2", "id": "idx"}),
    "glue/stsb": ("regression", {"text_a": "sentence1", "text_b": "sentence2", "id": "idx"}),
    "snli": ("entailment", {"premise": "premise", "hypothesis": "hypothesis"}),
}


class TaskRow(NamedTuple):
    """A validated task row: what `EncodeTask` turns into a record."""
    source: str
    row: int | None
    split: str
    example_id: str
    texts: dict          # family field -> text (choices -> list of texts)
    label: Any           # raw label (str | int), or float target for regression


def resolve_field_map(family: TaskFamily, field_map: Mapping[str, Any] | None) -> dict[str, Any]:
    """Complete field map; unknown keys are an error (typos fail fast)."""
    out: dict[str, Any] = {f: f for f in family.fields}
    out.update(label="label", id="id")  # id: used when the row has that column
    out.update(field_map or {})
    allowed = set(family.fields) | {"label", "id"}
    unknown = sorted(set(out) - allowed)
    if unknown:
        raise ValueError(f"field_map keys {unknown} are not fields of {family.value}; expected {sorted(allowed)}")
    choices = out.get("choices")
    if family is TaskFamily.MULTIPLE_CHOICE and not isinstance(choices, str):
        if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise ValueError("field_map['choices'] must be a list column name or a list of >= 2 column names")
        out["choices"] = tuple(choices)
    return out


class ValidateRows(beam.DoFn):
    """SourceRow -> TaskRow | dead letter (fields, label type, choices, split)."""

    def __init__(self, family: TaskFamily, field_map: Mapping[str, Any], num_choices: int | None,
                 assigner: SplitAssigner, salt: str, split_field: str | None = None,
                 carve_validation: float = 0.0):
        self._family, self._map, self._k = family, dict(field_map), num_choices
        self._assign, self._salt, self._split_field = assigner, salt, split_field
        # Given train rows that move to validation (by the same stable hash) when none is given.
        self._carve = (SplitAssigner.create({"train": 1.0 - carve_validation, "validation": carve_validation})
                       if carve_validation else None)

    def process(self, row: SourceRow):
        texts: dict[str, Any] = {}
        for name in self._family.fields:
            if name == "choices":
                value, bad = self._choices(row)
            else:
                value, bad = text_field(row, self._map[name], row.clean_html)
            if bad is not None:
                yield bad
                return
            texts[name] = value
        label, bad = self._label(row)
        if bad is not None:
            yield bad
            return
        id_column = self._map.get("id")
        if id_column and row.data.get(id_column) is not None:
            example_id = str(row.data[id_column])
        else:
            example_id = f"{os.path.basename(row.source)}:{row.row}"
        parts = [t for name in self._family.fields
                 for t in (texts[name] if isinstance(texts[name], list) else [texts[name]])]
        digest = content_digest(parts, self._salt)
        split, bad = self._split(row, digest)
        if bad is not None:
            yield bad
            return
        yield TaskRow(row.source, row.row, split, example_id, texts, label)

    def _split(self, row: SourceRow, digest: bytes):
        """(split, None) or (None, dead letter): the input's split, the split
        column's, or the hash's; a given train row may move to a carved validation."""
        if row.split:
            split = row.split
        elif self._split_field:
            value = row.data.get(self._split_field)
            if value in (None, ""):
                return None, dead(row.source, row.row, "missing_field",
                                          f"missing split column {self._split_field!r}")
            split = schema.task_split(value)
            if split is None:
                return None, dead(row.source, row.row, "unknown_split",
                                          f"split column {self._split_field!r} holds {value!r}; expected one of "
                                          f"{list(schema.TASK_SPLITS)} (or {sorted(schema.SPLIT_ALIASES)} for "
                                          "validation)", value)
            return split, None
        else:
            return self._assign(digest), None
        if split == "train" and self._carve is not None:
            split = self._carve(digest)
        return split, None

    def _choices(self, row: SourceRow):
        column = self._map["choices"]
        if isinstance(column, str):
            values = row.data.get(column)
            if values is None:
                return None, dead(row.source, row.row, "missing_field", f"missing field {column!r}")
            if not isinstance(values, list):
                return None, dead(row.source, row.row, "wrong_type", f"field {column!r} must be a list of "
                                          f"choices, got {type(values).__name__}", values)
            columns = [None] * len(values)
        else:  # numbered columns; blank ones mean "no such choice"
            values = [row.data.get(c) for c in column if row.data.get(c) not in (None, "")]
            columns = list(column)
        if len(values) != self._k:
            return None, dead(row.source, row.row, "wrong_num_choices",
                                      f"expected {self._k} choices, got {len(values)}")
        out = []
        for i, value in enumerate(values):
            where = columns[i] or f"{column}[{i}]"
            text, bad = text_field(SourceRow(row.source, row.row, row.split, {where: value}),
                                           where, row.clean_html)
            if bad is not None:
                return None, bad
            out.append(text)
        return out, None

    def _label(self, row: SourceRow):
        column = self._map["label"]
        value = row.data.get(column)
        if value is None or value == "":
            return None, dead(row.source, row.row, "missing_field", f"missing label field {column!r}")
        if self._family.is_regression:
            try:
                target = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError):
                target = math.nan
            if not math.isfinite(target):
                return None, dead(row.source, row.row, "invalid_target", f"target {column!r} must be a "
                                          f"finite number", value)
            return target, None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = value.strip()
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            return None, dead(row.source, row.row, "wrong_type", f"label {column!r} must be a name or an "
                                      f"integer", value)
        return value, None
