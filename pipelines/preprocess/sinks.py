"""Outputs shared by the jobs: the output directory, sharded compressed
TFRecords per split, and `Finish` (the dead letter, the stats and the report)."""
from __future__ import annotations

import os
from typing import Any, Mapping, NamedTuple, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from gpt_keras import schema
from pipelines.preprocess import stats as st
from pipelines.preprocess.readers import Read
from pipelines.preprocess.rows import DeadLetter

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


class JobOutputs(NamedTuple):
    """What a job hands to `Finish`: its read, the files it wrote, and the
    dead letters and stats events of its own steps (tuples: Beam takes a
    tuple, not a list, as a transform's input)."""
    read: Read
    written: beam.PCollection  # the names of the files the job wrote: the report waits for them
    dead: tuple[beam.PCollection, ...] = ()
    events: tuple[beam.PCollection, ...] = ()


class Finish(beam.PTransform):
    """The end of every job: `JobOutputs` -> `dead_letter.jsonl`, the stats,
    and the report (`stats.WriteReport`: stats.json, the checks, metadata.json).

    Every row read counts as input, once: the rows `ReadInputs` passed on and
    the records it rejected. The report runs after the job's writes, so that
    metadata.json is only written once the records are. `label_names`, a
    one-element PCollection, fills in labels derived from the data."""

    def __init__(self, out_dir: str, kind: str, split_fractions: Mapping[str, float | None], max_length: int,
                 max_bad_fraction: float, metadata: dict | None = None,
                 label_names: beam.PCollection | None = None):
        super().__init__()
        self._out, self._max_length = out_dir, max_length
        self._report = st.WriteReport(out_dir, kind, split_fractions, max_length, max_bad_fraction, metadata)
        self._label_names = label_names

    def expand(self, job: JobOutputs):
        dead = (job.read.dead, *job.dead) | "AllDeadLetters" >> beam.Flatten()
        (dead | "DeadToJson" >> beam.Map(DeadLetter.to_json)
         | "WriteDeadLetters" >> beam.io.WriteToText(st.join(self._out, "dead_letter"), file_name_suffix=".jsonl",
                                                       num_shards=1, shard_name_template=""))
        events = [
            job.read.rows | "InputEvents" >> beam.Map(lambda _: st.Event(st.INPUT)),
            job.read.dead | "ReaderInputEvents" >> beam.Map(lambda _: st.Event(st.INPUT)),
            dead | "DeadEvents" >> beam.Map(lambda d: st.Event(st.DEAD, label=d.reason)),
            *job.events,
        ]
        raw = events | "AllEvents" >> beam.Flatten() | "Stats" >> beam.CombineGlobally(st.StatsFn(self._max_length))
        side: dict[str, Any] = {"written_files": beam.pvalue.AsList(job.written)}
        if self._label_names is not None:
            side["label_names"] = beam.pvalue.AsSingleton(self._label_names)
        return raw | "WriteReport" >> beam.ParDo(self._report, **side)
