"""Reading: the inputs of a run -> rows, and bad records to the dead letter.

`ReadInputs` is the start of every job (vocabulary, corpus, task): it reads
files, TFDS datasets and in-memory rows into `SourceRow`s (or `Document`s of
one text field) and `DeadLetter`s (`pipelines.preprocess.rows`). Every
physical line of a file is accounted for: it is part of a row, rejected with
its line number and raw text, or a blank line / CSV header. Files are opened
through Beam's `FileSystems`, so `gs://` works on Dataflow; each file is read
by one worker (that is what gives exact line numbers), so shard big inputs
into many files. Inputs are described in `pipelines.preprocess.inputs`, the
limits in `PreprocessOptions`.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.preprocess.errors import PreprocessError
from pipelines.preprocess.inputs import InputSpec, ResolvedInput, parse_inputs, resolve_inputs
from pipelines.preprocess.lines import CsvRecords, Line, Reject, line_problem, read_lines
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.rows import (DEAD_TAG, Document, SourceRow, dead, has_surrogates, keep,
                                       text_field)
from pipelines.preprocess.stats import NAMESPACE

# One input's part of the read: its row PCollections and its dead-letter PCollections.
_Branches = tuple[list[beam.PCollection], list[beam.PCollection]]


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
                if any(has_surrogates(h) for h in header) or len(set(header)) != len(header) or not header:
                    raise PreprocessError(f"{path}: the first line must be a header of distinct UTF-8 column "
                                          f"names, got {header[:10]!r}")
            elif not fields:
                continue  # blank line
            elif len(fields) != len(header):
                for reject in records.reject(record, "malformed_csv", f"expected {len(header)} columns, "
                                             f"got {len(fields)}"):
                    yield _dead(path, reject)
            elif any(has_surrogates(f) for f in fields):
                yield dead(path, record[0].number, "invalid_utf8", "invalid UTF-8", b"".join(x.data for x in record))
            else:
                yield self._row(path, record[0].number, dict(zip(header, fields)))


def _dead(path: str, reject: Reject) -> beam.pvalue.TaggedOutput:
    return dead(path, reject.row, reject.reason, reject.detail, reject.raw)


class _MemoryRows(beam.DoFn):
    """In-memory rows through the `where` filter, counted as the files' rows are."""

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


class _TextOf(beam.DoFn):
    """SourceRow -> Document (the text field, normalized) | dead letter."""

    def __init__(self, column: str):
        self._column = column

    def process(self, row: SourceRow):
        text, bad = text_field(row, self._column, row.clean_html)
        yield bad if bad is not None else Document(row.source, row.row, row.split, text)


class Read(NamedTuple):
    """What `ReadInputs` gives a job: the rows (or documents) and the records it rejected."""
    rows: beam.PCollection
    dead: beam.PCollection


class ReadInputs(beam.PTransform):
    """The start of every job: inputs -> `Read(rows, dead)`.

    Made on the driver, it parses the inputs (strings, `InputSpec`s, rows, or
    {split: inputs}; the options' `where` and `clean_html` added to each) and
    resolves them at once: a glob that matches nothing or a TFDS dataset that
    is not prepared fails here, before any Beam work. `specs` and `resolved`
    are for the job's metadata and split plan.

    "rows" holds `SourceRow`s; with `text_field`, `Document`s of that field
    instead (the corpus and vocabulary jobs), and rows without usable text go
    to "dead". Rows are reshuffled after reading, so the work downstream
    spreads over all workers even when one file held everything."""

    def __init__(self, inputs: Any, options: PreprocessOptions, text_field: str | None = None):
        super().__init__()
        self.specs = parse_inputs(inputs, options.where, options.clean_html)
        self.resolved = resolve_inputs(self.specs, options.tfds_data_dir)
        self._opt, self._text = options, text_field

    @property
    def sources(self) -> list[str]:
        """The inputs as the metadata names them."""
        return [spec.describe() for spec in self.specs]

    def expand(self, pbegin: beam.pvalue.PBegin) -> Read:
        rows, deads = [], []
        for i, item in enumerate(self.resolved):
            read = {"memory": self._memory, "tfds": self._tfds}.get(item.spec.format, self._files)
            item_rows, item_deads = read(pbegin, f"Read{i}_{item.spec.format}", item)
            rows += item_rows
            deads += item_deads
        all_rows = rows | "FlattenRows" >> beam.Flatten() if len(rows) > 1 else rows[0]
        if self._text is not None:
            texts = all_rows | "TextOf" >> beam.ParDo(_TextOf(self._text)).with_outputs(DEAD_TAG, main="rows")
            all_rows = texts.rows
            deads.append(texts[DEAD_TAG])
        if not deads:
            deads = [pbegin | "NoReadErrors" >> beam.Create([])]
        return Read(all_rows | "Spread" >> beam.Reshuffle(), deads | "FlattenReadErrors" >> beam.Flatten())

    def _memory(self, pbegin: beam.pvalue.PBegin, label: str, item: ResolvedInput) -> _Branches:
        """In-memory rows (a string is {text_field: string}); reading them rejects nothing."""
        spec, key = item.spec, self._opt.text_field
        name = f"memory:{spec.split}" if spec.split else "memory"
        source = [SourceRow(name, n, spec.split, dict(r) if isinstance(r, Mapping) else {key: r}, spec.clean_html)
                  for n, r in enumerate(spec.rows)]
        rows = (pbegin | label >> beam.Create(source, reshuffle=False)
                | f"{label}_filter" >> beam.ParDo(_MemoryRows(spec.where)))
        return [rows], []

    def _tfds(self, pbegin: beam.pvalue.PBegin, label: str, item: ResolvedInput) -> _Branches:
        """Each TFDS split through `tfds.beam`; a feature that is not UTF-8 rejects its example."""
        import tensorflow_datasets as tfds  # imports TensorFlow: only jobs that read TFDS pay for it

        rows, deads = [], []
        for split in item.tfds_splits:
            name = f"tfds:{item.spec.path}:{split}"
            out = (pbegin | f"{label}_{split}" >> tfds.beam.ReadFromTFDS(item.builder, split=split)
                   | f"{label}_{split}_np" >> beam.Map(tfds.as_numpy)
                   | f"{label}_{split}_rows" >> beam.FlatMap(
                       _tfds_row, name, item.spec.split or split, item.spec).with_outputs(DEAD_TAG, main="rows"))
            rows.append(out.rows)
            deads.append(out[DEAD_TAG])
        return rows, deads

    def _files(self, pbegin: beam.pvalue.PBegin, label: str, item: ResolvedInput) -> _Branches:
        """The files of a glob, each read by one worker (`ReadFileFn`)."""
        out = (pbegin | f"{label}_files" >> beam.Create(item.files)
               | f"{label}_read" >> beam.ParDo(ReadFileFn(item.spec, self._opt)).with_outputs(DEAD_TAG, main="rows"))
        return [out.rows], [out[DEAD_TAG]]
