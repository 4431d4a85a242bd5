"""Reading: input files, TFDS and in-memory rows -> rows, and bad records to a dead letter.

Every record read becomes a `SourceRow` (source, row, split, data) or a
`DeadLetter` (source, row, reason, detail, raw). `row` is the 1-based line where the
record starts in a file, the list index for in-memory rows, or the `idx`
feature for TFDS. Every physical line of a file is accounted for: it is part
of a row, rejected with its line number and raw text, or a blank line / CSV
header. Files are opened through Beam's `FileSystems`, so `gs://` works on
Dataflow; each file is read by one worker (that is what gives exact line
numbers), so shard big inputs into many files. Inputs are described in
`pipelines.preprocess.inputs`, the limits in `PreprocessOptions`.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.preprocess.common import NAMESPACE, PreprocessError
from pipelines.preprocess.inputs import InputSpec, ResolvedInput
from pipelines.preprocess.lines import CsvRecords, Line, Reject, line_problem, read_lines
from pipelines.preprocess.options import PreprocessOptions

DEAD_TAG = "dead"
RAW_KEPT = 64 * 1024  # characters of a rejected record's raw text kept in the dead letter


class SourceRow(NamedTuple):
    source: str
    row: int | None
    split: str | None  # a split given with the input, or None (hash split later)
    data: dict
    clean_html: bool = False  # the input asks for <br /> -> newline in its text fields


class DeadLetter(NamedTuple):
    source: str
    row: int | None
    reason: str   # a short code: malformed_csv, malformed_json, missing_field, empty_text, invalid_utf8, ...
    detail: str   # human-readable explanation and a snippet of the row
    raw: str | None = None  # the rejected record as read (up to RAW_KEPT characters)

    def to_json(self) -> str:
        return json.dumps(self._asdict(), ensure_ascii=False)


def dead(source: str, row: int | None, reason: str, detail: str, snippet: Any = None) -> beam.pvalue.TaggedOutput:
    """A dead letter on the `dead` output, counted per reason; `snippet` (the
    raw record) is kept in `raw` and quoted in `detail`."""
    Metrics.counter(NAMESPACE, f"rejected_{reason}").inc()
    raw = None
    if snippet is not None:
        if isinstance(snippet, bytes):
            snippet = snippet[:RAW_KEPT * 4].decode("utf-8", "backslashreplace")
        raw = (snippet if isinstance(snippet, str) else repr(snippet))[:RAW_KEPT]
        detail = f"{detail}: {raw[:200]!r}" if raw else detail
    return beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(source, row, reason, detail, raw))


def keep(where: Mapping[str, str], data: Mapping) -> bool:
    """The `where` filter: every named column has the given value."""
    return all(_as_text(data.get(k)) == v for k, v in where.items())


def _as_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


class ReadFileFn(beam.DoFn):
    """path -> SourceRow | dead letters, for one input spec (file format, split, where, clean_html)."""

    def __init__(self, spec: InputSpec, options: PreprocessOptions):
        self._spec, self._opt = spec, options

    def setup(self):
        self._rows = Metrics.counter(NAMESPACE, "rows_read")

    def process(self, path: str):
        fmt = self._spec.format
        with FileSystems.open(path) as handle:  # compression from the extension (.gz, .bz2, ...)
            lines = read_lines(handle, self._opt.max_line_bytes)
            records = (self._text(path, lines) if fmt == "text" else self._jsonl(path, lines) if fmt == "jsonl"
                       else self._csv(path, lines))
            for record in records:
                if isinstance(record, SourceRow):
                    if not keep(self._spec.where, record.data):
                        continue
                    self._rows.inc()
                yield record

    def _row(self, path: str, number: int, data: dict) -> SourceRow:
        return SourceRow(path, number, self._spec.split, data, self._spec.clean_html)

    # ---- plain text

    def _text(self, path: str, lines: Iterator[Line]):
        unit = self._opt.text_unit
        if unit == "line":
            for line in lines:
                yield from self._text_unit(path, [line])
            return
        chunk: list[Line] = []
        size = 0
        for line in lines:
            if unit == "paragraph" and not line.data.strip() and not line.too_long:
                yield from self._text_unit(path, chunk, size)
                chunk, size = [], 0
                continue
            size += len(line.data)
            if size <= self._opt.max_document_bytes or not chunk:
                chunk.append(line)  # past the limit only the count grows: the document is rejected
        yield from self._text_unit(path, chunk, size)

    def _text_unit(self, path: str, chunk: list[Line], size: int = 0):
        if not chunk:
            return
        start = chunk[0].number
        raw = b"".join(line.data for line in chunk)
        if size > self._opt.max_document_bytes:
            yield dead(path, start, "document_too_long", f"document of lines {start}-{chunk[-1].number}+ is over "
                       f"max_document_bytes={self._opt.max_document_bytes}", raw[:1024])
            return
        for line in chunk:
            problem = line_problem(line, self._opt.max_line_bytes)
            if problem:
                yield dead(path, start, problem[0], f"{problem[1]} (line {line.number})", raw)
                return
        if not raw.strip():
            return  # blank lines separate documents; they are not documents
        try:
            yield self._row(path, start, {self._opt.text_field: raw.decode("utf-8")})
        except UnicodeDecodeError as e:
            yield dead(path, start, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", raw)

    # ---- JSON lines

    def _jsonl(self, path: str, lines: Iterator[Line]):
        for number, line, too_long in lines:
            problem = line_problem(Line(number, line, too_long), self._opt.max_line_bytes)
            if problem:
                yield dead(path, number, problem[0], problem[1], line)
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield dead(path, number, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", line)
                continue
            except json.JSONDecodeError as e:
                yield dead(path, number, "malformed_json", f"malformed JSON ({e.msg} at column {e.colno})", line)
                continue
            except (RecursionError, ValueError) as e:  # nesting too deep; an integer over Python's digit limit
                yield dead(path, number, "malformed_json", f"unreadable JSON ({type(e).__name__}: "
                           f"{str(e)[:120]})", line[:1024])
                continue
            if not isinstance(value, dict):
                yield dead(path, number, "malformed_json", f"a JSON line must be an object, got "
                           f"{type(value).__name__}", line)
                continue
            yield self._row(path, number, value)

    # ---- CSV / TSV

    def _csv(self, path: str, lines: Iterator[Line]):
        records = CsvRecords(lines, self._opt, tsv=self._spec.format == "tsv")
        header = None
        for item in records:
            if isinstance(item, Reject):
                yield _dead(path, item)
                continue
            record, fields = item
            if header is None:
                header = fields
                if any(_has_surrogates(h) for h in header) or len(set(header)) != len(header) or not header:
                    raise PreprocessError(f"{path}: the first line must be a header of distinct UTF-8 column "
                                          f"names, got {header[:10]!r}")
            elif not fields:
                continue  # blank line
            elif len(fields) != len(header):
                for reject in records.reject(record, "malformed_csv", f"expected {len(header)} columns, "
                                             f"got {len(fields)}"):
                    yield _dead(path, reject)
            elif any(_has_surrogates(f) for f in fields):
                yield dead(path, record[0].number, "invalid_utf8", "invalid UTF-8", b"".join(x.data for x in record))
            else:
                yield self._row(path, record[0].number, dict(zip(header, fields)))


def _dead(path: str, reject: Reject) -> beam.pvalue.TaggedOutput:
    return dead(path, reject.row, reject.reason, reject.detail, reject.raw)


_SURROGATES = re.compile("[\ud800-\udfff]")  # surrogateescape'd bad bytes, or lone surrogates


def _has_surrogates(text: str) -> bool:
    return bool(_SURROGATES.search(text))


class _MemoryRows(beam.DoFn):
    def __init__(self, where: Mapping[str, str]):
        self._where = where

    def process(self, row: SourceRow):
        if keep(self._where, row.data):
            Metrics.counter(NAMESPACE, "rows_read").inc()
            yield row


def _tfds_row(example: Mapping, source: str, split: str, spec: InputSpec):
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
    if keep(spec.where, data):
        Metrics.counter(NAMESPACE, "rows_read").inc()
        yield SourceRow(source, row, split, data, spec.clean_html)


def _from_numpy(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_from_numpy(v) for v in value]
    return value


class Document(NamedTuple):
    """A row's text, normalized (what the corpus and vocabulary steps tokenize)."""
    source: str
    row: int | None
    split: str | None
    text: str


