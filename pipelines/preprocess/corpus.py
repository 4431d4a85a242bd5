"""Corpus -> pre-training TFRecords: packed windows of at most n_ctx tokens.

The graph, top to bottom: `ReadInputs` (documents of the text field) ->
tokenize in batches (the shared `GPTTokenizer`, built once per worker) ->
assign each document a split and a packing group from a sha256 of its text ->
per (split, group), order the documents by that hash, join them under the
boundary policy and cut the stream into n_ctx windows -> sharded GZIP
TFRecords per split -> `Finish`.

Document-boundary policy (GPT-1 has no end-of-text token and DESIGN.md fixes
exactly three specials, none of them for pre-training):
  * "newline": put the id of the newline token `\\n</w>` between consecutive
    documents. The original release's vocabulary ends with that token, so a
    model converted from it has seen it as a separator of text.
  * "concat": documents follow each other directly (contiguous text, as the
    paper's BooksCorpus stream).
  * "document": windows never cross a document; each document's last window
    is shorter (padded with a mask at read time).
  * "auto" (default): "newline" when the vocabulary has `\\n</w>`, else "concat".
    Vocabularies trained here in "hf" mode have no `\\n</w>` (newlines are
    whitespace), so auto means contiguous text for them.
No token is lost: every document token lands in exactly one window; only the
last window of each (split, group) -- or of each document -- is shorter than n_ctx.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from gpt_keras import schema
from pipelines.preprocess import stats as st
from pipelines.preprocess.inputs import local_path
from pipelines.preprocess.options import PreprocessOptions
from pipelines.preprocess.readers import ReadInputs
from pipelines.preprocess.rows import DEAD_TAG, Document, dead
from pipelines.preprocess.runner import execute
from pipelines.preprocess.sinks import Finish, JobOutputs, WriteSplits
from pipelines.preprocess.splits import SplitAssigner, content_digest, resolve_split_fractions, split_plan
from pipelines.preprocess.stats import NAMESPACE
from pipelines.preprocess.tokenizer import TokenizerDoFn, TokenizerSpec, load_tokenizer
from pipelines.preprocess.vocab import run_vocab

BOUNDARY_CHOICES = ("auto",) + schema.BOUNDARY_POLICIES


def resolve_boundary(policy: str, tokenizer) -> tuple[str, int | None]:
    """("newline" | "concat" | "document", separator id or None); fails fast
    when "newline" is asked for and the vocabulary has no `\\n</w>`."""
    if policy not in BOUNDARY_CHOICES:
        raise ValueError(f"boundary must be one of {BOUNDARY_CHOICES}, got {policy!r}")
    has_newline = schema.NEWLINE_TOKEN in tokenizer.encoder
    if policy == "auto":
        policy = "newline" if has_newline else "concat"
    if policy == "newline":
        if not has_newline:
            raise ValueError(f"boundary='newline' needs the token {schema.NEWLINE_TOKEN!r} in the vocabulary; this "
                             f"one has none. Use boundary='concat' or 'document'.")
        return policy, tokenizer.encoder[schema.NEWLINE_TOKEN]
    return policy, None


def pack_documents(documents: Iterable[Sequence[int]], n_ctx: int, policy: str,
                   separator: int | None = None) -> list[np.ndarray]:
    """Cuts documents (in order) into windows of at most n_ctx tokens.

    "document": each document on its own; otherwise one stream, with
    `separator` between documents for "newline"."""
    docs = [np.asarray(d, np.int64) for d in documents]
    if policy == "document":
        return [d[i:i + n_ctx] for d in docs for i in range(0, len(d), n_ctx)]
    if policy == "newline":
        sep = np.asarray([separator], np.int64)
        docs = [piece for i, d in enumerate(docs) for piece in ((sep, d) if i else (d,))]
    stream = np.concatenate(docs) if docs else np.zeros([0], np.int64)
    return [stream[i:i + n_ctx] for i in range(0, len(stream), n_ctx)]


class TokenizeDocuments(TokenizerDoFn):
    """A batch of documents -> ((split, group), (digest, int32 id bytes)).

    The digest (sha256 of salt + text) picks the split (unless the input gave
    one), the packing group, and the order inside the group, so the output is
    the same on every runner and run."""

    def __init__(self, tokenizer: TokenizerSpec, assigner: SplitAssigner, num_groups: int, salt: str):
        super().__init__(tokenizer)
        self._assign, self._groups, self._salt = assigner, num_groups, salt

    def setup(self):
        super().setup()
        self._docs = Metrics.counter(NAMESPACE, "documents")
        self._tokens = Metrics.counter(NAMESPACE, "tokens")

    def process(self, batch: Sequence[Document]):
        encoded = self.tokenizer.encode_batch([text for _, _, _, text in batch])
        for (source, row, split, text), ids in zip(batch, encoded):
            if not ids:
                yield dead(source, row, "no_tokens", "the text has no tokens after normalization", text)
                continue
            digest = content_digest([text], self._salt)
            split = split or self._assign(digest)
            group = int.from_bytes(digest[8:16], "big") % self._groups
            self._docs.inc()
            self._tokens.inc(len(ids))
            yield beam.pvalue.TaggedOutput("events", st.Event(st.DOC, split, (len(ids),)))
            yield (split, group), (digest, np.asarray(ids, np.int32).tobytes())


class PackWindows(beam.DoFn):
    """((split, group), documents) -> (split, serialized window) + SEQ events."""

    def __init__(self, n_ctx: int, policy: str, separator: int | None):
        self._n_ctx, self._policy, self._sep = n_ctx, policy, separator

    def setup(self):
        self._seqs = Metrics.counter(NAMESPACE, "sequences")

    def process(self, element):
        (split, _), docs = element
        docs = sorted(docs)  # by digest (ties: identical texts), independent of arrival order
        for window in pack_documents((np.frombuffer(ids, np.int32) for _, ids in docs), self._n_ctx,
                                     self._policy, self._sep):
            self._seqs.inc()
            yield beam.pvalue.TaggedOutput("events", st.Event(st.SEQ, split, (len(window),)))
            yield split, schema.encode_pretraining_example(window.tolist())


def run_corpus(inputs: Any, out_dir: str, vocab_dir: str | None = None, n_ctx: int = 512,
               val_fraction: float | None = 0.01, pipeline_args: Sequence[str] | None = None, *,
               options: PreprocessOptions | None = None, split_fractions: Mapping[str, float] | None = None,
               boundary: str = "auto", num_groups: int = 16, num_merges: int | None = None) -> dict:
    """Raw text -> pre-training TFRecords in `out_dir`; returns the summary dict.

    Args:
      inputs: globs/`InputSpec`s (see `pipelines.preprocess.inputs`), a list of
        them, in-memory rows (`memory_input`), or {split: inputs} to keep given splits.
      out_dir: output directory (local or gs://).
      vocab_dir: an existing vocabulary. Without it, `num_merges` trains one
        first with `run_vocab` into `out_dir/vocab`.
      n_ctx: window length (the model context).
      val_fraction: share of documents hashed into "validation" (the rest
        "train"); or `split_fractions` {name: fraction} for other splits.
      pipeline_args: Beam argv, e.g. ["--direct_num_workers=2",
        "--direct_running_mode=multi_processing"] or Dataflow options.
      options: how to read, check and run (`PreprocessOptions`; None: the defaults).
      boundary: document-boundary policy, see the module docstring.
      num_groups: packing groups per split; each holds ~1/num_groups of the
        split in one worker's memory, and leaves one short window.
    """
    options = options or PreprocessOptions()
    reading = ReadInputs(inputs, options, text_field=options.text_field)  # fails fast on missing inputs
    out_dir = local_path(out_dir)
    if not isinstance(n_ctx, int) or n_ctx < 1:
        raise ValueError(f"n_ctx must be a positive int, got {n_ctx!r}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    if boundary not in BOUNDARY_CHOICES:
        raise ValueError(f"boundary must be one of {BOUNDARY_CHOICES}, got {boundary!r}")
    fractions = resolve_split_fractions(None if split_fractions else val_fraction, split_fractions)
    split_info, hashed = split_plan(reading.resolved, fractions)
    if vocab_dir is None:
        if num_merges is None:
            raise ValueError("give vocab_dir (an existing vocabulary) or num_merges (to train one first)")
        vocab_dir = st.join(out_dir, "vocab")
        run_vocab(inputs, vocab_dir, num_merges, pipeline_args, options=options)
    tokenizer = load_tokenizer(vocab_dir, options.mode)  # fail fast on an unreadable vocabulary
    policy, separator = resolve_boundary(boundary, tokenizer)
    salt = options.split_salt
    metadata = {
        "kind": schema.KIND_PRETRAINING, "max_length": n_ctx,
        "vocab": dataclasses.asdict(schema.VocabInfo.from_tokenizer(tokenizer)),
        "boundary_policy": policy, "boundary_token_id": separator, "split_method": "hash" if hashed else "given",
        "split_salt": salt, "sources": reading.sources, "counts": {}, "splits": {},
    }
    spec = TokenizerSpec.from_tokenizer(tokenizer)

    def build(p: beam.Pipeline) -> None:
        read = p | "Read" >> reading
        tokenized = (read.rows | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=options.batch_size)
                     | "Tokenize" >> beam.ParDo(TokenizeDocuments(spec, SplitAssigner.create(fractions), num_groups,
                                                                  salt)).with_outputs(DEAD_TAG, "events", main="docs"))
        windows = (tokenized.docs | "GroupForPacking" >> beam.GroupByKey()
                   | "Pack" >> beam.ParDo(PackWindows(n_ctx, policy, separator)).with_outputs("events", main="records"))
        written = windows.records | "WriteRecords" >> WriteSplits(out_dir, list(split_info), options.num_shards)
        (JobOutputs(read, written, dead=(tokenized[DEAD_TAG],), events=(tokenized.events, windows.events))
         | "Finish" >> Finish(out_dir, schema.KIND_PRETRAINING, split_info, n_ctx, options.max_bad_fraction,
                              metadata))

    return execute(build, out_dir, options.overwrite, pipeline_args, options.verbose,
                   extra={"boundary_policy": policy, "vocab_fingerprint": tokenizer.fingerprint})
