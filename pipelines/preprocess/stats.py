"""Statistics, the metadata/stats files, the bad-row threshold and the summary.

Every step counts what it does in Beam counters under NAMESPACE (the
summary's `counters`) and emits small `Event`s; one CombineFn folds those into
the stats dict (documents, tokens, sequences, length histograms, labels,
truncation, rejects by reason). `WriteReport` then writes `stats.json`, checks that the counts add
up and that the rejected share is within `max_bad_fraction`, and only then
writes `metadata.json` (so a failed run leaves no usable metadata).
"""
from __future__ import annotations

import bisect
import json
from typing import Any, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from gpt_keras import schema
from pipelines.preprocess.errors import PreprocessError

NAMESPACE = "gpt_keras.preprocess"  # Beam counter namespace
INPUT, DEAD, DOC, SEQ, COUNT = "input", "dead", "doc", "seq", "count"


class Event(NamedTuple):
    kind: str                       # INPUT | DEAD | DOC | SEQ | COUNT
    split: str | None = None
    lengths: tuple[int, ...] = ()   # DOC: (tokens,); SEQ: length of each sequence of the record
    label: str | None = None        # SEQ: label name; DEAD: reason; COUNT: counter name
    truncated: bool = False
    target: float | None = None     # SEQ, regression


def histogram_edges(max_length: int) -> list[int]:
    """Upper bucket edges: powers of two below max_length, then max_length."""
    edges, e = [], 1
    while e < max_length:
        edges.append(e)
        e *= 2
    return edges + [max_length]


def _bucket(edges: Sequence[int], length: int) -> str:
    i = bisect.bisect_left(edges, length)
    return f"<={edges[i]}" if i < len(edges) else f">{edges[-1]}"


def _merge(into: dict, other: Mapping) -> dict:
    for key, value in other.items():
        if isinstance(value, Mapping):
            _merge(into.setdefault(key, {}), value)
        elif key == "target_min":
            into[key] = min(into.get(key, value), value)
        elif key == "target_max":
            into[key] = max(into.get(key, value), value)
        else:
            into[key] = into.get(key, 0) + value
    return into


class StatsFn(beam.CombineFn):
    """Events -> raw stats dict (see `finalize_stats` for the published form)."""

    def __init__(self, max_length: int):
        self._edges = histogram_edges(max_length)

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, e: Event) -> dict:
        if e.kind == INPUT:
            acc["input"] = acc.get("input", 0) + 1
        elif e.kind == DEAD:
            _merge(acc, {"rejected": {e.label: 1}})
        elif e.kind == COUNT:
            _merge(acc, {"extra": {e.label: 1}})
        elif e.kind == DOC:
            _merge(acc, {"splits": {e.split: {"documents": 1, "document_tokens": sum(e.lengths),
                                              "document_length_histogram": {_bucket(self._edges, sum(e.lengths)): 1}}}})
        else:
            hist: dict[str, int] = {}
            for n in e.lengths:
                b = _bucket(self._edges, n)
                hist[b] = hist.get(b, 0) + 1
            split = {"sequences": 1, "sequence_tokens": sum(e.lengths), "sequence_length_histogram": hist,
                     "truncated": int(e.truncated)}
            if e.label is not None:
                split["labels"] = {e.label: 1}
            if e.target is not None:
                split.update(target_sum=e.target, target_min=e.target, target_max=e.target)
            _merge(acc, {"splits": {e.split: split}})
        return acc

    def merge_accumulators(self, accumulators) -> dict:
        out: dict = {}
        for acc in accumulators:
            _merge(out, acc)
        return out

    def extract_output(self, acc: dict) -> dict:
        return acc


def finalize_stats(raw: Mapping, kind: str, split_names: Sequence[str], edges: Sequence[int]) -> dict:
    """The stats.json content: counts, rejects by reason, per-split stats with
    sorted histograms, and totals."""
    order = {f"<={e}": i for i, e in enumerate(edges)}

    def hist(h: Mapping) -> dict:
        return dict(sorted(h.items(), key=lambda kv: order.get(kv[0], len(order))))

    splits = {}
    for name in list(split_names) + sorted(set(raw.get("splits", {})) - set(split_names)):
        s = dict(raw.get("splits", {}).get(name, {}))
        out = {k: s.get(k, 0) for k in ("documents", "document_tokens", "sequences", "sequence_tokens", "truncated")}
        out["document_length_histogram"] = hist(s.get("document_length_histogram", {}))
        out["sequence_length_histogram"] = hist(s.get("sequence_length_histogram", {}))
        if "labels" in s:
            out["labels"] = dict(sorted(s["labels"].items()))
        if "target_sum" in s and s.get("sequences"):
            out["target"] = {"mean": s["target_sum"] / s["sequences"], "min": s["target_min"],
                             "max": s["target_max"]}
        splits[name] = out
    rejected = dict(sorted(raw.get("rejected", {}).items()))
    written = sum(s["documents"] for s in splits.values())
    return {
        "kind": kind,
        "counts": {"input": raw.get("input", 0), "written": written, "rejected": sum(rejected.values()),
                   "records": sum(s["sequences"] for s in splits.values())},
        "rejected_by_reason": rejected,
        "totals": {k: sum(s[k] for s in splits.values())
                   for k in ("documents", "document_tokens", "sequences", "sequence_tokens", "truncated")},
        "splits": splits,
        **({"extra": dict(sorted(raw["extra"].items()))} if raw.get("extra") else {}),
    }