class _TextOf(beam.DoFn):
    """SourceRow -> Document (the text field, normalized) | dead letter."""

    def __init__(self, column: str):
        self._column = column

    def process(self, row: SourceRow):
        text, bad = text_field(row, self._column, row.clean_html)
        yield bad if bad is not None else Document(row.source, row.row, row.split, text)


class ReadRows(beam.PTransform):
    """Resolved inputs -> {"rows": SourceRow, "dead": DeadLetter} PCollections;
    with `text_field`, "rows" holds `Document`s of that field instead (the
    corpus and vocabulary steps), and rows without usable text go to "dead".

    Rows are reshuffled after reading, so the work downstream spreads over all
    workers even when one file held everything."""

    def __init__(self, inputs: Sequence[ResolvedInput], options: PreprocessOptions, text_field: str | None = None):
        super().__init__()
        self._inputs, self._opt, self._text = list(inputs), options, text_field

    def expand(self, pbegin):
        rows, deads = [], []
        for i, item in enumerate(self._inputs):
            spec = item.spec
            label = f"Read{i}_{spec.format}"
            if spec.format == "memory":
                key = self._opt.text_field
                name = f"memory:{spec.split}" if spec.split else "memory"
                source = [SourceRow(name, n, spec.split, dict(r) if isinstance(r, Mapping) else {key: r},
                                    spec.clean_html) for n, r in enumerate(spec.rows)]
                rows.append(pbegin | label >> beam.Create(source, reshuffle=False)
                            | f"{label}_filter" >> beam.ParDo(_MemoryRows(spec.where)))
                continue
            if spec.format == "tfds":
                import tensorflow_datasets as tfds

                for split in item.tfds_splits:
                    name = f"tfds:{spec.path}:{split}"
                    out = (pbegin | f"{label}_{split}" >> tfds.beam.ReadFromTFDS(item.builder, split=split)
                           | f"{label}_{split}_np" >> beam.Map(tfds.as_numpy)
                           | f"{label}_{split}_rows" >> beam.FlatMap(
                               _tfds_row, name, spec.split or split, spec).with_outputs(DEAD_TAG, main="rows"))
                    rows.append(out.rows)
                    deads.append(out[DEAD_TAG])
                continue
            out = (pbegin | f"{label}_files" >> beam.Create(item.files)
                   | f"{label}_read" >> beam.ParDo(ReadFileFn(spec, self._opt)).with_outputs(DEAD_TAG, main="rows"))
            rows.append(out.rows)
            deads.append(out[DEAD_TAG])
        all_rows = rows | "FlattenRows" >> beam.Flatten() if len(rows) > 1 else rows[0]
        if self._text is not None:
            texts = all_rows | "TextOf" >> beam.ParDo(_TextOf(self._text)).with_outputs(DEAD_TAG, main="rows")
            all_rows = texts.rows
            deads.append(texts[DEAD_TAG])
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
    if "\x00" in value:
        return None, dead(row.source, row.row, "nul_byte", f"field {column!r} holds a NUL character", value)
    value = normalize_text(value, clean_html)
    if not value:
        return None, dead(row.source, row.row, "empty_text", f"field {column!r} is empty")
    return value, None
