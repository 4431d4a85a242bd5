"""`model.init_from`: start the pipeline from a released (or earlier) checkpoint.

The checkpoint (original OpenAI release, HF `openai-gpt`, or a gpt_keras model
directory; `gpt_keras.convert.load_checkpoint` detects which) is read once
when the plan is made, so that every bad combination stops before any stage:
a missing or corrupt file, a preset or override whose sizes differ, a
vocabulary or tokenizer mode the config asks for that contradicts the
checkpoint's, `finetune.n_transfer` beyond its blocks. Which side wins: the
checkpoint's sizes, vocabulary and tokenizer mode; a config key that is left
unset takes them, a key that is set must agree.

Tokenizer modes: the original release was trained on `text_standardize`d
text, so it gets the "original" mode; HF `openai-gpt` gets "hf" (the HF
tokenizer's ftfy/spacy-free path, which is what the HF vocabulary is used
with); a gpt_keras directory records its own mode.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

from pipelines.config.experiment import ExperimentConfig
from pipelines.config.validation import ConfigError

SIZE_KEYS = ("n_ctx", "n_layer", "n_embd", "n_head", "n_inner")


@dataclasses.dataclass(frozen=True)
class Source:
    """What `model.init_from` holds (read without keeping its weights)."""
    path: str
    format: str                # "original" | "hf" | "gpt_keras"
    config: Any                # GPTConfig
    tokenizer_mode: str | None  # None: the checkpoint has no vocabulary
    n_vocab: int | None
    signature: tuple           # (file, size, mtime) of every file: a changed checkpoint re-runs the import


def signature(path: str) -> tuple:
    """Names, sizes and modification times of the files under `path`."""
    items = []
    for root, _, files in os.walk(path):
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            items.append((os.path.relpath(full, path), st.st_size, int(st.st_mtime)))
    return tuple(sorted(items))


def load(path: str, n_head: int | None, tokenizer_mode: str | None = None):
    """(backbone, tokenizer or None, format); errors name `model.init_from` and the fix."""
    from gpt_keras.convert import ConversionError, load_checkpoint

    try:
        return load_checkpoint(path, n_head=n_head, tokenizer_mode=tokenizer_mode)
    except ConversionError as e:
        key = "model.n_head" if "n_head" in str(e) else "model.init_from"
        raise ConfigError(f"{key}: cannot start from {path}: {e}") from None
    except (ValueError, OSError) as e:  # a bad GPTConfig (n_head), unreadable or truncated weights
        key = "model.n_head" if "n_head" in str(e) else "model.init_from"
        raise ConfigError(f"{key}: cannot start from {path}: {e}; check that every file of the checkpoint "
                          "was downloaded completely") from None


@functools.lru_cache(maxsize=4)
def _describe(path: str, n_head: int | None, sig: tuple) -> Source:
    backbone, tokenizer, fmt = load(path, n_head)
    return Source(path, fmt, backbone.config, tokenizer.mode if tokenizer else None,
                  tokenizer.n_vocab if tokenizer else None, sig)


def checkpoint_path(config: ExperimentConfig) -> str:
    """`model.init_from` as a directory: a path, or a released model's name (`gpt_keras.releases`)."""
    from gpt_keras import releases

    given = config.model.init_from
    released = None if os.path.isdir(given) else releases.path(given)
    path = str(released) if released is not None else os.path.abspath(given)
    if not os.path.isdir(path):
        shipped = ", ".join(releases.names()) or "none installed"
        raise ConfigError(f"model.init_from: {given!r} is not a directory nor a released model "
                          f"(released: {shipped}); give the directory holding the checkpoint "
                          "(params_shapes.json + params_*.npy, or config.json + weights)")
    return path


def describe(config: ExperimentConfig) -> Source:
    """The checkpoint of `model.init_from` (cached while its files are unchanged)."""
    path = checkpoint_path(config)
    return _describe(path, config.model.n_head, signature(path))


def tokenizer_mode(config: ExperimentConfig, source: Source) -> str:
    """The run's tokenizer mode when `preprocess.tokenizer_mode` is unset: the
    checkpoint's (`source`, from `check`); without a vocabulary in it,
    `preprocess.vocab_dir`'s."""
    if source.tokenizer_mode:
        return source.tokenizer_mode
    if config.preprocess.vocab_dir:
        from gpt_keras.tokenizer import GPTTokenizer
        return GPTTokenizer.load(config.preprocess.vocab_dir).mode
    return "original" if source.format == "original" else "hf"


def check(config: ExperimentConfig) -> Source:
    """The checkpoint, checked against every config key that could contradict it."""
    source = describe(config)
    model, pp, c = config.model, config.preprocess, source.config
    where = f"model.init_from={model.init_from!r}"
    if model.preset:
        from gpt_keras.config import GPTConfig
        preset = GPTConfig.from_preset(model.preset)
        differ = [f"{k}={getattr(preset, k)} vs {getattr(c, k)}" for k in SIZE_KEYS if getattr(preset, k) != getattr(c, k)]
        if differ:
            raise ConfigError(f"model.preset={model.preset!r} disagrees with {where} ({', '.join(differ)}, preset vs "
                              "checkpoint); remove model.preset: the checkpoint's sizes are used")
    for key, value in model.overrides.items():
        if getattr(c, key, value) != value:
            raise ConfigError(f"model.overrides.{key}={value!r} disagrees with {where}, which has {key}="
                              f"{getattr(c, key)!r}; remove the override: the checkpoint's sizes are used")
    if pp.n_ctx > c.n_ctx:
        raise ConfigError(f"preprocess.n_ctx={pp.n_ctx} is more than the {c.n_ctx} positions of {where}; "
                          f"set preprocess.n_ctx <= {c.n_ctx}")
    if source.tokenizer_mode is None:
        if not pp.vocab_dir:
            raise ConfigError(f"model.init_from: {model.init_from} has no vocabulary files (encoder*.json + *.bpe, "
                              "or vocab.json + merges.txt); put the checkpoint's vocabulary beside its weights, "
                              "or give the matching one as preprocess.vocab_dir")
        from gpt_keras.tokenizer import GPTTokenizer
        try:
            n_vocab = GPTTokenizer.load(pp.vocab_dir, mode=pp.tokenizer_mode).n_vocab
        except (ValueError, OSError) as e:
            raise ConfigError(f"preprocess.vocab_dir: {e}") from None
        if n_vocab != c.vocab_size:
            raise ConfigError(f"preprocess.vocab_dir={pp.vocab_dir!r} has {n_vocab} BPE tokens but {where} embeds "
                              f"{c.vocab_size}; give the vocabulary these weights were trained with")
    elif pp.vocab_dir:
        raise ConfigError(f"preprocess.vocab_dir={pp.vocab_dir!r} asks for another vocabulary, but {where} has its "
                          "own; remove preprocess.vocab_dir: the checkpoint's vocabulary is used")
    elif pp.tokenizer_mode and pp.tokenizer_mode != source.tokenizer_mode:
        raise ConfigError(f"preprocess.tokenizer_mode={pp.tokenizer_mode!r} contradicts {where}, whose tokenizer "
                          f"mode is {source.tokenizer_mode!r} ({source.format} checkpoint); remove "
                          "preprocess.tokenizer_mode: the checkpoint's mode is used")
    n = config.finetune.n_transfer
    if n is not None and n > c.n_layer:
        raise ConfigError(f"finetune.n_transfer={n} is more than the {c.n_layer} blocks of {where}; "
                          f"use 0..{c.n_layer}, or leave it unset to transfer all")
    return source

