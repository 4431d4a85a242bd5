"""In-graph GPT-1 BPE encoding with core TF ops only (tensorflow_text is not even needed).

No tf.py_function / numpy_function, so the op set is what the stock TF
Serving binary has. Layout of `TokenizerLayer.call`:

    texts --(text.tf_split_words)--> raw words --(word cache)--> ids
                                         \\-- misses: unique -> char map -> BPE loop -> ids

* Word cache: a StaticHashTable from whole words to a row of a constant
  ragged id table, precomputed in Python at construction. Most running
  words hit it, so the common path costs one hash lookup per word.
* BPE fallback for the rest: one `tf.while_loop` over all unique missing
  words at once. Each iteration merges, in every word, all occurrences of that
  word's lowest-ranked pair, left to right without overlap (for runs like
  `a a a` of a pair `(a, a)` that means every second position), exactly as
  the original `bpe()`; the loop ends when no word has a ranked pair left.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import keras
import tensorflow as tf

from gpt_keras.tokenizer.text import get_rules, tf_normalize_words, tf_split_words
from gpt_keras.tokenizer.vocab_io import EOW

_NO_RANK = 2**31 - 1  # rank of a pair that is not a merge


def _table(keys, values, key_dtype, value_dtype, default):
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(keys, key_dtype), tf.constant(values, value_dtype))
    return tf.lookup.StaticHashTable(init, default_value=default)


class TokenizerLayer(keras.layers.Layer):
    """Keras layer (also a plain trackable) that encodes strings to ragged ids.

    The lookup tables are tracked resources, so a `tf.Module` or Keras model
    that owns this layer exports them into its SavedModel; the word-cache ids
    are graph constants. Build it with `GPTTokenizer.graph_layer()`.

    Call: `layer(texts, max_length=None)`; `texts` a string scalar or 1-D
    tensor (or Python str / list of str). Returns int32 ids: a RaggedTensor
    [batch, (tokens)] for 1-D input, a 1-D Tensor for a scalar.
    """

    def __init__(self, tokens: Sequence[str], ranks: Mapping[tuple[str, str], int], unk_id: int,
                 mode: str, cache: Mapping[str, Sequence[int]], name: str = "gpt_bpe_tokenizer", **kwargs):
        super().__init__(name=name, dtype="int32", autocast=False, trainable=False, **kwargs)
        self._convert_input_args = False  # keep tf.string tensors as they are
        self._allow_non_tensor_positional_args = True  # accept Python strings
        self.mode = mode
        self.unk_id = int(unk_id)
        get_rules(mode)  # validates the mode
        with tf.init_scope():  # tables are created eagerly even if first used inside a tf.function
            self._vocab = _table(list(tokens), list(range(len(tokens))), tf.string, tf.int32, self.unk_id)
            pairs = sorted(ranks.items(), key=lambda kv: kv[1])
            self._ranks = _table([f"{a} {b}" for (a, b), _ in pairs] or [" "], [r for _, r in pairs] or [_NO_RANK],
                                 tf.string, tf.int32, _NO_RANK)
            cmap = sorted(get_rules(mode).char_map.items())
            self._charmap = _table([k for k, _ in cmap], [v for _, v in cmap], tf.string, tf.string, "")
            words = sorted(cache)
            self._cache = _table(words or [""], list(range(len(words))) or [-1], tf.string, tf.int64, -1)
            lengths = [len(cache[w]) for w in words]
            self._cache_values = tf.constant([i for w in words for i in cache[w]], tf.int32)
            self._cache_splits = tf.math.cumsum(tf.constant([0] + lengths, tf.int64))
        self.cache_size = len(words)
        self.built = True

    def cache_lookup(self, words: tf.Tensor) -> tf.Tensor:
        """Row of each raw word in the word cache, -1 when it is not cached."""
        return self._cache.lookup(words)

    def compute_output_spec(self, *args, **kwargs):  # Keras functional API: ragged int32 ids
        return keras.KerasTensor((None, None), dtype="int32", ragged=True)

    def call(self, texts, max_length: int | None = None):
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        rank = texts.shape.rank
        if rank not in (0, 1):
            raise ValueError(f"tokenizer input must be a string scalar or a 1-D string tensor; got shape "
                             f"{texts.shape}. Reshape to [batch] first.")
        ids = self._encode_batch(tf.reshape(texts, [-1]))
        if max_length is not None:
            ids = ids[:, :max_length]
        return ids[0] if rank == 0 else ids

    def _encode_batch(self, texts: tf.Tensor) -> tf.RaggedTensor:
        words = tf_split_words(texts, self.mode)  # [batch, (words)]
        flat = words.flat_values
        rows = self.cache_lookup(flat)  # row in the cache id table, -1 = miss
        miss_pos = tf.where(rows < 0)[:, 0]
        unique, where = tf.unique(tf.gather(flat, miss_pos), out_idx=tf.int64)
        fresh = self._bpe(tf_normalize_words(unique, self._charmap))  # [unique, (ids)]
        n_cache = tf.shape(self._cache_splits, out_type=tf.int64)[0] - 1
        rows = tf.tensor_scatter_nd_update(rows, miss_pos[:, None], where + n_cache)
        bank = tf.RaggedTensor.from_row_splits(
            tf.concat([self._cache_values, fresh.values], 0),
            tf.concat([self._cache_splits, fresh.row_splits[1:] + self._cache_splits[-1]], 0), validate=False)
        per_word = tf.gather(bank, rows)  # [words, (ids)]
        # Compose the two partitions: batch -> words -> ids becomes batch -> ids.
        return tf.RaggedTensor.from_row_splits(
            per_word.values, tf.gather(per_word.row_splits, words.row_splits), validate=False)

    def _bpe(self, words: tf.Tensor) -> tf.RaggedTensor:
        """BPE of a 1-D tensor of non-empty normalized words -> [words, (ids)]."""
        chars = tf.strings.unicode_split(words, "UTF-8")
        seg = tf.cast(chars.value_rowids(), tf.int32)  # word index of each symbol
        n_words = tf.cast(chars.nrows(), tf.int32)
        tokens = chars.flat_values
        is_last = tf.not_equal(seg, tf.concat([seg, [-1]], 0)[1:])
        tokens = tf.where(is_last, tf.strings.join([tokens, "</w>"]), tokens)

        def merge_step(tokens, seg, _):
            nxt = tf.concat([tokens, [""]], 0)[1:]
            same_word = tf.equal(seg, tf.concat([seg, [-1]], 0)[1:])
            rank = tf.where(same_word, self._ranks.lookup(tf.strings.join([tokens, nxt], " ")), _NO_RANK)
            best = tf.math.unsorted_segment_min(rank, seg, n_words)
            hit = (rank < _NO_RANK) & tf.equal(rank, tf.gather(best, seg))
            # Non-overlapping occurrences: in a run of consecutive hits (only
            # possible for a pair (a, a)) take every second one from the left.
            starts = hit & ~tf.concat([[False], hit], 0)[:-1]
            run = tf.cumsum(tf.cast(starts, tf.int32))  # 1-based run number (0 before the first run)
            run_start = tf.gather(tf.concat([[0], tf.cast(tf.where(starts)[:, 0], tf.int32)], 0), run)
            offset = tf.range(tf.size(tokens)) - run_start
            take = hit & tf.equal(offset % 2, 0)
            keep = ~tf.concat([[False], take], 0)[:-1]  # drop the right half of each merge
            merged = tf.where(take, tf.strings.join([tokens, nxt]), tokens)
            return tf.boolean_mask(merged, keep), tf.boolean_mask(seg, keep), tf.reduce_any(take)

        tokens, seg, _ = tf.while_loop(
            lambda t, s, go: go, merge_step, (tokens, seg, tf.size(tokens) > 0),
            shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]), tf.TensorShape([])))
        return tf.RaggedTensor.from_value_rowids(self._vocab.lookup(tokens), tf.cast(seg, tf.int64),
                                                 nrows=tf.cast(n_words, tf.int64), validate=False)


class GraphDecoder(tf.Module):
    """In-graph `GPTTokenizer.decode` (skip_special_tokens=True): ids -> text.

    Tokens are joined, `</w>` becomes a space and one trailing space is
    dropped, exactly as the Python method (tests compare the two)."""

    def __init__(self, tokens: Sequence[str], n_special: int):
        super().__init__(name="decoder")
        # Specials decode to "" (skipped); the table is a graph constant.
        self._pieces = tf.constant([t.replace(EOW, " ") for t in tokens] + [""] * n_special)

    def __call__(self, ids: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """[batch, n] int ids, [batch] valid lengths -> [batch] strings."""
        ids = tf.clip_by_value(ids, 0, tf.shape(self._pieces)[0] - 1)
        ragged = tf.RaggedTensor.from_tensor(ids, lengths=lengths)
        text = tf.strings.reduce_join(tf.gather(self._pieces, ragged), axis=-1)
        return tf.strings.regex_replace(text, r" \z", "")  # \z: the very end (RE2)
