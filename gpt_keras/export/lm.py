"""The serving module of a language model: prompt text in, generated text out.

Signatures (every input is per row, so TF Serving's batching can merge requests):

* `generate`: `prompt` [b] string, `max_new_tokens` [b] int32,
  `temperature` [b] float32 (0 = greedy), `top_k` [b] int32 (0 = off),
  `top_p` [b] float32 (1 = off), `seed` [b] int64 ->
  `text` [b] string (the continuation only), `token_ids` [b, budget] int32
  (0 after the end), `num_tokens` [b] int32.
* `serving_default`: `prompt`, `max_new_tokens` -> the same outputs, greedy.

`budget` (the export's `max_new_tokens` argument) is the documented upper
bound: larger per-row values are clipped to it. Settings are clipped into
their valid ranges rather than rejected (a bad row must not fail the other
rows of a server-side batch). A prompt keeps its last `n_ctx - budget`
tokens (of its last `max_text_bytes` bytes); an empty prompt yields empty text.

`weights="bf16"` exports the matrices and the tied LM head as bf16 copies
(`gpt_keras.compress`): plain core ops (MatMul + BiasAdd, Cast), no XLA, and
the fp32 matrices are left out of the export.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from gpt_keras.compress import compressed_backbone
from gpt_keras.generate.core import generate_tokens
from gpt_keras.model import GPTBackbone
from gpt_keras.preprocessor import BYTES_PER_POSITION, check_tokenizer, cut_text, last_bytes, pad
from gpt_keras.scoring import next_token_logprobs
from gpt_keras.tokenizer import GPTTokenizer

SETTINGS = {  # name: (dtype, value of the greedy default)
    "max_new_tokens": (tf.int32, None),
    "temperature": (tf.float32, 0.0),
    "top_k": (tf.int32, 0),
    "top_p": (tf.float32, 1.0),
    "seed": (tf.int64, 0),
}


class LMServingModule(tf.Module):
    """tf.Module holding tokenizer tables, backbone and decoder for export."""

    def __init__(self, backbone: GPTBackbone, tokenizer: GPTTokenizer, max_new_tokens: int = 64,
                 stop_token_ids: Sequence[int] = (), max_text_bytes: int | None = None, weights: str = "fp32"):
        super().__init__(name="gpt_lm_serving")
        config = backbone.config
        check_tokenizer(tokenizer, config)
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens < config.n_ctx:
            raise ValueError(f"max_new_tokens (the export's upper bound) must be in [1, n_ctx={config.n_ctx}), "
                             f"got {max_new_tokens!r}")
        view = compressed_backbone(backbone, weights)
        if view is backbone:
            self.backbone = backbone
        else:
            # The view shares the source's trackable children (its fp32
            # matrices): keep it untracked and track only what it reads.
            object.__setattr__(self, "backbone", view)
            self.compressed_layers = view.compressed_layers
            self.kept_variables = view.kept_variables
        self.weight_format = weights
        self.tokenizer = tokenizer.graph_layer()
        self.decoder = tokenizer.graph_decoder()
        self.budget = max_new_tokens
        self.max_prompt_tokens = config.n_ctx - max_new_tokens
        self.n_ctx = config.n_ctx
        self.stop_token_ids = [int(t) for t in stop_token_ids]
        self.max_text_bytes = int(max_text_bytes or BYTES_PER_POSITION * config.n_ctx)

    def prompt_ids(self, prompt: tf.Tensor) -> tf.RaggedTensor:
        """[b] prompts -> the ids generation conditions on: the last
        `max_prompt_tokens` tokens of each prompt's last `max_text_bytes` bytes."""
        return self.tokenizer(last_bytes(prompt, self.max_text_bytes))[:, -self.max_prompt_tokens:]

    def generate(self, prompt: tf.Tensor, max_new_tokens: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
                 top_p: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = self.prompt_ids(prompt)
        empty = tf.equal(ids.row_lengths(), 0)
        # An empty prompt gets one dummy token so that the core has a row to
        # run; its output is discarded below.
        dummy = tf.RaggedTensor.from_row_lengths(tf.zeros(tf.reduce_sum(tf.cast(empty, tf.int64)), tf.int32),
                                                 tf.cast(empty, tf.int64))
        ids = tf.concat([dummy, ids], axis=1)
        padded = pad(ids, side="left")
        token_ids, mask = padded["token_ids"], padded["padding_mask"]
        tokens, lengths = generate_tokens(
            self.backbone, token_ids, mask,
            tf.clip_by_value(max_new_tokens, 0, self.budget), tf.maximum(temperature, 0.0),
            tf.maximum(top_k, 0), tf.clip_by_value(top_p, 1e-6, 1.0), seed,
            tf.constant(self.stop_token_ids, tf.int32, shape=[len(self.stop_token_ids)]), self.budget)
        # The core always emits at least one token; honour 0 and empty prompts.
        lengths = tf.where(empty | (max_new_tokens <= 0), 0, lengths)
        tokens = tf.where(tf.range(self.budget)[None, :] < lengths[:, None], tokens, 0)
        return {"text": self.decoder(tokens, lengths), "token_ids": tokens, "num_tokens": lengths}

    def score(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        """log P of each text's tokens 2..n (its last n_ctx tokens; the first has no context)."""
        ids = self.tokenizer(last_bytes(text, self.max_text_bytes))
        truncated = ids.row_lengths() > self.n_ctx
        return self._scored(ids[:, -self.n_ctx:], tf.ones_like(ids.row_lengths()), truncated)

    def score_continuation(self, context: tf.Tensor, continuation: tf.Tensor) -> dict[str, tf.Tensor]:
        """log P(continuation | context): the continuation keeps its first
        n_ctx - 1 tokens, the context its last tokens that still fit."""
        cont = self.tokenizer(cut_text(continuation, self.max_text_bytes))
        ctx = self.tokenizer(last_bytes(context, self.max_text_bytes))
        cont_cut = cont[:, :self.n_ctx - 1]
        keep = self.n_ctx - cont_cut.row_lengths()
        position = tf.ragged.range(ctx.row_lengths()) + tf.expand_dims(keep - ctx.row_lengths(), 1)
        ctx_cut = tf.ragged.boolean_mask(ctx, position >= 0)  # its last `keep` tokens
        truncated = (ctx_cut.row_lengths() < ctx.row_lengths()) | (cont_cut.row_lengths() < cont.row_lengths())
        # Without context the first continuation token cannot be scored (GPT-1 has no start-of-text token).
        first = tf.maximum(ctx_cut.row_lengths(), 1)
        return self._scored(tf.concat([ctx_cut, cont_cut], axis=1), first, truncated)

    def _scored(self, ids: tf.RaggedTensor, first: tf.Tensor, truncated: tf.Tensor) -> dict[str, tf.Tensor]:
        """Sum and mean of log P(ids[t] | ids[<t]) for t >= first, per row."""
        x = pad(ids)
        # One more column: at least 2, also for a batch of empty or one-token rows.
        token_ids, mask = (tf.pad(x[k], [[0, 0], [0, 1]]) for k in ("token_ids", "padding_mask"))
        logprobs = next_token_logprobs(self.backbone, token_ids, mask)
        target = tf.range(1, tf.shape(token_ids)[1], dtype=tf.int64)[None, :]
        scored = tf.cast((target >= first[:, None]) & (mask[:, 1:] > 0), tf.float32)
        total = tf.reduce_sum(logprobs * scored, axis=1)
        count = tf.reduce_sum(scored, axis=1)
        return {"logprob_sum": total, "logprob_mean": total / tf.maximum(count, 1.0),
                "num_tokens": tf.cast(count, tf.int32), "truncated": truncated}

    def signatures(self) -> dict:
        """{signature key: concrete function} for `tf.saved_model.save`."""
        specs = {"prompt": tf.TensorSpec([None], tf.string, name="prompt")}
        specs.update({name: tf.TensorSpec([None], dtype, name=name) for name, (dtype, _) in SETTINGS.items()})
        full = tf.function(lambda inputs: self.generate(**inputs), input_signature=[specs], autograph=False)

        def greedy(inputs):
            batch = tf.shape(inputs["prompt"])[:1]
            settings = {name: tf.fill(batch, tf.constant(default, dtype))
                        for name, (dtype, default) in SETTINGS.items() if default is not None}
            return full({**inputs, **settings})  # shares `full`'s traced graph

        default_specs = {k: specs[k] for k in ("prompt", "max_new_tokens")}
        simple = tf.function(greedy, input_signature=[default_specs], autograph=False)
        text = tf.TensorSpec([None], tf.string, name="text")
        context = tf.TensorSpec([None], tf.string, name="context")
        continuation = tf.TensorSpec([None], tf.string, name="continuation")
        score = tf.function(self.score, input_signature=[text], autograph=False)
        score_continuation = tf.function(self.score_continuation, input_signature=[context, continuation],
                                         autograph=False)
        return {"generate": full.get_concrete_function(), "serving_default": simple.get_concrete_function(),
                "score": score.get_concrete_function(),
                "score_continuation": score_continuation.get_concrete_function()}
