"""Vocabulary job: Beam counts words over the corpus, then the tokenizer's BPE
trainer learns merges from those counts, so a pipeline can start from raw text.

The graph, top to bottom: `ReadInputs` (documents of the text field) ->
batches -> `count_words` per batch (the same pre-tokenization as encoding) ->
sum per word -> `word_counts-*.jsonl` (["word", count] per line) -> `Finish`.
The driver then runs `train_bpe` (single process: BPE learning is
sequential) and saves the vocabulary files next to the counts, in `out_dir`.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from gpt_keras import schema
from gpt_keras.tokenizer import GPTTokenizer, count_words, train_bpe
from pipelines.preprocess import stats as st
from pipelines.preprocess.inputs import local_path
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.readers import ReadInputs
from pipelines.preprocess.rows import DEAD_TAG, Document, dead
from pipelines.preprocess.runner import execute
from pipelines.preprocess.sinks import VOCAB_FILES, Finish, JobOutputs
from pipelines.preprocess.stats import NAMESPACE

KIND_VOCABULARY = "vocabulary"
SAVE_FORMATS = ("original", "hf")
_HISTOGRAM_MAX = 1024  # words per document histogram: the last bucket is ">1024"


class CountWords(beam.DoFn):
    """A batch of documents -> (word, count) pairs summed over the batch."""

    def __init__(self, mode: str):
        self._mode = mode

    def setup(self):
        self._docs = Metrics.counter(NAMESPACE, "documents")

    def process(self, batch: Sequence[Document]):
        total: Counter = Counter()
        for source, row, _, text in batch:
            counts = count_words([text], self._mode)
            n = sum(counts.values())
            if not n:
                yield dead(source, row, "no_tokens", "the text has no words after normalization", text)
                continue
            self._docs.inc()
            total.update(counts)
            yield beam.pvalue.TaggedOutput("events", st.Event(st.DOC, "all", (n,)))
        yield from total.items()


def read_word_counts(directory: str) -> dict[str, int]:
    """The word counts a vocabulary run wrote."""
    counts: dict[str, int] = {}
    for m in FileSystems.match([st.join(directory, "word_counts-*")])[0].metadata_list:
        with FileSystems.open(m.path) as f:
            for line in f.read().decode("utf-8").splitlines():
                if line:
                    word, n = json.loads(line)
                    counts[word] = counts.get(word, 0) + n
    return counts


def _save(tokenizer: GPTTokenizer, out_dir: str, save_format: str) -> list[str]:
    if "://" not in out_dir:
        return list(tokenizer.save(out_dir, format=save_format))
    with tempfile.TemporaryDirectory() as local:
        paths = []
        for path in tokenizer.save(local, format=save_format):
            target = st.join(out_dir, os.path.basename(path))
            with open(path, "rb") as src, FileSystems.create(target) as dst:
                dst.write(src.read())
            paths.append(target)
        return paths


def run_vocab(inputs: Any, out_dir: str, num_merges: int, pipeline_args: Sequence[str] | None = None, *,
              options: PreprocessOptions | None = None, min_frequency: int = 2, save_format: str = "original") -> dict:
    """Counts words with Beam and trains a BPE vocabulary of `num_merges` merges
    into `out_dir` (loadable with `GPTTokenizer.load(out_dir)`).

    Inputs and `options` as `run_corpus`. Returns the summary dict, with
    `vocab_fingerprint`, `n_vocab` and `vocab_files` added.
    """
    options = options or PreprocessOptions()
    if not isinstance(num_merges, int) or num_merges < 0:
        raise ValueError(f"num_merges must be a non-negative int, got {num_merges!r}")
    if save_format not in SAVE_FORMATS:
        raise ValueError(f"save_format must be one of {SAVE_FORMATS}, got {save_format!r}")
    reading = ReadInputs(inputs, options, text_field=options.text_field)
    out_dir = local_path(out_dir)

    def build(p: beam.Pipeline) -> None:
        read = p | "Read" >> reading
        counted = (read.rows | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=options.batch_size)
                   | "Count" >> beam.ParDo(CountWords(options.mode)).with_outputs(DEAD_TAG, "events", main="words"))
        words = counted.words | "SumPerWord" >> beam.CombinePerKey(sum)
        written = (words | "ToJson" >> beam.Map(lambda kv: json.dumps(list(kv), ensure_ascii=False))
                   | "WriteCounts" >> beam.io.WriteToText(st.join(out_dir, "word_counts"), file_name_suffix=".jsonl"))
        distinct = words | "DistinctEvents" >> beam.Map(lambda _: st.Event(st.COUNT, label="distinct_words"))
        (JobOutputs(read, written, dead=(counted[DEAD_TAG],), events=(counted.events, distinct))
         | "Finish" >> Finish(out_dir, KIND_VOCABULARY, {"all": None}, _HISTOGRAM_MAX, options.max_bad_fraction))

    summary = execute(build, out_dir, options.overwrite, pipeline_args, verbose=False, owned=VOCAB_FILES)
    if summary.get("dry_run"):
        return summary
    tokenizer = train_bpe(read_word_counts(out_dir), num_merges, min_frequency=min_frequency, mode=options.mode)
    files = _save(tokenizer, out_dir, save_format)
    vocab = {"vocab_fingerprint": tokenizer.fingerprint, "n_vocab": tokenizer.n_vocab,
             "num_merges": len(tokenizer.merges), "vocab_files": files}
    stats_path = st.join(out_dir, schema.STATS_FILENAME)
    st.write_json(stats_path, {**st.read_json(stats_path), "vocabulary": vocab})
    summary.update(vocab)
    if options.verbose:
        print(st.format_summary(summary), flush=True)
    return summary
