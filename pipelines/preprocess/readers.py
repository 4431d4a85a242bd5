"""Inputs: parse and resolve input specs, read rows, send bad rows to a dead letter.

An input is one of
  * a glob of files; the format comes from the extension (a trailing `.gz` is
    looked through) or a `format:` prefix: `text:`, `jsonl:`, `csv:`, `tsv:`;
  * `tfds:NAME[:SPLIT,SPLIT]`, a TFDS dataset prepared in `tfds_data_dir`
    (splits default to the dataset's splits whose name does not start with "test");
  * rows held in memory (`memory_input(rows)`), for Python callers.

Every record read becomes a `SourceRow` (source, row, split, data) or a
`DeadLetter` (source, row, reason, detail). `row` is the 1-based line where the
record starts in a file, the list index for in-memory rows, or the `idx`
feature for TFDS. Files are opened through Beam's `FileSystems`, so `gs://`
works on Dataflow; each file is read by one worker (that is what gives exact
line numbers), so shard big inputs into many files.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import sys
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.preprocess.common import NAMESPACE, PreprocessError

FILE_FORMATS = ("text", "jsonl", "csv", "tsv")
TEXT_UNITS = ("line", "paragraph", "file")
_EXTENSIONS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".csv": "csv", ".tsv": "tsv"}
DEAD_TAG = "dead"


class SourceRow(NamedTuple):
    source: str
    row: int | None
    split: str | None  # a split given with the input, or None (hash split later)
    data: dict


class DeadLetter(NamedTuple):
    source: str
    row: int | None
    reason: str   # a short code: malformed_csv, malformed_json, missing_field, empty_text, invalid_utf8, ...
    detail: str   # human-readable explanation and a snippet of the row

    def to_json(self) -> str:
        return json.dumps(self._asdict(), ensure_ascii=False)


def dead(source: str, row: int | None, reason: str, detail: str, snippet: Any = None) -> beam.pvalue.TaggedOutput:
    """A dead letter on the `dead` output, counted per reason."""
    Metrics.counter(NAMESPACE, f"rejected_{reason}").inc()
    if snippet is not None:
        if isinstance(snippet, bytes):
            snippet = snippet.decode("utf-8", "backslashreplace")
        text = snippet if isinstance(snippet, str) else repr(snippet)
        detail = f"{detail}: {text[:200]!r}" if len(text) > 0 else detail
    return beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(source, row, reason, detail))


# --------------------------------------------------------------------------- specs

@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input. `split` keeps the rows in that split (else they are hash-split)."""

    format: str
    path: str = ""
    split: str | None = None
    tfds_splits: tuple[str, ...] = ()
    rows: tuple = ()

    def describe(self) -> str:
        if self.format == "memory":
            return f"memory:{len(self.rows)} rows"
        suffix = f":{','.join(self.tfds_splits)}" if self.tfds_splits else ""
        return f"{self.format}:{self.path}{suffix}" + (f" (split {self.split})" if self.split else "")


def memory_input(rows: Iterable[Any], split: str | None = None) -> InputSpec:
    """In-memory rows (dicts, or strings meaning {text_field: string}) as an input."""
    return InputSpec("memory", split=split, rows=tuple(rows))


def parse_input(value: "str | InputSpec", split: str | None = None) -> InputSpec:
    """`path/glob*.jsonl.gz`, `csv:path`, `tfds:glue/sst2:train` -> InputSpec."""
    if isinstance(value, InputSpec):
        return dataclasses.replace(value, split=split) if split else value
    if not isinstance(value, str) or not value:
        raise TypeError(f"an input must be a path/glob, 'format:path', 'tfds:name' or an InputSpec; got {value!r}")
    head, sep, rest = value.partition(":")
    if sep and head == "tfds":
        name, _, splits = rest.partition(":")
        if split and splits:
            raise ValueError(f"{value!r} names its TFDS splits; do not also assign it to split {split!r}")
        return InputSpec("tfds", name, split, tuple(s for s in splits.split(",") if s))
    if sep and head in FILE_FORMATS:
        return InputSpec(head, rest, split)
    stem = value[:-3] if value.endswith(".gz") else value
    return InputSpec(_EXTENSIONS.get(os.path.splitext(stem)[1].lower(), "text"), value, split)


