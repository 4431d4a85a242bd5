"""Physical lines under a size limit, and CSV/TSV records that re-synchronise
after a broken one.

`read_lines` never holds more than `max_line_bytes` of one line (the rest of
an over-long line is skipped as it streams by) and drops a UTF-8 byte-order
mark at the start of the file. `CsvRecords` feeds those lines to `csv.reader`
one record at a time and remembers the lines of the record being parsed: a
record that is bad as a whole (a quote never closed, more than
`max_record_lines` lines or `max_record_bytes` bytes, a bad line inside it, a
wrong column count over several lines) costs only its first line, which is
rejected; its other lines are read again as new records. So one stray quote
rejects one line, not the rest of the file.
"""
from __future__ import annotations

import collections
import csv
import sys
from typing import Iterator, NamedTuple

from pipelines.preprocess.options import PreprocessOptions

BOM = b"\xef\xbb\xbf"


class Line(NamedTuple):
    number: int       # 1-based physical line number
    data: bytes       # the line with its newline; only the first max_line_bytes of a longer one
    too_long: bool    # the line exceeded max_line_bytes (the rest was skipped, never held in memory)


class Reject(NamedTuple):
    """A record to send to the dead letter (the reader adds the source)."""
    row: int
    reason: str
    detail: str
    raw: bytes


def read_lines(handle, max_line_bytes: int, block: int = 1 << 20) -> Iterator[Line]:
    """Physical lines of a binary stream, each held to `max_line_bytes`; a
    UTF-8 byte-order mark at the start of the file is dropped."""
    buffer, number, skipping, first, head = b"", 0, False, True, b""
    while True:
        chunk = handle.read(block)
        if first:
            chunk, first = (chunk[len(BOM):] if chunk.startswith(BOM) else chunk), False
        if not chunk:
            if buffer or skipping:
                number += 1
                yield Line(number, buffer[:max_line_bytes], skipping or len(buffer) > max_line_bytes)
            return
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            number += 1
            line = buffer[start:end + 1]
            yield Line(number, line[:max_line_bytes], skipping or len(line) > max_line_bytes)
            skipping, start = False, end + 1
        buffer = buffer[start:]
        if len(buffer) > max_line_bytes:  # an over-long line: keep its head, skip the rest
            if not skipping:
                head, skipping = buffer[:max_line_bytes], True
            buffer = head


def line_problem(line: Line, limit: int) -> tuple[str, str] | None:
    """(reason, detail) when a line must be rejected on its own: too long, or holding a NUL byte."""
    if line.too_long:
        return "line_too_long", f"line longer than max_line_bytes={limit}"
    if b"\x00" in line.data:
        return "nul_byte", f"NUL byte at byte {line.data.index(0)}"
    return None


class _Broken(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class CsvRecords:
    """Iterates (lines, fields) per CSV/TSV record, or `Reject`s; see the module docstring.

    `reject(record, reason, detail)` is for a record the caller finds bad
    (e.g. the wrong number of columns): it is handled the same way."""

    def __init__(self, lines: Iterator[Line], options: PreprocessOptions, tsv: bool = False):
        csv.field_size_limit(sys.maxsize)  # records are bounded by max_record_bytes instead
        self._lines, self._opt, self._tsv = lines, options, tsv
        self._replay: collections.deque[Line] = collections.deque()
        self._record: list[Line] = []
        self._bytes = 0
        self._done = False

    def __iter__(self):
        while not (self._done and not self._replay):
            reader = (csv.reader(self._feed(), delimiter="\t", quoting=csv.QUOTE_NONE) if self._tsv  # GLUE-style
                      else csv.reader(self._feed(), strict=True))
            yield from self._parse(reader)

    def _feed(self) -> Iterator[str]:
        while True:
            line = self._replay.popleft() if self._replay else next(self._lines, None)
            if line is None:
                self._done = True
                return
            self._record.append(line)
            self._bytes += len(line.data)
            problem = line_problem(line, self._opt.max_line_bytes)
            if problem:
                raise _Broken(*problem)
            if len(self._record) > self._opt.max_record_lines:
                raise _Broken("broken_record", f"a quoted field spans more than max_record_lines="
                              f"{self._opt.max_record_lines} lines")
            if self._bytes > self._opt.max_record_bytes:
                raise _Broken("broken_record", f"a record is over max_record_bytes={self._opt.max_record_bytes}")
            # surrogateescape keeps bad bytes recoverable: rows holding them are rejected, not the file
            yield line.data.decode("utf-8", "surrogateescape")

    def _parse(self, reader):
        """Records from one csv.reader, until a reject that needs a fresh reader."""
        while True:
            self._record, self._bytes = [], 0
            try:
                fields = next(reader)
            except StopIteration:
                return
            except _Broken as e:
                record, bad = self._record, self._record[-1]
                if e.reason == "broken_record":
                    yield from self.reject(record, e.reason, e.detail)
                else:
                    if len(record) > 1:  # a bad line inside a multi-line record: the record's first line goes too
                        yield from self.reject(record[:-1], "broken_record", "the record is cut by a bad line")
                    yield Reject(bad.number, e.reason, e.detail, bad.data)
                return
            except csv.Error as e:
                yield from self.reject(self._record, "malformed_csv", f"malformed CSV row ({e})")
                return
            yield self._record, fields

    def reject(self, record: list[Line], reason: str, detail: str) -> list[Reject]:
        first = record[0]
        if len(record) > 1:
            self._replay.extendleft(reversed(record[1:]))
            detail = (f"{detail} (lines {first.number}-{record[-1].number}; line {first.number} rejected, "
                      f"reading resumes at line {first.number + 1})")
        return [Reject(first.number, reason, detail, first.data)]
