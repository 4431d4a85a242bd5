"""Shared pieces: the error type, the tokenizer as shipped to workers, stable splits."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from typing import Mapping, Sequence

import apache_beam as beam

NAMESPACE = "gpt_keras.preprocess"  # Beam counter namespace
ERROR_MARK = "[gpt_keras.preprocess]"


class PreprocessError(RuntimeError):
    """A run that must stop: too many bad rows, inconsistent counts, no data.

    Raised inside the pipeline with ERROR_MARK in the message so that the
    driver can re-raise it cleanly from whatever the runner wraps it in."""

    def __init__(self, message: str):
        super().__init__(message if message.startswith(ERROR_MARK) else f"{ERROR_MARK} {message}")

    @property
    def message(self) -> str:
        return str(self)[len(ERROR_MARK) + 1:]


# --------------------------------------------------------------------------- tokenizer

def load_tokenizer(vocab_dir: str, mode: str = "hf"):
    """`GPTTokenizer.load`, also for `gs://...` directories (copied locally).

    Fails fast with the tokenizer's own clear error on a missing/unreadable vocabulary."""
    from gpt_keras.tokenizer import GPTTokenizer

    if "://" not in vocab_dir:
        return GPTTokenizer.load(vocab_dir, mode=mode)
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([vocab_dir.rstrip("/") + "/*"])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"vocabulary directory {vocab_dir!r} is empty or unreadable")
    with tempfile.TemporaryDirectory() as local:
        for m in matches:
            name = m.path.rsplit("/", 1)[-1]
            if name.endswith((".json", ".bpe", ".txt")):
                with FileSystems.open(m.path) as src, open(os.path.join(local, name), "wb") as dst:
                    dst.write(src.read())
        return GPTTokenizer.load(local, mode=mode)


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """The vocabulary itself (not a path), so that workers on any runner build
    the same tokenizer; `load` checks the fingerprint."""

    encoder: Mapping[str, int]
    merges: tuple[tuple[str, str], ...]
    mode: str
    fingerprint: str

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TokenizerSpec":
        return cls(dict(tokenizer.encoder), tuple(tokenizer.merges), tokenizer.mode, tokenizer.fingerprint)

    def load(self):
        from gpt_keras.tokenizer import GPTTokenizer

        tokenizer = GPTTokenizer(self.encoder, self.merges, self.mode)
        if tokenizer.fingerprint != self.fingerprint:
            raise PreprocessError(f"worker built vocabulary {tokenizer.fingerprint} instead of {self.fingerprint}")
        return tokenizer


class TokenizerDoFn(beam.DoFn):
    """Base DoFn: builds the tokenizer once per worker, in `setup()`."""

    def __init__(self, tokenizer: TokenizerSpec):
        self._spec = tokenizer
        self.tokenizer = None

    def setup(self):
        self.tokenizer = self._spec.load()


# --------------------------------------------------------------------------- splits

def resolve_split_fractions(val_fraction: float | None = None,
                    fractions: Mapping[str, float] | None = None) -> dict[str, float]:
    """{"train": 1 - v, "validation": v} or explicit fractions (validated, in order).

    Splits with fraction 0 are left out."""
    if fractions is None:
        v = 0.0 if val_fraction is None else float(val_fraction)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        fractions = {"train": 1.0 - v, "validation": v}
    elif val_fraction is not None:
        raise ValueError("give either val_fraction or split_fractions, not both")
    fractions = {str(k): float(v) for k, v in fractions.items()}
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    return {k: v for k, v in fractions.items() if v > 0}


def content_digest(parts: Sequence[str], salt: str = "") -> bytes:
    """sha256 over the salt and the parts (length-prefixed, so ("ab","c") != ("a","bc")).

    hashlib, never `hash()`: the value must be the same in every process and run."""
    h = hashlib.sha256(salt.encode("utf-8") + b"\x00")
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


@dataclasses.dataclass(frozen=True)
class SplitAssigner:
    """Maps a content digest to a split: its first 8 bytes as a number in
    [0, 1), compared against the cumulative fractions (in the given order)."""

    fractions: tuple[tuple[str, float], ...]

    @classmethod
    def create(cls, fractions: Mapping[str, float]) -> "SplitAssigner":
        return cls(tuple(fractions.items()))

    def __call__(self, digest: bytes) -> str:
        u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
        edge = 0.0
        for name, fraction in self.fractions:
            edge += fraction
            if u < edge:
                return name
        return self.fractions[-1][0]  # rounding at the top edge
