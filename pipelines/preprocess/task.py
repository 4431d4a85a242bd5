"""Task job: labeled rows -> fine-tuning TFRecords of the family's delimited sequences.

The graph, top to bottom: `ReadInputs` -> `ValidateRows` (fields present,
non-empty, valid UTF-8; label known; the right number of choices; the split;
`pipelines.preprocess.task_rows`, which also has the field maps) -> the label
vocabulary (given, or derived from the data) -> batches -> `EncodeTask`
(tokenized with the shared tokenizer and turned into `[s] ... [$] ... [e]`
sequences by `gpt_keras.tasks.build_inputs`, the one transform implementation,
also used by training and export) -> task records per split
(`gpt_keras.schema`) -> `Finish`.

Labels: see `pipelines.preprocess.labels` (names or integers; without
`label_names` the vocabulary is derived from the data, and labels seen fewer
than `min_label_count` times are rejected as `rare_label`, so that a typo does
not become a class). Multiple choice labels are the 0-based index of
the correct choice.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from gpt_keras import schema
from gpt_keras.preprocessor import ragged_ids
from gpt_keras.tasks import TaskFamily
from pipelines.preprocess import labels
from pipelines.preprocess import stats as st
from pipelines.preprocess.inputs import ResolvedInput, local_path
from pipelines.preprocess.labels import int_like, label_index
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.readers import ReadInputs
from pipelines.preprocess.rows import DEAD_TAG, dead
from pipelines.preprocess.runner import execute
from pipelines.preprocess.sinks import Finish, JobOutputs, WriteSplits
from pipelines.preprocess.splits import SplitAssigner, resolve_split_fractions, split_plan
from pipelines.preprocess.stats import NAMESPACE
from pipelines.preprocess.task_rows import TFDS_TASKS, TaskRow, ValidateRows, resolve_field_map
from pipelines.preprocess.tokenizer import TokenizerDoFn, TokenizerSpec, load_tokenizer

TRACE_AFTER_ROWS = 20_000  # see EncodeTask._transform


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
            i = int_like(r.label)
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
                yield dead(r.source, r.row, "unknown_label", f"label {r.label!r} is not one of the {known}")
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
                yield dead(r.source, r.row, "no_tokens", f"field(s) {empty} have no tokens after normalization")
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
    reading = ReadInputs(inputs, options)  # fails fast on missing inputs
    out_dir = local_path(out_dir)
    first = reading.specs[0] if reading.specs else None
    if field_map is None and first is not None and first.format == "tfds" and first.path in TFDS_TASKS:
        field_map = TFDS_TASKS[first.path][1]
    fmap = resolve_field_map(family, field_map)
    if family is TaskFamily.MULTIPLE_CHOICE:
        num_choices = num_choices or (len(fmap["choices"]) if isinstance(fmap["choices"], tuple) else None)
        family.validate_num_choices(num_choices)
    elif num_choices is not None:
        raise ValueError(f"num_choices is only for multiple_choice, not {family.value}")
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise ValueError(f"n_ctx must be an int >= 4 (room for the special tokens), got {n_ctx!r}")
    tokenizer = load_tokenizer(vocab_dir, options.mode)
    if family.is_regression or family is TaskFamily.MULTIPLE_CHOICE:
        label_names = None
    elif label_names is None:
        label_names = _tfds_label_names(reading.resolved, fmap["label"])
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        family.validate_num_labels(len(label_names))
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names must be distinct, got {label_names}")
    fractions = resolve_split_fractions(None if split_fractions else val_fraction, split_fractions)
    split_info, hashed = split_plan(reading.resolved, fractions)
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
        "sources": reading.sources, "counts": {}, "splits": {},
    }
    spec = TokenizerSpec.from_tokenizer(tokenizer)

    def build(p: beam.Pipeline) -> None:
        read = p | "Read" >> reading
        valid = read.rows | "Validate" >> beam.ParDo(ValidateRows(
            family, fmap, num_choices, SplitAssigner.create(fractions), options.split_salt, split_field,
            carve_validation)).with_outputs(DEAD_TAG, main="rows")
        rows, names, rare, rare_events = valid.rows, None, [], []
        if label_names is not None:
            names = p | "LabelNames" >> beam.Create([label_names])
        elif not (family.is_regression or family is TaskFamily.MULTIPLE_CHOICE):
            rows, names, rare, rare_events = labels.derive(
                valid.rows, options.min_label_count if options.rare_labels == "reject" else 1)
        side = {"label_names": beam.pvalue.AsSingleton(names)} if names is not None else {}
        encoded = (rows | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=options.batch_size)
                   | "Encode" >> beam.ParDo(EncodeTask(spec, family, n_ctx, num_choices), **side).with_outputs(
                       DEAD_TAG, "events", main="records"))
        written = encoded.records | "WriteRecords" >> WriteSplits(out_dir, list(split_info), options.num_shards)
        (JobOutputs(read, written, dead=(valid[DEAD_TAG], encoded[DEAD_TAG], *rare),
                    events=(encoded.events, *rare_events))
         | "Finish" >> Finish(out_dir, schema.KIND_TASK, split_info, n_ctx, options.max_bad_fraction, metadata,
                              label_names=names))

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
