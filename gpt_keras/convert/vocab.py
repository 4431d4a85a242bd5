"""Vocabulary files of foreign checkpoints, and how they fit the token embedding.

HF: `vocab.json` + `merges.txt`. Original release: `encoder*.json` + `*.bpe`.
The embedding is the source of truth. A vocabulary's size is its largest id
plus one: several strings may share one id (the allennlp fixture maps
`<unk>` to 0, so its 51 entries cover ids 0..49 and fit 50 rows). Then:

* size == token rows: plain LM, `n_special=0`;
* size + 3 == token rows: the trailing 3 rows are `_start_`, `_delimiter_`,
  `_classify_` (`n_special=3`, as the paper and our HF export lay them out);
* anything else, in particular ids beyond the embedding, is an error
  (`VocabularyMismatchError`): such ids could never be embedded, and the
  special-token ids (`n_vocab + k`) would land on the wrong rows.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from gpt_keras.config import SPECIAL_TOKENS
from gpt_keras.convert.state import ConversionError
from gpt_keras.saving import PathLike

if TYPE_CHECKING:
    from gpt_keras.tokenizer import GPTTokenizer

log = logging.getLogger(__name__)


class VocabularyMismatchError(ConversionError):
    """The vocabulary files do not fit the token embedding."""


def find_vocab(path: PathLike) -> tuple[str, Path, Path] | None:
    """(format, encoder, merges) of the vocabulary files in `path`, or None.

    HF: `vocab.json` + `merges.txt`. Original: `encoder*.json` + `*.bpe`
    (`encoder_bpe_40000.json`/`vocab_40000.bpe` in the release, other names
    elsewhere).
    """
    path = Path(path)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return "hf", path / "vocab.json", path / "merges.txt"
    encoders = sorted(path.glob("encoder*.json"))
    merges = sorted(path.glob("*.bpe"))
    if not encoders and not merges:
        return None
    if len(encoders) != 1 or len(merges) != 1:
        raise ConversionError(f"Expected one encoder*.json and one *.bpe vocabulary file in {path}, found "
                              f"{[p.name for p in encoders]} and {[p.name for p in merges]}")
    return "original", encoders[0], merges[0]


def vocab_size_of(encoder_path: PathLike) -> int:
    """BPE ids of an encoder JSON ({token: id}): largest id + 1, since aliases
    share ids; special tokens stored as the last ids are not counted."""
    with open(encoder_path, encoding="utf-8") as f:
        encoder = json.load(f)
    if not isinstance(encoder, dict) or not encoder:
        raise ConversionError(f"{encoder_path} is not a non-empty {{token: id}} JSON object")
    size = max(int(i) for i in encoder.values()) + 1
    special_ids = sorted(int(encoder[t]) for t in SPECIAL_TOKENS if t in encoder)
    if special_ids == list(range(size - len(SPECIAL_TOKENS), size)):
        size -= len(SPECIAL_TOKENS)
    return size


def split_special_rows(n_rows: int, n_vocab: int, source: str = "checkpoint") -> int:
    """n_special for a token embedding of `n_rows` and a vocabulary of `n_vocab` ids."""
    n_special = n_rows - n_vocab
    if n_special in (0, len(SPECIAL_TOKENS)):
        return n_special
    hint = ("the vocabulary has ids the embedding cannot hold" if n_special < 0
            else f"only 0 or {len(SPECIAL_TOKENS)} extra (special-token) rows are understood")
    raise VocabularyMismatchError(
        f"The vocabulary has {n_vocab} ids but the {source} token embedding has {n_rows} rows: {hint}. "
        "Use the vocabulary files that belong to these weights.")


def load_tokenizer(fmt: str, encoder: Path, merges: Path, mode: str) -> "GPTTokenizer | None":
    """The project tokenizer for these files, or None if `gpt_keras.tokenizer` is unavailable."""
    try:
        from gpt_keras.tokenizer import GPTTokenizer  # lazy: weights work without it
    except ImportError as err:
        log.warning("gpt_keras.tokenizer is not importable (%s); vocabulary files are copied as is.", err)
        return None
    load = GPTTokenizer.from_hf if fmt == "hf" else GPTTokenizer.from_original
    try:
        return load(str(encoder), str(merges), mode=mode)
    except (ValueError, OSError) as err:
        raise ConversionError(f"The vocabulary files {encoder.name} + {merges.name} cannot be loaded by the "
                              f"project tokenizer: {err} (convert the weights alone with include_vocab=False / "
                              "--no-vocab)") from err


def n_special_for(path: PathLike, n_rows: int, n_special: int | None, check_vocab: bool) -> int:
    """n_special: explicit, else implied by vocabulary files in `path`, else 0."""
    vocab = find_vocab(path) if check_vocab else None
    if vocab is not None:
        implied = split_special_rows(n_rows, vocab_size_of(vocab[1]))
        if n_special is not None and n_special != implied:
            raise VocabularyMismatchError(f"n_special={n_special} was requested, but the vocabulary in {path} "
                                          f"and the {n_rows}-row embedding imply n_special={implied}")
        return implied
    n_special = 0 if n_special is None else int(n_special)
    if n_special not in (0, len(SPECIAL_TOKENS)):
        raise ConversionError(f"n_special={n_special}: gpt_keras models have 0 or {len(SPECIAL_TOKENS)} "
                              f"special-token rows {SPECIAL_TOKENS}")
    return n_special
