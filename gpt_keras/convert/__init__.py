"""Checkpoint conversion: the original OpenAI GPT-1 release and HF `openai-gpt`,
into and out of the project's model directory (`gpt_keras.saving`).

    from gpt_keras.convert import convert_checkpoint, load_checkpoint
    convert_checkpoint("openai_release/", "models/gpt1", n_head=12)   # -> a model directory
    backbone, tokenizer, fmt = load_checkpoint("hf_openai_gpt/")       # any format, as it is

Command line: `python -m gpt_keras.convert {import,export-hf,export-original} SRC DST`.

* `original`: the OpenAI release layout (`params_*.npy`), read and written;
* `hf`: HF `openai-gpt` (`config.json` + safetensors), read and exported;
* `state`: the backbone as arrays under HF names, which both formats use;
* `vocab`: their vocabulary files, checked against the token embedding;
* here: the format-independent entry points below. `convert_checkpoint`
  adds the special-token rows, drawn N(0, 0.02) with a seed, when the source
  lacks them, as the paper's fine-tuning does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gpt_keras import saving
from gpt_keras.convert import hf, original
from gpt_keras.convert.state import ConversionError
from gpt_keras.convert.vocab import VocabularyMismatchError, find_vocab, load_tokenizer
from gpt_keras.model import GPTBackbone, with_special_tokens
from gpt_keras.saving import PathLike, detect_format

__all__ = ["ConversionError", "VocabularyMismatchError", "load_any", "load_checkpoint", "convert_checkpoint"]


def load_any(path: PathLike, **kwargs: Any) -> GPTBackbone:
    """A backbone from a directory in any supported format (kwargs go to the format's loader)."""
    fmt = detect_format(path)
    if fmt == "gpt_keras":
        return saving.load_backbone(path)
    return (original.load_original if fmt == "original" else hf.load_hf)(path, **kwargs)


def load_checkpoint(src: PathLike, *, n_head: int | None = None, include_vocab: bool = True,
                    tokenizer_mode: str | None = None) -> tuple[GPTBackbone, Any, str]:
    """(backbone, tokenizer or None, format) of a checkpoint directory in any
    supported format, as it is (no special-token rows added).

    The tokenizer is the checkpoint's own vocabulary, checked against the
    embedding. Its mode defaults to the source's text handling: "original"
    (`text_standardize`, what the OpenAI release was trained on) for the
    original layout, "hf" for HF, the recorded mode for gpt_keras directories.
    """
    fmt = detect_format(src)
    if fmt == "gpt_keras":
        if n_head is not None and n_head != saving.read_config(src).n_head:
            raise ConversionError(f"n_head={n_head} was requested, but {src} has "
                                  f"n_head={saving.read_config(src).n_head}")
        backbone = saving.load_backbone(src)
        tokenizer = saving.load_tokenizer(src) if include_vocab else None
        if tokenizer is not None and tokenizer_mode and tokenizer.mode != tokenizer_mode:
            raise ConversionError(f"tokenizer_mode={tokenizer_mode!r} was requested, but {src} records "
                                  f"mode {tokenizer.mode!r}")
        return backbone, tokenizer, fmt
    vocab = find_vocab(src) if include_vocab else None
    if fmt == "original":
        backbone = original.load_original(src, n_head=n_head, check_vocab=include_vocab)
    else:
        backbone = hf.load_hf(src, check_vocab=include_vocab)
        if n_head is not None and n_head != backbone.config.n_head:
            raise ConversionError(f"n_head={n_head} was requested, but {src}/config.json has "
                                  f"n_head={backbone.config.n_head}")
    # The loader (check_vocab) made vocab_size the files' largest id + 1, which is the tokenizer's n_vocab.
    tokenizer = load_tokenizer(*vocab, mode=tokenizer_mode or fmt) if vocab else None
    return backbone, tokenizer, fmt


def convert_checkpoint(src: PathLike, dst: PathLike, *, n_head: int | None = None,
                       add_special_tokens: bool = True, seed: int = 0, include_vocab: bool = True,
                       tokenizer_mode: str | None = None) -> Path:
    """Convert an original-release or HF directory into the project format.

    Checks the vocabulary (if present and `include_vocab`) against the
    embedding, adds the special-token rows (N(0, 0.02), `seed`) unless the
    source has them or `add_special_tokens` is False, and saves config,
    weights and vocabulary. `tokenizer_mode` defaults to the source's own
    text handling: "original" for the OpenAI release, "hf" for HF.
    """
    if detect_format(src) == "gpt_keras":
        raise ConversionError(f"{src} is already in the gpt_keras format")
    backbone, tokenizer, _ = load_checkpoint(src, n_head=n_head, include_vocab=include_vocab,
                                             tokenizer_mode=tokenizer_mode)
    vocab = find_vocab(src) if include_vocab else None
    if add_special_tokens:
        backbone = with_special_tokens(backbone, seed=seed)
    return saving.save_model(backbone, dst, tokenizer, vocabulary_format=vocab[0] if vocab else "original")
