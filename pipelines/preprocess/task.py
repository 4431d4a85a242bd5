"""Labeled task -> fine-tuning TFRecords of the family's delimited sequences.

Rows are validated (fields present, non-empty, valid UTF-8; label known; the
right number of choices), tokenized in batches with the shared tokenizer and
turned into `[s] ... [$] ... [e]` sequences by `gpt_keras.tasks.build_inputs`
(the one transform implementation, also used by training and export), then
written as task records (`gpt_keras.schema`).

Field mapping (`field_map`: family field -> input column):
  classification   text
  entailment       premise, hypothesis
  similarity       text_a, text_b
  regression       text_a, text_b          (label column holds the float target)
  multiple_choice  context, choices        (choices: one list column, or a list of numbered columns)
plus `label` (default "label") and `id` (default "id"; the column used as
example_id when a row has it, else "<file>:<row>"). Unmapped fields default to their own names.

Labels: see `pipelines.preprocess.labels` (names or integers; without
`label_names` the vocabulary is derived from the data, and labels seen fewer
than `min_label_count` times are rejected as `rare_label`, so that a typo does
not become a class). Multiple choice labels are the 0-based index of
the correct choice.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from gpt_keras import schema
from gpt_keras.preprocessor import ragged_ids
from gpt_keras.tasks import TaskFamily
from pipelines.preprocess import labels, readers, sinks
from pipelines.preprocess.labels import _int_like, label_index
from pipelines.preprocess import stats as st
from pipelines.preprocess.common import (NAMESPACE, SplitAssigner, TokenizerDoFn, TokenizerSpec, content_digest,
                                         load_tokenizer, resolve_split_fractions)
from pipelines.preprocess.inputs import ResolvedInput, local_path, parse_inputs, resolve_inputs
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.runner import execute

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


TRACE_AFTER_ROWS = 20_000  # see EncodeTask._transform


class TaskRow(NamedTuple):
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

    def process(self, row: readers.SourceRow):
        texts: dict[str, Any] = {}
        for name in self._family.fields:
            if name == "choices":
                value, bad = self._choices(row)
            else:
                value, bad = readers.text_field(row, self._map[name], row.clean_html)
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

    def _split(self, row: readers.SourceRow, digest: bytes):
        """(split, None) or (None, dead letter): the input's split, the split
        column's, or the hash's; a given train row may move to a carved validation."""
        if row.split:
            split = row.split
        elif self._split_field:
            value = row.data.get(self._split_field)
            if value in (None, ""):
                return None, readers.dead(row.source, row.row, "missing_field",
                                          f"missing split column {self._split_field!r}")
            split = schema.task_split(value)
            if split is None:
                return None, readers.dead(row.source, row.row, "unknown_split",
                                          f"split column {self._split_field!r} holds {value!r}; expected one of "
                                          f"{list(schema.TASK_SPLITS)} (or {sorted(schema.SPLIT_ALIASES)} for "
                                          "validation)", value)
            return split, None
        else:
            return self._assign(digest), None
        if split == "train" and self._carve is not None:
            split = self._carve(digest)
        return split, None

    def _choices(self, row: readers.SourceRow):
        column = self._map["choices"]
        if isinstance(column, str):
            values = row.data.get(column)
            if values is None:
                return None, readers.dead(row.source, row.row, "missing_field", f"missing field {column!r}")
            if not isinstance(values, list):
                return None, readers.dead(row.source, row.row, "wrong_type", f"field {column!r} must be a list of "
                                          f"choices, got {type(values).__name__}", values)
            columns = [None] * len(values)
        else:  # numbered columns; blank ones mean "no such choice"
            values = [row.data.get(c) for c in column if row.data.get(c) not in (None, "")]
            columns = list(column)
        if len(values) != self._k:
            return None, readers.dead(row.source, row.row, "wrong_num_choices",
                                      f"expected {self._k} choices, got {len(values)}")
        out = []
        for i, value in enumerate(values):
            where = columns[i] or f"{column}[{i}]"
            text, bad = readers.text_field(readers.SourceRow(row.source, row.row, row.split, {where: value}),
                                           where, row.clean_html)
            if bad is not None:
                return None, bad
            out.append(text)
        return out, None

    def _label(self, row: readers.SourceRow):
        column = self._map["label"]
        value = row.data.get(column)
        if value is None or value == "":
            return None, readers.dead(row.source, row.row, "missing_field", f"missing label field {column!r}")
        if self._family.is_regression:
            try:
                target = float(value) if not isinstance(value, bool) else math.nan
            except (TypeError, ValueError):
                target = math.nan
            if not math.isfinite(target):
                return None, readers.dead(row.source, row.row, "invalid_target", f"target {column!r} must be a "
                                          f"finite number", value)
            return target, None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = value.strip()
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            return None, readers.dead(row.source, row.row, "wrong_type", f"label {column!r} must be a name or an "
                                      f"integer", value)
        return value, None


class EncodeTask(TokenizerDoFn):
    """A batch of TaskRows -> (split, serialized task record) + events, through
    the one task preprocessor (`gpt_keras.preprocessor.TaskPreprocessor`)."""

    def __init__(self, tokenizer: TokenizerSpec, family: TaskFamily, n_ctx: int, num_choices: int | None):
        super().__init__(tokenizer)
        self._family, self._n_ctx, self._k = family, n_ctx, num_choices

    def setup(self):
        super().setup()
        from gpt_keras.preprocessor import TaskPreprocessor

        self._preprocessor = TaskPreprocessor(self.tokenizer, self._family, self._n_ctx, self._k)
        self._rows, self._traced = 0, None
        self._examples = Metrics.counter(NAMESPACE, "examples")
        self._truncated = Metrics.counter(NAMESPACE, "truncated")

    def _label(self, r: TaskRow, names):
        """(label kwargs for the record, label name for stats) or None if unknown."""
        if self._family.is_regression:
            return {"target": r.label}, None
        if self._family is TaskFamily.MULTIPLE_CHOICE:
            i = _int_like(r.label)
            return ({"label": i}, str(i)) if i is not None and 0 <= i < self._k else None
        i = label_index(r.label, names)
        return None if i is None else ({"label": i}, names[i])

    def process(self, batch: Sequence[TaskRow], label_names=None):
        names = list(label_names) if label_names is not None else None
        labelled = []
        for r in batch:
            label = self._label(r, names)
            if label is None:
                known = f"label names {names}" if names else f"choices 0..{self._k - 1}"
                yield readers.dead(r.source, r.row, "unknown_label", f"label {r.label!r} is not one of the {known}")
                continue
            labelled.append((r, label))
        if not labelled:
            return
        fields = self._family.fields
        tokenized = self._preprocessor.tokenize({f: [r.texts[f] for r, _ in labelled] for f in fields})
        kept = []
        for i, (r, label) in enumerate(labelled):
            ids = {f: tokenized[f][i] for f in fields}
            empty = [f for f, v in ids.items() if not v or (isinstance(v[0], list) and not all(v))]
            if empty:
                yield readers.dead(r.source, r.row, "no_tokens", f"field(s) {empty} have no tokens after normalization")
                continue
            kept.append((r, label, ids))
        if not kept:
            return
        out = self._transform({f: ragged_ids([ids[f] for _, _, ids in kept]) for f in fields}, len(kept))
        for (r, (label_kwargs, name), ids), seqs, truncated in zip(kept, _nested_lists(out["token_ids"]),
                                                                  out["truncated"].numpy().tolist()):
            self._examples.inc()
            self._truncated.inc(int(truncated))
            n_tokens = sum(len(x) if isinstance(x[0], int) else sum(map(len, x)) for x in ids.values())
            yield beam.pvalue.TaggedOutput("events", st.Event(st.DOC, r.split, (n_tokens,)))
            yield beam.pvalue.TaggedOutput("events", st.Event(st.SEQ, r.split, tuple(map(len, seqs)), name,
                                                              bool(truncated), label_kwargs.get("target")))
            yield r.split, schema.encode_task_example(seqs, example_id=r.example_id, **label_kwargs)

    def _transform(self, fields: dict, n_rows: int) -> dict:
        """The transform on a batch: eagerly at first (~30 ms a batch), as one
        traced graph (~3 ms a batch) once this worker has seen enough rows to
        pay back the ~3-5 s of tracing. Same function, same results."""
        self._rows += n_rows
        if self._traced is None and self._rows > TRACE_AFTER_ROWS:
            self._traced = self._preprocessor.traced_transform(fields)
        return (self._traced or self._preprocessor.transform)(fields)


def _nested_lists(rt) -> list[list[list[int]]]:
    """Ragged [batch, n_seq, None] -> nested lists, via numpy (eager `to_list` slices row by row)."""
    values = rt.flat_values.numpy().tolist()
    outer, inner = (s.numpy().tolist() for s in rt.nested_row_splits)
    seqs = [values[a:b] for a, b in zip(inner, inner[1:])]
    return [seqs[a:b] for a, b in zip(outer, outer[1:])]


def run_task(inputs: Any, family: "str | TaskFamily", field_map: Mapping[str, Any] | None, out_dir: str,
             vocab_dir: str, n_ctx: int = 512, label_names: Sequence[str] | None = None,
             pipeline_args: Sequence[str] | None = None, *, options: PreprocessOptions | None = None,
             num_choices: int | None = None, val_fraction: float | None = 0.1,
             split_fractions: Mapping[str, float] | None = None, split_field: str | None = None,
             carve_validation: float = 0.0, allowed_splits: Sequence[str] | None = None) -> dict:
    """Labeled rows -> task TFRecords in `out_dir`; returns the summary dict.

    Args:
      inputs: CSV/TSV/JSONL globs or `InputSpec`s, `tfds:NAME[:splits]`, a list
        of row dicts (in memory), or {split: inputs} to keep given splits.
        Inputs without a split are hash-split by `val_fraction` / `split_fractions`.
      family: task family (see `gpt_keras.tasks.TaskFamily`).
      field_map: family field -> column (module docstring); None = defaults
        (or the known map of a TFDS dataset in TFDS_TASKS).
      out_dir, vocab_dir: output directory; the vocabulary to tokenize with.
      n_ctx: max sequence length (the model context); longer inputs are
        truncated (counted in the stats).
      label_names: the label vocabulary; None derives it from the data (or a
        TFDS ClassLabel), leaving out labels seen fewer than
        `options.min_label_count` times when `options.rare_labels` is "reject"
        (else they are kept, with a warning). Not used for regression/multiple choice.
      num_choices: choices per multiple-choice row (default: the number of
        numbered choice columns).
      split_field: a column naming each row's split (`gpt_keras.schema.task_split`:
        train / validation / test and aliases); rows without a known one go to
        the dead letter. Used for rows whose input gives no split.
      carve_validation: with given splits that lack validation, this fraction
        of the given train rows moves to validation by a stable hash.
      allowed_splits: the split names the caller can read (e.g. TASK_SPLITS);
        an input that gives another fails before any work.
      Other arguments as `run_corpus`.
    """
    options = options or PreprocessOptions()
    family = TaskFamily.parse(family)
    specs = parse_inputs(inputs, options.where, options.clean_html)
    out_dir = local_path(out_dir)
    if field_map is None and specs and specs[0].format == "tfds" and specs[0].path in TFDS_TASKS:
        field_map = TFDS_TASKS[specs[0].path][1]
    fmap = resolve_field_map(family, field_map)
    if family is TaskFamily.MULTIPLE_CHOICE:
        num_choices = num_choices or (len(fmap["choices"]) if isinstance(fmap["choices"], tuple) else None)
        family.validate_num_choices(num_choices)
    elif num_choices is not None:
        raise ValueError(f"num_choices is only for multiple_choice, not {family.value}")
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise ValueError(f"n_ctx must be an int >= 4 (room for the special tokens), got {n_ctx!r}")
    resolved = resolve_inputs(specs, options.tfds_data_dir)
    tokenizer = load_tokenizer(vocab_dir, options.mode)
    if family.is_regression or family is TaskFamily.MULTIPLE_CHOICE:
        label_names = None
    elif label_names is None:
        label_names = _tfds_label_names(resolved, fmap["label"])
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        family.validate_num_labels(len(label_names))
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be distinct, got {label_names}")
    fractions = resolve_split_fractions(None if split_fractions else val_fraction, split_fractions)
    split_info, hashed = sinks.split_plan(resolved, fractions)
    if split_field and hashed:  # the rows without a given split take the column's: nothing is hashed
        given = [name for name, fraction in split_info.items() if fraction is None]
        split_info, hashed = dict.fromkeys([*schema.TASK_SPLITS, *given]), False
    if carve_validation:
        if not 0.0 < carve_validation < 1.0:
            raise ValueError(f"carve_validation must be in (0, 1), got {carve_validation!r}")
        split_info.setdefault("validation", None)
    unknown = sorted(set(split_info) - set(allowed_splits)) if allowed_splits is not None else []
    if unknown:
        raise ValueError(f"the inputs give split(s) {unknown}, but only {list(allowed_splits)} are read; "
                         f"name the inputs' splits (e.g. the config's `splits: {{validation: ...}}`)")
    metadata = {
        "kind": schema.KIND_TASK, "max_length": n_ctx, "family": family.value, "label_names": label_names,
        "is_regression": family.is_regression, "num_choices": num_choices,
        "num_sequences": family.num_sequences(num_choices),
        "vocab": dataclasses.asdict(schema.VocabInfo.from_tokenizer(tokenizer)),
        "split_method": ("hash" if hashed else "column" if split_field else "given")
                        + (f"; validation: {carve_validation:g} of train by hash" if carve_validation else ""),
        "split_salt": options.split_salt,
        "sources": [s.describe() for s in specs], "counts": {}, "splits": {},
    }
    spec = TokenizerSpec.from_tokenizer(tokenizer)

    def build(p):
        read = p | "Read" >> readers.ReadRows(resolved, options)
        valid = read["rows"] | "Validate" >> beam.ParDo(ValidateRows(
            family, fmap, num_choices, SplitAssigner.create(fractions), options.split_salt, split_field,
            carve_validation)).with_outputs(
            readers.DEAD_TAG, main="rows")
        rows, names, rare, rare_events = valid.rows, None, [], []
        if label_names is not None:
            names = p | "LabelNames" >> beam.Create([label_names])
        elif not (family.is_regression or family is TaskFamily.MULTIPLE_CHOICE):
            rows, names, rare, rare_events = labels.derive(
                valid.rows, options.min_label_count if options.rare_labels == "reject" else 1)
        side = {"label_names": beam.pvalue.AsSingleton(names)} if names is not None else {}
        encoded = (rows | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=options.batch_size)
                   | "Encode" >> beam.ParDo(EncodeTask(spec, family, n_ctx, num_choices), **side).with_outputs(
                       readers.DEAD_TAG, "events", main="records"))
        written = encoded.records | "WriteRecords" >> sinks.WriteSplits(out_dir, list(split_info),
                                                                        options.num_shards)
        dead = [read["dead"], valid[readers.DEAD_TAG], encoded[readers.DEAD_TAG]] + rare
        sinks.write_dead_letters(dead, out_dir)
        events = sinks.dead_events(dead, read["dead"], read["rows"]) + [encoded.events] + rare_events
        sinks.report(events, st.WriteReport(out_dir, schema.KIND_TASK, split_info, n_ctx, options.max_bad_fraction,
                                            metadata), n_ctx, written_files=written, label_names=names)

    summary = execute(build, out_dir, options.overwrite, pipeline_args, options.verbose,
                      extra={"family": family.value, "vocab_fingerprint": tokenizer.fingerprint})
    if label_names is None:
        labels.warn_rare(summary, options.min_label_count, options.verbose)
    return summary


def _tfds_label_names(resolved: Sequence[ResolvedInput], column: str) -> list[str] | None:
    for item in resolved:
        if item.builder is not None:
            try:
                names = getattr(item.builder.info.features[column], "names", None)
            except (KeyError, TypeError):
                names = None
            if names:
                return list(names)
    return None
