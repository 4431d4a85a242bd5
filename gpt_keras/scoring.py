"""Log-probabilities of text under the language model (eq. 1's P(u_i | u_<i)).

    scorer = LMScorer(backbone, tokenizer)
    scorer.score_texts(["a great movie"])                       # per token, summed, averaged
    scorer.score_continuations(["the movie was"], [" great"])   # log P(continuation | context)

One forward pass per batch (rows right-padded to a length bucket, so a few
shapes cover any input); probabilities are normalised over the BPE
vocabulary only, never over the special-token rows, which are not text.

GPT-1 has no beginning-of-text token, so a text's first token has no context
and is not scored: `score_texts` reports the log-probability of tokens 2..n.
Texts longer than the context keep their *last* n_ctx tokens for
`score_texts`; for a continuation the context is cut from the left, the
continuation never; `truncated` says when either happened.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from gpt_keras.model import GPTBackbone
from gpt_keras.preprocessor import check_tokenizer, pad, ragged_ids

_LENGTH_BUCKET = 16  # rows are padded to a multiple of this: few traced shapes


def next_token_logprobs(backbone: GPTBackbone, token_ids: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """[b, L] right-padded ids -> [b, L-1]: log P(token t+1 | tokens <= t),
    normalised over the BPE vocabulary only (the special rows are not text).
    Entries past a row's end are meaningless: mask them with `padding_mask[:, 1:]`."""
    vocab_size = backbone.config.vocab_size
    hidden = backbone({"token_ids": token_ids, "padding_mask": padding_mask}, training=False)
    logits = tf.cast(backbone.embed.attend(hidden)[:, :-1, :vocab_size], tf.float32)
    targets = tf.minimum(token_ids[:, 1:], vocab_size - 1)  # padding: a valid index, masked by the caller
    return tf.gather(logits, targets, batch_dims=2) - tf.reduce_logsumexp(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class Score:
    """The score of one text, or of one continuation given its context."""
    token_logprobs: np.ndarray  # log P(token | everything before it), for each scored token
    truncated: bool             # tokens were dropped to fit the context

    @property
    def total(self) -> float:
        """Summed log-probability (the log-probability of the scored tokens)."""
        return float(self.token_logprobs.sum())

    @property
    def mean(self) -> float:
        """Average log-probability per scored token (-inf-free: nan when none)."""
        return float(self.token_logprobs.mean()) if self.token_logprobs.size else float("nan")

    @property
    def num_tokens(self) -> int:
        return int(self.token_logprobs.size)


class LMScorer:
    """Scores text with a language model (a `GPTBackbone` or a model with a `.backbone`).

    Args:
      model: the language model (its tied head gives the next-token logits).
      tokenizer: the model's tokenizer (needed for the text methods).
      batch_size: rows per forward pass (the logits of a batch are
        batch x length x vocabulary floats: lower it for the 117M model).
      jit_compile: compile the forward pass with XLA.
    """

    def __init__(self, model: Any, tokenizer: Any = None, batch_size: int = 16, jit_compile: bool = False):
        self.backbone = model if isinstance(model, GPTBackbone) else getattr(model, "backbone", None)
        if not isinstance(self.backbone, GPTBackbone):
            raise TypeError(f"LMScorer needs a GPTBackbone or a model with a .backbone, got {type(model).__name__}")
        if tokenizer is not None:
            check_tokenizer(tokenizer, self.backbone.config)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.n_ctx = self.backbone.config.n_ctx
        self.vocab_size = self.backbone.config.vocab_size
        self._forward = tf.function(lambda ids, mask: next_token_logprobs(self.backbone, ids, mask),
                                    jit_compile=jit_compile, reduce_retracing=True)

    # ------------------------------------------------------------------ ids

    def score_ids(self, rows: Sequence[Sequence[int]], scored_from: Sequence[int] | None = None) -> list[np.ndarray]:
        """Per-token log-probabilities of id rows (each at most n_ctx long).

        Row i's tokens from position `scored_from[i]` on (default 1: every
        token that has a context) are scored; returns one array per row.
        """
        rows = [list(r) for r in rows]
        starts = [1] * len(rows) if scored_from is None else [max(1, int(s)) for s in scored_from]
        for i, row in enumerate(rows):
            if len(row) > self.n_ctx:
                raise ValueError(f"row {i} has {len(row)} tokens, more than the context n_ctx={self.n_ctx}")
            bad = [t for t in row if isinstance(t, bool) or not isinstance(t, (int, np.integer))
                   or not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"row {i} has values that are not BPE token ids in [0, {self.vocab_size}): "
                                 f"{bad[:5]} (special tokens are not text and cannot be scored)")
        out: list[np.ndarray] = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            longest = max((len(r) for r in batch), default=0)
            length = min(max(2, -(-longest // _LENGTH_BUCKET) * _LENGTH_BUCKET), self.n_ctx)
            x = pad(ragged_ids(batch), length)
            logprobs = self._forward(x["token_ids"], x["padding_mask"]).numpy()
            for row, lp, first in zip(batch, logprobs, starts[start:start + self.batch_size]):
                out.append(lp[first - 1:len(row) - 1].astype(np.float64))
        return out

    # ----------------------------------------------------------------- text

    def score_texts(self, texts: Sequence[str]) -> list[Score]:
        """log P of each text's tokens 2..n (the first has no context); texts
        over n_ctx tokens keep their last n_ctx (`truncated`)."""
        encoded = [self._encode(t, f"text {i}") for i, t in enumerate(_batch(texts, "texts"))]
        kept = [ids[-self.n_ctx:] for ids in encoded]
        return [Score(lp, len(ids) > len(k)) for lp, ids, k in zip(self.score_ids(kept), encoded, kept)]

    def score_continuations(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[Score]:
        """log P(continuation | context) per pair, token by token.

        The continuation is encoded on its own and appended to the context's
        ids; give it its leading space (" great"), as it would appear in
        running text. A context too long for the window loses its start."""
        contexts, continuations = _batch(contexts, "contexts"), _batch(continuations, "continuations")
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations; give one each")
        return self.score_id_continuations([self._encode(c, f"context {i}", allow_empty=True)
                                            for i, c in enumerate(contexts)],
                                           [self._encode(c, f"continuation {i}") for i, c in enumerate(continuations)])

    def score_id_continuations(self, contexts: Sequence[Sequence[int]],
                               continuations: Sequence[Sequence[int]]) -> list[Score]:
        """`score_continuations` on token ids."""
        rows, starts, cut = [], [], []
        for i, (context, continuation) in enumerate(zip(contexts, continuations)):
            context, continuation = list(context), list(continuation)
            if not continuation:
                raise ValueError(f"continuation {i} is empty: there is nothing to score")
            if not context:
                raise ValueError(f"context {i} is empty: GPT-1 has no start-of-text token, so the first token "
                                 "of a continuation needs at least one token of context")
            if len(continuation) >= self.n_ctx:
                raise ValueError(f"continuation {i} has {len(continuation)} tokens; with at least one token of "
                                 f"context it must be under n_ctx={self.n_ctx}")
            keep = self.n_ctx - len(continuation)
            cut.append(len(context) > keep)
            context = context[-keep:]
            rows.append(context + continuation)
            starts.append(len(context))
        return [Score(lp, c) for lp, c in zip(self.score_ids(rows, starts), cut)]

    def _encode(self, text: str, what: str, allow_empty: bool = False) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("this LMScorer has no tokenizer: pass one, or score token ids with score_ids")
        if not isinstance(text, str):
            raise TypeError(f"{what} must be a string, got {type(text).__name__}")
        ids = self.tokenizer.encode(text)
        if not ids and not allow_empty:
            raise ValueError(f"{what} ({text[:40]!r}) has no tokens: empty text cannot be scored")
        return ids


def _batch(values: Any, what: str) -> list:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings: wrap a single text in a list")
    values = list(values)
    if not values:
        raise ValueError(f"no {what} given")
    return values
