"""Label vocabularies of classification-like tasks.

Labels are names or integers. With `label_names` given, a label matching a
name takes its index, else an integer label in range is the index itself; any
other label is rejected (`unknown_label`). Without `label_names` (and no TFDS
ClassLabel) the vocabulary is derived from the data: sorted numerically when
every label is an integer, else alphabetically. One `postive` among
thousands of `positive` is a typo, not a third class: a label seen fewer than
`min_label_count` times gets a warning (`rare_labels="warn"`, the default), or
is left out and its rows rejected (`rare_label`, with `rare_labels="reject"`).
The counts of every label are in the run's stats and printed summary.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import apache_beam as beam

from pipelines.preprocess import stats as st
from pipelines.preprocess.rows import DEAD_TAG, dead

log = logging.getLogger(__name__)


def int_like(value: Any) -> int | None:
    """An int, or a string of one, as that int; anything else (bools too) None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def derive_label_names(keys: Sequence[str]) -> list[str]:
    """Sorted distinct labels: numerically if all are integers, else as strings."""
    keys = sorted(set(keys))
    if keys and all(int_like(k) is not None for k in keys):
        return [str(k) for k in sorted({int_like(k) for k in keys})]
    return keys


def label_index(raw: Any, names: Sequence[str]) -> int | None:
    """A name's index, else an in-range integer, else None (unknown)."""
    key = str(raw).strip()
    if key in names:
        return list(names).index(key)
    i = int_like(raw)
    return i if i is not None and 0 <= i < len(names) else None


class RejectRareLabels(beam.DoFn):
    """Task rows whose label was seen fewer than `min_count` times -> dead letter (+ a COUNT event)."""

    def __init__(self, min_count: int):
        self._min = min_count

    def process(self, row, counts):
        seen = dict(counts).get(str(row.label), 0)
        if seen >= self._min:
            yield row
            return
        yield beam.pvalue.TaggedOutput("events", st.Event(st.COUNT, label=f"rare_label:{row.label}"))
        yield dead(row.source, row.row, "rare_label", f"label {row.label!r} is seen only {seen} time(s), "
                           f"fewer than min_label_count={self._min}: a typo? Fix the label, give label_names, or "
                           f"lower min_label_count")


def derive(rows: beam.PCollection, min_count: int):
    """(rows with a frequent label, the derived label names as a one-element
    PCollection, [dead letters], [events]) for task rows without label_names."""
    counts = (rows | "LabelKeys" >> beam.Map(lambda r: str(r.label))
              | "CountLabels" >> beam.combiners.Count.PerElement() | "AllLabelCounts" >> beam.combiners.ToList())
    names = counts | "Derive" >> beam.Map(lambda c: derive_label_names([k for k, n in c if n >= min_count]))
    kept = rows | "RareLabels" >> beam.ParDo(RejectRareLabels(min_count), beam.pvalue.AsSingleton(counts)).with_outputs(
        DEAD_TAG, "events", main="rows")
    return kept.rows, names, [kept[DEAD_TAG]], [kept.events]


def warn_rare(summary: Mapping[str, Any], min_count: int, verbose: bool = True) -> list[str]:
    """Warns (log, and stdout when verbose) about written labels seen fewer than `min_count` times; returns them."""
    rare = sorted(name for name, n in summary.get("labels", {}).items() if n < min_count)
    if rare:
        counts = ", ".join(f"{k}={v}" for k, v in summary["labels"].items())
        message = (f"label(s) {rare} are seen fewer than min_label_count={min_count} times and became classes "
                   f"(label counts: {counts}). A typo? Fix the data, give label_names, or reject them with "
                   f"rare_labels='reject' (--rare_labels reject).")
        log.warning(message)
        if verbose:
            print(f"  WARNING {message}", flush=True)
    return rare