def write_json(path: str, value: Any) -> None:
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8"))


def read_json(path: str) -> Any:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name) if "://" in directory else directory.rstrip("/") + "/" + name


class WriteReport(beam.DoFn):
    """Raw stats -> stats.json (+ metadata.json); enforces max_bad_fraction.

    `metadata` holds the static DatasetMetadata fields (None for the vocabulary
    step); splits, counts and derived label names are filled in here. The
    `written_files` side input only orders this step after the record writes."""

    def __init__(self, out_dir: str, kind: str, split_fractions: Mapping[str, float | None],
                 max_length: int, max_bad_fraction: float, metadata: dict | None):
        self._out, self._kind = out_dir, kind
        self._fractions = dict(split_fractions)
        self._edges = histogram_edges(max_length)
        self._max_bad = max_bad_fraction
        self._metadata = metadata

    def process(self, raw: dict, written_files=(), label_names=None):
        stats = finalize_stats(raw, self._kind, list(self._fractions), self._edges)
        write_json(join(self._out, schema.STATS_FILENAME), stats)
        c = stats["counts"]
        if c["input"] != c["written"] + c["rejected"]:
            raise PreprocessError(f"internal error: {c['input']} rows in but {c['written']} written + "
                                  f"{c['rejected']} rejected; please report this")
        if c["input"] == 0:
            raise PreprocessError("the inputs hold no rows (after any --where filter)")
        bad = c["rejected"] / c["input"]
        if bad > self._max_bad:
            reasons = ", ".join(f"{k}: {v}" for k, v in stats["rejected_by_reason"].items())
            raise PreprocessError(
                f"{c['rejected']} of {c['input']} input rows ({bad:.1%}) were rejected ({reasons}), more than "
                f"max_bad_fraction={self._max_bad:g}. See {join(self._out, schema.DEAD_LETTER_FILENAME)} for each "
                f"row and reason; fix the input or raise --max_bad_fraction.")
        if c["written"] == 0:
            raise PreprocessError("no rows were written")
        if self._metadata is not None:
            values = dict(self._metadata)
            if values.get("label_names") is None and label_names is not None:
                values["label_names"] = list(label_names)
            values["counts"] = dict(c)
            values["splits"] = {name: {"records": stats["splits"][name]["sequences"],
                                       "rows": stats["splits"][name]["documents"], "fraction": fraction}
                                for name, fraction in self._fractions.items()}
            try:
                metadata = schema.DatasetMetadata.from_dict(values)
            except ValueError as e:
                raise PreprocessError(f"cannot write {schema.METADATA_FILENAME}: {e}") from None
            write_json(join(self._out, schema.METADATA_FILENAME), metadata.to_dict())
        yield stats


def summarize(stats: Mapping, out_dir: str, seconds: float, counters: Mapping[str, int],
              extra: Mapping[str, Any] | None = None) -> dict:
    """The summary dict the run_* functions return: input/written/rejected/
    records/tokens at the top level, plus counts, totals, per-split figures,
    rejects by reason, Beam counters, timing."""
    tokens = stats["totals"]["document_tokens"]
    labels: dict[str, int] = {}
    for split in stats["splits"].values():
        for name, n in split.get("labels", {}).items():
            labels[name] = labels.get(name, 0) + n
    rare = {k.split(":", 1)[1]: v for k, v in stats.get("extra", {}).items() if k.startswith("rare_label:")}
    return {"out_dir": out_dir, "kind": stats["kind"], **stats["counts"], "tokens": tokens, "counts": stats["counts"],
            "rejected_by_reason": stats["rejected_by_reason"], "totals": stats["totals"],
            "splits": {k: {"documents": v["documents"], "tokens": v["document_tokens"], "sequences": v["sequences"]}
                       for k, v in stats["splits"].items()},
            "seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
            "counters": dict(counters), "dead_letter": join(out_dir, schema.DEAD_LETTER_FILENAME),
            **({"labels": dict(sorted(labels.items()))} if labels else {}), **({"rare_labels": rare} if rare else {}),
            **(extra or {})}


def format_summary(summary: Mapping) -> str:
    c = summary["counts"]
    lines = [f"[preprocess] {summary['kind']} -> {summary['out_dir']} in {summary['seconds']:.1f}s "
             f"({summary['tokens_per_second'] or 0:,.0f} tokens/s)",
             f"  rows: {c['input']} in = {c['written']} written + {c['rejected']} rejected; {c['records']} records"]
    for name, s in summary["splits"].items():
        lines.append(f"  {name:>12}: {s['documents']} documents, {s['tokens']} tokens, {s['sequences']} sequences")
    if summary.get("labels"):
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in summary["labels"].items()))
    if summary.get("rare_labels"):
        lines.append("  WARNING rare labels rejected (typos?): " +
                     ", ".join(f"{k}={v}" for k, v in summary["rare_labels"].items()))
    if summary["rejected_by_reason"]:
        reasons = ", ".join(f"{k}={v}" for k, v in summary["rejected_by_reason"].items())
        lines.append(f"  rejected: {reasons} (see {summary['dead_letter']})")
    for key in ("vocab_fingerprint", "n_vocab"):
        if key in summary:
            lines.append(f"  {key}: {summary[key]}")
    return "\n".join(lines)
