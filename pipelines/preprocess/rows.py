"""What every step passes on: rows as read, the documents of their text,
dead letters for the records that must be rejected, and the checks of a text field.

A record read becomes a `SourceRow` (source, row, split, data) or a
`DeadLetter` (source, row, reason, detail, raw); `row` is the 1-based line
where the record starts in a file, the list index for in-memory rows, or the
`idx` feature for TFDS (`pipelines.preprocess.readers`).
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.preprocess.stats import NAMESPACE

DEAD_TAG = "dead"
RAW_KEPT = 64 * 1024  # characters of a rejected record's raw text kept in the dead letter


class SourceRow(NamedTuple):
    """A record as read: its columns (`data`), where it came from, and what its input asks for."""
    source: str
    row: int | None
    split: str | None  # a split given with the input, or None (hash split later)
    data: dict
    clean_html: bool = False  # the input asks for <br /> -> newline in its text fields


class DeadLetter(NamedTuple):
    """A rejected record: one line of `dead_letter.jsonl`."""
    source: str
    row: int | None
    reason: str   # a short code: malformed_csv, malformed_json, missing_field, empty_text, invalid_utf8, ...
    detail: str   # human-readable explanation and a snippet of the row
    raw: str | None = None  # the rejected record as read (up to RAW_KEPT characters)

    def to_json(self) -> str:
        """The dead letter file's line for this record."""
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


class Document(NamedTuple):
    """A row's text, normalized (what the corpus and vocabulary steps tokenize)."""
    source: str
    row: int | None
    split: str | None
    text: str


# --------------------------------------------------------------------------- text fields

_SURROGATES = re.compile("[\ud800-\udfff]")  # surrogateescape'd bad bytes, or lone surrogates


def has_surrogates(text: str) -> bool:
    """Whether `text` holds bad bytes (decoded with surrogateescape) or lone surrogates."""
    return bool(_SURROGATES.search(text))


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


def text_field(row: SourceRow, column: str,
               clean_html: bool) -> tuple[str, None] | tuple[None, beam.pvalue.TaggedOutput]:
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
    if has_surrogates(value):
        return None, dead(row.source, row.row, "invalid_utf8", f"field {column!r} holds invalid UTF-8 / surrogates")
    if "\x00" in value:
        return None, dead(row.source, row.row, "nul_byte", f"field {column!r} holds a NUL character", value)
    value = normalize_text(value, clean_html)
    if not value:
        return None, dead(row.source, row.row, "empty_text", f"field {column!r} is empty")
    return value, None
