"""Outputs shared by the pipelines: the output directory, sharded compressed
TFRecords per split, the dead letter, and the stats/metadata report."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from gpt_keras import schema
from pipelines.preprocess import stats as st
from pipelines.preprocess.readers import DeadLetter

# Files a run owns in its output directory (removed by overwrite=True).
RECORD_FILES = ("*" + schema.RECORD_SUFFIX, schema.METADATA_FILENAME, schema.STATS_FILENAME,
                schema.DEAD_LETTER_FILENAME)
VOCAB_FILES = ("word_counts-*", "encoder_bpe_*.json", "vocab_*.bpe", "vocab.json", "merges.txt",
               schema.STATS_FILENAME, schema.DEAD_LETTER_FILENAME)


def prepare_out_dir(out_dir: str, overwrite: bool, owned: Sequence[str] = RECORD_FILES) -> None:
    """Refuses to mix runs: shards of an earlier run with another shard count
    would be read together with the new ones."""
    existing = [m.path for pattern in owned
                for m in FileSystems.match([st.join(out_dir, pattern)])[0].metadata_list]
    if existing and not overwrite:
        raise FileExistsError(f"output directory {out_dir!r} already holds preprocessing output "
                              f"({os.path.basename(existing[0])}, ...); pass overwrite=True (--overwrite) to replace "
                              f"it")
    if existing:
        FileSystems.delete(existing)
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)


def split_plan(resolved, fractions: Mapping[str, float]) -> tuple[dict[str, float | None], bool]:
    """({split: hash fraction, or None for splits given with the input}, any hash split);
    split names are checked here, before any work."""
    kept = sorted({s for r in resolved for s in r.kept_splits})
    hashed = any(not r.kept_splits for r in resolved)
    plan = {**(dict(fractions) if hashed else {}), **{k: None for k in kept}}
    for name in plan:
        schema.shard_prefix(name)
    return plan, hashed


class WriteSplits(beam.PTransform):
    """(split, serialized example) -> GZIP TFRecord shards `<split>-SSSSS-of-NNNNN.tfrecord.gz`.

    Returns the written file names (used to order the report after the writes)."""

    def __init__(self, out_dir: str, split_names: Sequence[str], num_shards: int = 0):
        super().__init__()
        self._out, self._splits, self._shards = out_dir, list(split_names), num_shards

    def expand(self, records):
        index = {name: i for i, name in enumerate(self._splits)}
        parts = records | "BySplit" >> beam.Partition(lambda kv, n: index[kv[0]], len(self._splits))
        files = []
        for name, part in zip(self._splits, parts):
            files.append(part | f"Values_{name}" >> beam.Values() | f"Write_{name}" >> beam.io.WriteToTFRecord(
                st.join(self._out, schema.shard_prefix(name)), file_name_suffix=schema.RECORD_SUFFIX,
                num_shards=self._shards, compression_type=CompressionTypes.GZIP))
        return files | "WrittenFiles" >> beam.Flatten()


def write_dead_letters(dead: Sequence[beam.PCollection], out_dir: str):
    """All dead letters -> one `dead_letter.jsonl` (always written, maybe empty)."""
    return (dead | "AllDeadLetters" >> beam.Flatten()
            | "DeadToJson" >> beam.Map(DeadLetter.to_json)
            | "WriteDeadLetters" >> beam.io.WriteToText(st.join(out_dir, "dead_letter"), file_name_suffix=".jsonl",
                                                          num_shards=1, shard_name_template=""))


def dead_events(dead: Sequence[beam.PCollection], from_reader: beam.PCollection, rows: beam.PCollection):
    """INPUT events (rows read + rows the reader rejected) and DEAD events."""
    return [
        rows | "InputEvents" >> beam.Map(lambda _: st.Event(st.INPUT)),
        from_reader | "ReaderInputEvents" >> beam.Map(lambda _: st.Event(st.INPUT)),
        dead | "FlattenDead" >> beam.Flatten() | "DeadEvents" >> beam.Map(lambda d: st.Event(st.DEAD, label=d.reason)),
    ]


def report(events: Sequence[beam.PCollection], report_fn: st.WriteReport, max_length: int,
           written_files: beam.PCollection | None = None, label_names: beam.PCollection | None = None):
    """Events -> stats -> WriteReport, after the record writes."""
    raw = events | "AllEvents" >> beam.Flatten() | "Stats" >> beam.CombineGlobally(st.StatsFn(max_length))
    side: dict[str, Any] = {}
    if written_files is not None:
        side["written_files"] = beam.pvalue.AsList(written_files)
    if label_names is not None:
        side["label_names"] = beam.pvalue.AsSingleton(label_names)
    return raw | "WriteReport" >> beam.ParDo(report_fn, **side)