def parse_inputs(inputs: Any) -> list[InputSpec]:
    """Inputs as a spec, a list of them, a list of row dicts (in memory), or a
    mapping split name -> any of these (the splits are kept as given)."""
    if isinstance(inputs, Mapping):
        return [spec for split, value in inputs.items() for spec in _parse_list(value, split)]
    return _parse_list(inputs, None)


def _parse_list(value: Any, split: str | None) -> list[InputSpec]:
    if isinstance(value, (str, InputSpec)):
        return [parse_input(value, split)]
    value = list(value)
    if value and all(isinstance(v, Mapping) for v in value):
        return [memory_input(value, split)]
    if not value:
        raise ValueError("no inputs given")
    return [parse_input(v, split) for v in value]


def local_path(path: str) -> str:
    """Absolute local paths (Beam's local glob ignores bare relative patterns); URLs unchanged."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


@dataclasses.dataclass(frozen=True)
class ResolvedInput:
    spec: InputSpec
    files: tuple[str, ...] = ()   # file formats
    builder: Any = None           # tfds
    tfds_splits: tuple[str, ...] = ()

    @property
    def kept_splits(self) -> tuple[str, ...]:
        """Split names this input fixes (empty: its rows are hash-split)."""
        if self.spec.format == "tfds":
            return (self.spec.split,) if self.spec.split else self.tfds_splits
        return (self.spec.split,) if self.spec.split else ()


def resolve_inputs(specs: Sequence[InputSpec], tfds_data_dir: str | None = None) -> list[ResolvedInput]:
    """Expands globs and opens TFDS builders, failing fast (before any Beam
    work) on a pattern that matches nothing or a dataset that is not prepared."""
    resolved = []
    for spec in specs:
        if spec.format == "memory":
            if not spec.rows:
                raise ValueError("an in-memory input has no rows")
            resolved.append(ResolvedInput(spec))
        elif spec.format == "tfds":
            builder, splits = _tfds_builder(spec, tfds_data_dir)
            resolved.append(ResolvedInput(spec, builder=builder, tfds_splits=splits))
        elif spec.format in FILE_FORMATS:
            matches = FileSystems.match([local_path(spec.path)])[0].metadata_list
            files = tuple(sorted(m.path for m in matches if not m.path.endswith("/")))
            if not files:
                raise FileNotFoundError(f"input {spec.path!r} matches no files")
            resolved.append(ResolvedInput(spec, files=files))
        else:
            raise ValueError(f"unknown input format {spec.format!r}; expected one of {FILE_FORMATS + ('tfds',)}")
    return resolved


def _tfds_builder(spec: InputSpec, data_dir: str | None):
    import tensorflow_datasets as tfds

    hint = (f"prepare it first where there is network access, e.g. `tfds build {spec.path} "
            f"--data_dir={data_dir or '~/tensorflow_datasets'}`, and pass --tfds_data_dir")
    try:
        builder = tfds.builder(spec.path, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends; the message lists every dataset
        raise FileNotFoundError(f"TFDS dataset {spec.path!r} not found in data_dir {data_dir!r} "
                                f"({type(e).__name__}); {hint}") from None
    if not builder.is_prepared():
        raise FileNotFoundError(f"TFDS dataset {spec.path!r} is not prepared in data_dir {data_dir!r}; {hint}")
    available = list(builder.info.splits.keys())
    splits = spec.tfds_splits or tuple(s for s in available if not s.startswith("test"))
    unknown = [s for s in splits if s not in available]
    if unknown or not splits:
        raise ValueError(f"TFDS dataset {spec.path!r} has splits {available}; cannot read {list(unknown or splits)}")
    return builder, tuple(splits)


# --------------------------------------------------------------------------- reading

@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How rows are read. `text_field` names the key plain-text documents get;
    `where` keeps only rows whose columns equal the given values (others are
    skipped, not counted as input)."""

    text_field: str = "text"
    text_unit: str = "line"
    where: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.text_unit not in TEXT_UNITS:
            raise ValueError(f"text_unit must be one of {TEXT_UNITS}, got {self.text_unit!r}")

    def keep(self, data: Mapping) -> bool:
        return all(_as_text(data.get(k)) == v for k, v in self.where)


def _as_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _lines(handle) -> Iterator[bytes]:
    while True:
        line = handle.readline()
        if not line:
            return
        yield line


