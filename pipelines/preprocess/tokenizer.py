"""The tokenizer as the driver loads it and as it travels to the workers."""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from gpt_keras.tokenizer import GPTTokenizer
from pipelines.preprocess.errors import PreprocessError


def load_tokenizer(vocab_dir: str, mode: str = "hf") -> GPTTokenizer:
    """`GPTTokenizer.load`, also for `gs://...` directories (copied locally).

    Fails fast with the tokenizer's own clear error on a missing/unreadable vocabulary."""
    if "://" not in vocab_dir:
        return GPTTokenizer.load(vocab_dir, mode=mode)
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
    def from_tokenizer(cls, tokenizer: GPTTokenizer) -> "TokenizerSpec":
        """The spec of a loaded `GPTTokenizer`."""
        return cls(dict(tokenizer.encoder), tuple(tokenizer.merges), tokenizer.mode, tokenizer.fingerprint)

    def load(self) -> GPTTokenizer:
        """The `GPTTokenizer` this spec describes (raises PreprocessError on a fingerprint mismatch)."""
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
