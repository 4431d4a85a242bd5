"""The generation core: prompts and per-row settings in, new tokens out, as
plain TensorFlow functions of tensors (no XLA needed).

Prompts are LEFT-padded `[batch, L]` ids + mask, and every sampling setting
is a per-row tensor (`max_new_tokens`, `temperature`, `top_k`, `top_p`,
`seeds`; conventions in `gpt_keras.generate.sampling`). The prompt is run
once (prefill), then the loop feeds one position per step through the
layers' cache path (`GPTBackbone.call_with_cache`). Positions come from the
padding mask, so left padding shifts nothing. A row ends at a stop token
(not part of its output) or at its `max_new_tokens`; finished rows emit
padding (id 0) and the loop exits once every row is done.

`generate_tokens` is what the LM serving signature wraps (`gpt_keras.export.lm`,
with a fixed `budget`, the documented upper bound on `max_new_tokens`);
`Generator` owns a backbone and its compiled (optionally XLA) `tf.function`s.
"""
from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from gpt_keras.compress import compressed_logits
from gpt_keras.decode_ops import in_xla_context
from gpt_keras.generate.sampling import select_tokens
from gpt_keras.model import GPTBackbone, position_ids


def lm_head(backbone: GPTBackbone) -> tf.Tensor:
    """The tied LM head as a `[n_embd, vocab]` matrix, for `lm_logits`.

    Transposed once per generate call, outside the decode loop: a matmul
    against the stored `[vocab, n_embd]` table with `transpose_b` (or
    `embed.attend`, which transposes it in every step) runs 2-3x slower on
    CPU for a batch of 8 rows. Only the BPE rows: a special token
    (`_start_`, `_delimiter_`, `_classify_`) is an input marker, never text,
    so generation can never emit one.
    """
    return tf.transpose(backbone.embed.token_embeddings[:backbone.config.vocab_size])


def lm_logits(head: tf.Tensor, hidden: tf.Tensor) -> tf.Tensor:
    """Float32 logits `[batch, vocab]` from hidden states `[batch, n_embd]`."""
    return tf.cast(tf.matmul(hidden, tf.cast(head, hidden.dtype)), tf.float32)


def head_logits(backbone: GPTBackbone) -> Callable[[tf.Tensor], tf.Tensor]:
    """`hidden [batch, n_embd] -> float32 logits [batch, vocab]` for this
    backbone: its compressed head if it is a `gpt_keras.compress` view, else
    `lm_logits` with `lm_head` (taken once, outside the decode loop)."""
    if getattr(backbone, "lm_head_layer", None) is not None:
        return lambda hidden: compressed_logits(backbone, hidden)
    head = lm_head(backbone)
    return lambda hidden: lm_logits(head, hidden)


class _Settings:
    """The per-row inputs of the core, as tensors of the right dtypes."""

    def __init__(self, max_new_tokens, temperature, top_k, top_p, seeds, stop_token_ids):
        self.max_new_tokens = tf.convert_to_tensor(max_new_tokens, tf.int32)
        self.temperature = tf.convert_to_tensor(temperature, tf.float32)
        self.top_k = tf.convert_to_tensor(top_k, tf.int32)
        self.top_p = tf.convert_to_tensor(top_p, tf.float32)
        self.seeds = tf.convert_to_tensor(seeds, tf.int64)
        self.stop_token_ids = tf.reshape(tf.convert_to_tensor(stop_token_ids, tf.int32), [-1])

    def select(self, logits, step):
        return select_tokens(logits, self.temperature, self.top_k, self.top_p, self.seeds, step)

    def record(self, token, step, budget, tokens, lengths, done):
        """Writes the token chosen at `step` into the outputs; returns the new
        (tokens, lengths, done). A stop token ends its row and is not emitted."""
        is_stop = tf.reduce_any(token[:, None] == self.stop_token_ids[None, :], axis=-1)
        emit = tf.logical_and(tf.logical_not(done), tf.logical_not(is_stop))
        column = tf.range(budget)[None, :] == step
        tokens = tf.where(tf.logical_and(column, emit[:, None]), token[:, None], tokens)
        lengths = lengths + tf.cast(emit, tf.int32)
        done = done | is_stop | (step + 1 >= self.max_new_tokens)
        return tokens, lengths, done


