"""`GPTTokenizer`: the one GPT-1 tokenizer (Python and TF graph encoders)."""
from __future__ import annotations

import numbers
from typing import Iterable, Sequence

from gpt_keras.config import SPECIAL_TOKENS
from gpt_keras.tokenizer import vocab_io
from gpt_keras.tokenizer.bpe import apply_bpe
from gpt_keras.tokenizer.text import get_rules, normalize_word, pretokenize
from gpt_keras.tokenizer.vocab_io import EOW

UNK_TOKEN = "<unk>"
_PY_CACHE_LIMIT = 200_000  # words; the Python word cache is cleared when it grows past this


class GPTTokenizer:
    """GPT-1 BPE tokenizer: vocabulary + merges + an encoding `mode`.

    Ids: BPE tokens 0..n_vocab-1 from the vocabulary, then the specials
    `_start_`, `_delimiter_`, `_classify_` at n_vocab, n_vocab+1, n_vocab+2.
    Padding is id 0 plus a mask (`pad`), never an extra id. A piece missing
    from the vocabulary encodes as `<unk>`'s id if the vocabulary has one,
    else 0 (as the original code). Text that spells a special token
    ("_start_") is encoded as ordinary text; specials only come from ids.

    Modes: "hf" (default) gives the ids of HF `OpenAIGPTTokenizer` on the same
    files; "original" follows the original release's `text_standardize` +
    a spaCy-like splitter. See docs/tokenizer.md.
    """

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]], mode: str = "hf"):
        get_rules(mode)  # fail fast on an unknown mode
        encoder = dict(encoder)
        merges = [tuple(m) for m in merges]
        vocab_io.validate_encoder(encoder)
        vocab_io.validate_merges(encoder, merges)
        clash = [t for t in SPECIAL_TOKENS if t in encoder]
        if clash:
            raise ValueError(f"the vocabulary already contains special token(s) {clash} (id {encoder[clash[0]]}); "
                             f"GPT-1 vocabulary files hold only BPE tokens and the specials {SPECIAL_TOKENS} are "
                             f"appended after them. Remove them from the vocabulary file.")
        if encoder and not any(t.endswith(EOW) for t in encoder):
            raise ValueError("no token ends with '</w>': this is not a GPT-1 (character BPE) vocabulary. "
                             "GPT-2 byte-level BPE files (encoder.json + vocab.bpe) are not supported.")
        self.mode = mode
        self.encoder = encoder
        self.merges = merges
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}  # duplicates keep the last rank
        self.decoder = [t for t, _ in sorted(encoder.items(), key=lambda kv: kv[1])]
        self.n_vocab = len(encoder)
        self.vocab_size = self.n_vocab + len(SPECIAL_TOKENS)
        self.special_ids = {t: self.n_vocab + i for i, t in enumerate(SPECIAL_TOKENS)}
        self.start_id, self.delimiter_id, self.classify_id = (self.special_ids[t] for t in SPECIAL_TOKENS)
        self.pad_id = 0
        self.unk_id = encoder.get(UNK_TOKEN, 0)
        self.fingerprint = vocab_io.fingerprint(encoder, merges)
        self._word_cache: dict[str, list[int]] = {}
        self._graph_layer = None

    def __getstate__(self) -> dict:
        # Picklable for Beam / multiprocessing: drop caches and TF resources,
        # which the receiving process rebuilds on first use.
        return {**self.__dict__, "_word_cache": {}, "_graph_layer": None}

    def __repr__(self) -> str:
        return (f"GPTTokenizer(n_vocab={self.n_vocab}, merges={len(self.merges)}, mode={self.mode!r}, "
                f"fingerprint={self.fingerprint[:12]}...)")

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, path: str, mode: str | None = None) -> "GPTTokenizer":
        """Loads a directory holding either format (HF names win if both).

        The encoding mode is the one recorded by `save` (`tokenizer.json`);
        directories without that file (third-party vocabularies) default to
        "hf". An explicit `mode` that contradicts the recorded one is an error:
        the same files would then give other ids than the model was trained on.
        """
        fmt, vocab_path, merges_path = vocab_io.find_files(path)
        recorded = vocab_io.read_tokenizer_info(path)
        if recorded and mode is not None and mode != recorded["mode"]:
            raise ValueError(f"{path}: this vocabulary was saved with tokenizer mode {recorded['mode']!r} "
                             f"({vocab_io.TOKENIZER_INFO}), but mode {mode!r} was asked for; drop the explicit "
                             "mode, or re-save the tokenizer in the mode you want")
        tokenizer = cls._from_paths(vocab_path, merges_path, mode or (recorded or {}).get("mode", "hf"))
        if recorded and recorded.get("fingerprint") not in (None, tokenizer.fingerprint):
            raise ValueError(f"{path}: the vocabulary files' fingerprint {tokenizer.fingerprint[:12]}... differs "
                             f"from the one recorded in {vocab_io.TOKENIZER_INFO} "
                             f"({recorded['fingerprint'][:12]}...): the files were changed after saving")
        return tokenizer

    @classmethod
    def from_original(cls, encoder_path: str, bpe_path: str, mode: str = "hf") -> "GPTTokenizer":
        """Loads `encoder_bpe_40000.json` + `vocab_40000.bpe` style files (any names)."""
        return cls._from_paths(encoder_path, bpe_path, mode)

    @classmethod
    def from_hf(cls, vocab_path: str, merges_path: str, mode: str = "hf") -> "GPTTokenizer":
        """Loads HF `vocab.json` + `merges.txt` files (any names)."""
        return cls._from_paths(vocab_path, merges_path, mode)

    @classmethod
    def _from_paths(cls, vocab_path: str, merges_path: str, mode: str) -> "GPTTokenizer":
        encoder = vocab_io.read_encoder(vocab_path)
        merges = vocab_io.read_merges(merges_path)
        vocab_io.validate_merges(encoder, merges, source=f"merges file '{merges_path}' (vocabulary '{vocab_path}')")
        return cls(encoder, merges, mode)

    def save(self, directory: str, format: str = "original") -> tuple[str, str]:
        """Writes the vocabulary: format "original" -> `encoder_bpe_<M>.json` +
        `vocab_<M>.bpe` (M = number of merges, 40000 for the paper's files);
        "hf" -> `vocab.json` + `merges.txt`. Beside them, `tokenizer.json`
        records the encoding mode and fingerprint, so that `load` encodes text
        the same way. Returns the two vocabulary paths."""
        paths = vocab_io.write_files(directory, self.encoder, self.merges, format)
        vocab_io.write_tokenizer_info(directory, {"mode": self.mode, "fingerprint": self.fingerprint,
                                                  "vocabulary_format": format, "n_vocab": self.n_vocab})
        return paths

    # ------------------------------------------------------------- Python

    def _word_ids(self, word: str) -> list[int]:
        ids = self._word_cache.get(word)
        if ids is None:
            if len(self._word_cache) >= _PY_CACHE_LIMIT:
                self._word_cache.clear()
            ids = [self.encoder.get(t, self.unk_id) for t in apply_bpe(word, self.ranks)]
            self._word_cache[word] = ids
        return ids

    def tokenize(self, text: str | bytes) -> list[str]:
        """Text -> BPE token strings (with `</w>` markers)."""
        return [self.decoder[i] if i < self.n_vocab else UNK_TOKEN for i in self.encode(text)]

    def encode(self, text: str | bytes, max_length: int | None = None) -> list[int]:
        """Text (str, or bytes decoded as UTF-8 with U+FFFD for bad bytes) -> ids."""
        ids = [i for word in pretokenize(text, self.mode) for i in self._word_ids(word)]
        return ids if max_length is None else ids[:max_length]

    def encode_batch(self, texts: Iterable[str | bytes], max_length: int | None = None) -> list[list[int]]:
        """`encode` over a batch."""
        return [self.encode(t, max_length) for t in texts]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Ids -> text: tokens joined, `</w>` -> space (as HF's BPEDecoder).

        Specials are dropped, or with `skip_special_tokens=False` written as
        their names between spaces. Padding must be removed by the caller
        (id 0 is a real token)."""
        if hasattr(ids, "numpy"):
            ids = ids.numpy()
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        parts = []
        for i in ids:
            if not isinstance(i, numbers.Integral) or not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i!r} is out of range for this tokenizer (vocab_size={self.vocab_size}).")
            i = int(i)
            if i < self.n_vocab:
                parts.append(self.decoder[i])
            elif not skip_special_tokens:
                parts.append(f"{SPECIAL_TOKENS[i - self.n_vocab]}{EOW}")
        text = "".join(parts).replace(EOW, " ")
        return text[:-1] if text.endswith(" ") else text

    # ---------------------------------------------------------------- graph

    def cache_words(self) -> list[str]:
        """Words the graph encoder precomputes: every vocabulary token `w</w>`
        whose `w` is already normalized (so a raw word equal to it needs no
        further normalization). Everything else goes through in-graph BPE."""
        return [t[:-len(EOW)] for t in self.decoder
                if t.endswith(EOW) and len(t) > len(EOW) and " " not in t
                and normalize_word(t[:-len(EOW)], self.mode) == t[:-len(EOW)]]

    def graph_layer(self, extra_cache_words: Iterable[str] = (), use_cache: bool = True):
        """A new `TokenizerLayer` (Keras layer holding the lookup tables as
        tracked resources); `layer(texts, max_length=None)` == `tf_encode`.

        `extra_cache_words` (e.g. the most frequent training words) are
        precomputed too; they must be normalized words, others are ignored.
        `use_cache=False` sends every word through in-graph BPE (for tests)."""
        from gpt_keras.tokenizer.graph import TokenizerLayer

        words = set(self.cache_words()) if use_cache else set()
        words.update(w for w in extra_cache_words if w and " " not in w and normalize_word(w, self.mode) == w)
        cache = {w: self._word_ids(w) for w in sorted(words)}
        return TokenizerLayer(self.decoder, self.ranks, self.unk_id, self.mode, cache)

    def graph_decoder(self):
        """A `tf.Module`: `decoder(ids [batch, n], lengths [batch])` -> text
        [batch], the in-graph `decode(ids, skip_special_tokens=True)`."""
        from gpt_keras.tokenizer.graph import GraphDecoder

        return GraphDecoder(self.decoder, len(self.special_ids))

    def tf_encode(self, texts, max_length: int | None = None):
        """Graph op: string scalar or [batch] tensor -> int32 ids (1-D Tensor,
        or RaggedTensor [batch, (tokens)]). Works eagerly, in tf.function and
        in tf.data.map; the tables are built once, on first use."""
        if self._graph_layer is None:
            self._graph_layer = self.graph_layer()
        return self._graph_layer(texts, max_length=max_length)



def count_words(texts: Iterable[str | bytes], mode: str = "hf"):
    """Counts pre-tokenized, normalized words (the input of `train_bpe`).

    The Beam pipeline can run this per shard and sum the Counters."""
    from gpt_keras.tokenizer.bpe import count_pretokenized

    return count_pretokenized(pretokenize(t, mode) for t in texts)


def train_bpe(word_counts, num_merges: int, min_frequency: int = 2, mode: str = "hf",
              unk_token: str | None = UNK_TOKEN) -> GPTTokenizer:
    """Learns a GPT-1 vocabulary from word counts (see `bpe.learn_merges`).

    Vocabulary order: `unk_token` at id 0 (when given; then "unknown" and the
    padding id coincide), base symbols by frequency, then merge results in
    merge order. Deterministic: the same counts give identical files."""
    from gpt_keras.tokenizer.bpe import learn_merges

    if num_merges < 0:
        raise ValueError(f"num_merges must be >= 0, got {num_merges}")
    base, merges = learn_merges(word_counts, num_merges, min_frequency)
    tokens = ([unk_token] if unk_token else []) + base + [a + b for a, b in merges]
    encoder: dict[str, int] = {}
    for t in tokens:
        encoder.setdefault(t, len(encoder))  # a merge may rebuild an existing token
    return GPTTokenizer(encoder, merges, mode)