class ReadFileFn(beam.DoFn):
    """path -> SourceRow | dead letters, for one file format."""

    def __init__(self, fmt: str, split: str | None, options: ReadOptions):
        self._fmt, self._split, self._opt = fmt, split, options

    def setup(self):
        csv.field_size_limit(sys.maxsize)  # reviews and articles exceed the 128 KiB default
        self._rows = Metrics.counter(NAMESPACE, "rows_read")

    def process(self, path: str):
        with FileSystems.open(path) as handle:  # compression from the extension (.gz, .bz2, ...)
            if self._fmt == "text":
                records = self._text(path, handle)
            elif self._fmt == "jsonl":
                records = self._jsonl(path, handle)
            else:
                records = self._csv(path, handle)
            for record in records:
                if isinstance(record, SourceRow):
                    if not self._opt.keep(record.data):
                        continue
                    self._rows.inc()
                yield record

    def _text(self, path: str, handle):
        unit, key = self._opt.text_unit, self._opt.text_field
        if unit == "line":
            for number, line in enumerate(_lines(handle), start=1):
                yield from self._text_unit(path, number, [line], key)
        elif unit == "file":
            yield from self._text_unit(path, 1, list(_lines(handle)), key)
        else:  # paragraphs: runs of non-blank lines
            chunk, start = [], 1
            for number, line in enumerate(_lines(handle), start=1):
                if line.strip():
                    start = start if chunk else number
                    chunk.append(line)
                else:
                    yield from self._text_unit(path, start, chunk, key)
                    chunk = []
            yield from self._text_unit(path, start, chunk, key)

    def _text_unit(self, path: str, start: int, chunk: list[bytes], key: str):
        raw = b"".join(chunk)
        if not raw.strip():
            return  # blank lines separate documents; they are not documents
        try:
            yield SourceRow(path, start, self._split, {key: raw.decode("utf-8")})
        except UnicodeDecodeError as e:
            yield dead(path, start, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", raw)

    def _jsonl(self, path: str, handle):
        for number, line in enumerate(_lines(handle), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield dead(path, number, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", line)
                continue
            except json.JSONDecodeError as e:
                yield dead(path, number, "malformed_json", f"malformed JSON ({e.msg} at column {e.colno})",
                           line.decode("utf-8", "replace"))
                continue
            if not isinstance(value, dict):
                yield dead(path, number, "malformed_json", f"a JSON line must be an object, got "
                           f"{type(value).__name__}", line.decode("utf-8", "replace"))
                continue
            yield SourceRow(path, number, self._split, value)

    def _csv(self, path: str, handle):
        # surrogateescape keeps bad bytes recoverable so one bad row does not
        # stop the file; rows holding them are rejected below.
        text = (line.decode("utf-8", "surrogateescape") for line in _lines(handle))
        if self._fmt == "tsv":  # GLUE-style TSV: no quoting, quotes are text
            reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(text, strict=True)
        header = None
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield dead(path, start, "malformed_csv", f"malformed {self._fmt.upper()} row ({e})")
                continue
            if header is None:
                header = fields
                if any(_has_surrogates(h) for h in header) or len(set(header)) != len(header) or not header:
                    raise PreprocessError(f"{path}: the first line must be a header of distinct UTF-8 column "
                                          f"names, got {header[:10]!r}")
                continue
            if not fields:
                continue  # blank line
            if len(fields) != len(header):
                yield dead(path, start, "malformed_csv", f"expected {len(header)} columns, got {len(fields)}",
                           _redecode(self._fmt, fields))
                continue
            if any(_has_surrogates(f) for f in fields):
                yield dead(path, start, "invalid_utf8", "invalid UTF-8", _redecode(self._fmt, fields))
                continue
            yield SourceRow(path, start, self._split, dict(zip(header, fields)))


_SURROGATES = re.compile("[\ud800-\udfff]")  # surrogateescape'd bad bytes, or lone surrogates


def _has_surrogates(text: str) -> bool:
    return bool(_SURROGATES.search(text))


def _redecode(fmt: str, fields: list[str]) -> str:
    sep = "\t" if fmt == "tsv" else ","
    return sep.join(fields).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _MemoryRows(beam.DoFn):
    def __init__(self, options: ReadOptions):
        self._opt = options

    def process(self, row: SourceRow):
        if self._opt.keep(row.data):
            Metrics.counter(NAMESPACE, "rows_read").inc()
            yield row


def _tfds_row(example: Mapping, source: str, split: str, options: ReadOptions):
    """A decoded TFDS example (numpy) -> SourceRow | dead letter."""
    data: dict[str, Any] = {}
    row = example.get("idx")
    row = int(row) if row is not None else None
    for key, value in example.items():
        try:
            data[key] = _from_numpy(value)
        except UnicodeDecodeError as e:
            yield dead(source, row, "invalid_utf8", f"invalid UTF-8 in feature {key!r} at byte {e.start}")
            return
    if options.keep(data):
        Metrics.counter(NAMESPACE, "rows_read").inc()
        yield SourceRow(source, row, split, data)


def _from_numpy(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_from_numpy(v) for v in value]
    return value


class ReadRows(beam.PTransform):
    """Resolved inputs -> {"rows": SourceRow, "dead": DeadLetter} PCollections.

    Rows are reshuffled after reading, so the work downstream spreads over all
    workers even when one file held everything."""

    def __init__(self, inputs: Sequence[ResolvedInput], options: ReadOptions):
        super().__init__()
        self._inputs, self._opt = list(inputs), options

    def expand(self, pbegin):
        rows, deads = [], []
        for i, item in enumerate(self._inputs):
            spec = item.spec
            label = f"Read{i}_{spec.format}"
            if spec.format == "memory":
                key = self._opt.text_field
                name = f"memory:{spec.split}" if spec.split else "memory"
                source = [SourceRow(name, n, spec.split, dict(r) if isinstance(r, Mapping) else {key: r})
                          for n, r in enumerate(spec.rows)]
                rows.append(pbegin | label >> beam.Create(source, reshuffle=False)
                            | f"{label}_filter" >> beam.ParDo(_MemoryRows(self._opt)))
                continue
            if spec.format == "tfds":
                import tensorflow_datasets as tfds

                for split in item.tfds_splits:
                    name = f"tfds:{spec.path}:{split}"
                    out = (pbegin | f"{label}_{split}" >> tfds.beam.ReadFromTFDS(item.builder, split=split)
                           | f"{label}_{split}_np" >> beam.Map(tfds.as_numpy)
                           | f"{label}_{split}_rows" >> beam.FlatMap(
                               _tfds_row, name, spec.split or split, self._opt).with_outputs(DEAD_TAG, main="rows"))
                    rows.append(out.rows)
                    deads.append(out[DEAD_TAG])
                continue
            out = (pbegin | f"{label}_files" >> beam.Create(item.files)
                   | f"{label}_read" >> beam.ParDo(ReadFileFn(spec.format, spec.split, self._opt)).with_outputs(
                       DEAD_TAG, main="rows"))
            rows.append(out.rows)
            deads.append(out[DEAD_TAG])
        all_rows = rows | "FlattenRows" >> beam.Flatten() if len(rows) > 1 else rows[0]
        if not deads:
            deads = [pbegin | "NoReadErrors" >> beam.Create([])]
        return {"rows": all_rows | "Spread" >> beam.Reshuffle(),
                "dead": deads | "FlattenReadErrors" >> beam.Flatten()}


# --------------------------------------------------------------------------- text fields

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def normalize_text(text: str, clean_html: bool = False) -> str:
    """The pipeline's only text clean-up before the tokenizer (which does its
    own, shared normalization): unify line ends, optionally turn HTML `<br />`
    into newlines (IMDB), strip. Kept minimal so that serving raw text gives
    the same ids as training."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if clean_html:
        text = _BR.sub("\n", text)
    return text.strip()


def text_field(row: SourceRow, column: str, clean_html: bool):
    """(text, None) or (None, TaggedOutput dead letter) for one text column."""
    if column not in row.data or row.data[column] is None:
        return None, dead(row.source, row.row, "missing_field", f"missing field {column!r}; row has "
                          f"{sorted(row.data)[:10]}")
    value = row.data[column]
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, dead(row.source, row.row, "invalid_utf8", f"field {column!r}: invalid UTF-8 at byte {e.start}")
    if not isinstance(value, str):
        return None, dead(row.source, row.row, "wrong_type", f"field {column!r} must be text, got "
                          f"{type(value).__name__}", value)
    if _has_surrogates(value):
        return None, dead(row.source, row.row, "invalid_utf8", f"field {column!r} holds invalid UTF-8 / surrogates")
    value = normalize_text(value, clean_html)
    if not value:
        return None, dead(row.source, row.row, "empty_text", f"field {column!r} is empty")
    return value, None