def generate_tokens(backbone: GPTBackbone, token_ids, padding_mask, max_new_tokens, temperature, top_k,
                    top_p, seeds, stop_token_ids, budget: int, use_cache: bool = True
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    """The generation core: tensors in, tensors out; plain TF (no XLA needed).

    Args:
      backbone: the model.
      token_ids, padding_mask: `[batch, L]` LEFT-padded prompts (every row has
        at least one real token).
      max_new_tokens: `[batch]` int, each clipped to `budget` (a row with 0
        generates nothing).
      temperature: `[batch]` float; 0 = greedy.
      top_k: `[batch]` int; 0 = off.  top_p: `[batch]` float in (0, 1]; 1 = off.
      seeds: `[batch]` int, keys of the row's random numbers.
      stop_token_ids: `[n]` int (may be empty).
      budget: static upper bound on new tokens: the cache holds `L + budget`
        positions, which must be <= n_ctx.
      use_cache: False recomputes the whole prefix at every step (the
        reference the cached path is tested against; eager only, slow).
    Returns:
      (`[batch, budget]` int32 new tokens, 0 after a row's end;
       `[batch]` int32 number of new tokens per row, stop tokens excluded).
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    padding_mask = tf.cast(tf.convert_to_tensor(padding_mask), tf.int32)
    settings = _Settings(max_new_tokens, temperature, top_k, top_p, seeds, stop_token_ids)
    batch, prompt_len = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    n_ctx = backbone.config.n_ctx
    budget = int(budget)
    if budget < 1:
        raise ValueError(f"budget (the max_new_tokens bound) must be >= 1, got {budget}")
    static_len = token_ids.shape[1]
    if static_len is not None and static_len + budget > n_ctx:
        raise ValueError(f"prompt length {static_len} + max_new_tokens {budget} exceeds n_ctx={n_ctx}")
    checks = []
    if not in_xla_context():  # asserts are dropped under XLA; the static check above covers it
        checks.append(tf.debugging.assert_less_equal(
            prompt_len + budget, n_ctx, message=f"prompt length + max_new_tokens budget > n_ctx={n_ctx}"))
    with tf.control_dependencies(checks):
        tokens = tf.zeros([batch, budget], tf.int32)
    lengths = tf.zeros([batch], tf.int32)
    done = settings.max_new_tokens < 1
    loop = _cached_loop if use_cache else _uncached_loop
    return loop(backbone, token_ids, padding_mask, settings, budget, tokens, lengths, done)


def _cached_loop(backbone, token_ids, padding_mask, settings, budget, tokens, lengths, done):
    batch, prompt_len = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    max_len = prompt_len + budget
    logits_of = head_logits(backbone)
    # Keys a row may attend to: its real prompt tokens and everything generated.
    valid_keys = tf.concat([tf.cast(padding_mask, tf.bool), tf.ones([batch, budget], tf.bool)], axis=1)
    slots = tf.range(max_len)
    causal = tf.range(prompt_len)[:, None] >= slots[None, :]
    hidden, caches = backbone.call_with_cache(token_ids, position_ids(padding_mask),
                                        causal[None] & valid_keys[:, None, :],
                                        backbone.empty_cache(batch, max_len), 0)
    token = settings.select(logits_of(hidden[:, -1]), 0)
    tokens, lengths, done = settings.record(token, 0, budget, tokens, lengths, done)
    first_position = tf.reduce_sum(padding_mask, axis=1)  # where the first new token goes

    def body(step, token, caches, tokens, lengths, done):
        index = prompt_len + step - 1  # cache slot of the token fed now (chosen at step - 1)
        fed = tf.where(done, 0, token)[:, None]  # finished rows feed padding
        mask = valid_keys & (slots[None, :] <= index)
        hidden, caches = backbone.call_with_cache(fed, (first_position + step - 1)[:, None],
                                            mask[:, None, :], caches, index)
        token = settings.select(logits_of(hidden[:, 0]), step)
        tokens, lengths, done = settings.record(token, step, budget, tokens, lengths, done)
        return step + 1, token, caches, tokens, lengths, done

    def cond(step, token, caches, tokens, lengths, done):
        return tf.logical_and(step < budget, tf.logical_not(tf.reduce_all(done)))

    _, _, _, tokens, lengths, _ = tf.while_loop(
        cond, body, (tf.constant(1), token, caches, tokens, lengths, done), maximum_iterations=budget)
    return tokens, lengths


def _uncached_loop(backbone, token_ids, padding_mask, settings, budget, tokens, lengths, done):
    """Reference path: a Python loop that runs the full backbone on the whole
    (growing) sequence at every step."""
    ids, mask = token_ids, padding_mask
    logits_of = head_logits(backbone)
    for step in range(budget):
        if bool(tf.reduce_all(done)):
            break
        hidden = backbone({"token_ids": ids, "padding_mask": mask})
        token = settings.select(logits_of(hidden[:, -1]), step)
        tokens, lengths, done = settings.record(token, step, budget, tokens, lengths, done)
        ids = tf.concat([ids, tf.where(done, 0, token)[:, None]], axis=1)
        mask = tf.concat([mask, tf.ones_like(mask[:, :1])], axis=1)
    return tokens, lengths


class Generator(tf.Module):
    """A backbone plus its compiled generation functions.

    `Generator(backbone)(token_ids, padding_mask, ..., budget=N)` runs
    `generate_tokens` inside one `tf.function` per `budget`, compiled with XLA
    when `jit_compile` (each new prompt shape compiles once).
    """

    def __init__(self, backbone: GPTBackbone, jit_compile: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.backbone = backbone
        self.jit_compile = jit_compile
        self._functions: dict[int, Any] = {}

    def function(self, budget: int):
        """The `tf.function` generating up to `budget` tokens (reused per budget)."""
        if budget not in self._functions:
            def run(token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p, seeds, stop_token_ids):
                return generate_tokens(self.backbone, token_ids, padding_mask, max_new_tokens, temperature,
                                       top_k, top_p, seeds, stop_token_ids, budget)
            self._functions[budget] = tf.function(run, jit_compile=self.jit_compile, reduce_retracing=True)
        return self._functions[budget]

    def __call__(self, token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p, seeds,
                 stop_token_ids, *, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
        """`generate_tokens` (cached), compiled; arguments as there."""
        return self.function(budget)(token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p,
                                     seeds, stop_token_ids)
