"""GPT-1 building blocks: tied embedding, causal self-attention, post-LN block.

Names follow the original release / HF `openai-gpt` (`c_attn`, `c_proj`,
`c_fc`, `ln_1`, `ln_2`) so that checkpoint conversion is a rename.

Own layers instead of keras-hub's: keras-hub's `TransformerDecoder` is pre-LN
(GPT-2) and its `PositionEmbedding` cannot take per-sequence position ids,
which left-padded batched generation needs. Everything here is plain
`keras.ops`, so the training step stays XLA-compilable. With a key/value
cache (generation), the projections and cache writes go through
`gpt_keras.decode_ops`, which picks their form for XLA or plain TF.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from gpt_keras import kernels
from gpt_keras.decode_ops import in_xla_context, project, write_cache

# Large negative logit for masked attention scores, as the original code
# (`w * b + -1e9 * (1 - b)`); finite so that an all-masked row stays finite.
_MASK_VALUE = -1e9


def _normal(stddev: float) -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="gpt_keras")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token + learned position embedding; `attend` is the tied LM head.

    Token ids are validated here, the one place every path goes through: an
    out-of-range gather under XLA silently returns a row, so ids are checked
    eagerly (ValueError) or with graph asserts (non-XLA graphs, tf.data).
    """

    def __init__(self, vocabulary_size: int, sequence_length: int, embedding_dim: int,
                 dropout: float = 0.1, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.dropout_layer = keras.layers.Dropout(dropout)

    def build(self, input_shape=None):
        init = _normal(self.initializer_range)
        self.token_embeddings = self.add_weight(
            shape=(self.vocabulary_size, self.embedding_dim), initializer=init, name="token_embeddings")
        self.position_embeddings = self.add_weight(
            shape=(self.sequence_length, self.embedding_dim), initializer=init, name="position_embeddings")
        self.built = True

    def call(self, token_ids, positions, training=None):
        check_token_ids(token_ids, positions, self.vocabulary_size, self.sequence_length)
        x = ops.take(self.token_embeddings, token_ids, axis=0)
        x = x + ops.take(self.position_embeddings, positions, axis=0)
        return self.dropout_layer(x, training=training)

    def attend(self, hidden):
        """Tied LM head: logits = hidden @ token_embeddings^T."""
        # `transpose_b` on 2-D operands: neither the forward nor the backward pass
        # copies the [vocab, dim] table transposed (~2% of a CPU training step).
        flat = ops.reshape(hidden, (-1, self.embedding_dim))
        logits = tf.matmul(flat, ops.cast(self.token_embeddings, hidden.dtype), transpose_b=True)
        return ops.reshape(logits, (*ops.shape(hidden)[:-1], self.vocabulary_size))

    def compute_output_shape(self, token_ids_shape, positions_shape=None):
        return tuple(token_ids_shape) + (self.embedding_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary_size=self.vocabulary_size, sequence_length=self.sequence_length,
                      embedding_dim=self.embedding_dim, dropout=self.dropout,
                      initializer_range=self.initializer_range)
        return config


def check_token_ids(token_ids, positions, vocabulary_size: int, sequence_length: int) -> None:
    """Fail clearly on ids outside [0, vocabulary_size) or positions past n_ctx."""
    static_len = token_ids.shape[-1] if token_ids.shape.rank else None
    if static_len is not None and static_len > sequence_length:
        raise ValueError(f"Sequence length {static_len} exceeds the model context n_ctx={sequence_length}; "
                         "truncate inputs (the task transforms do) or use a model with a larger n_ctx.")
    if tf.executing_eagerly():
        ids = ops.convert_to_numpy(token_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= vocabulary_size):
            raise ValueError(f"Token id out of range: found ids in [{ids.min()}, {ids.max()}], but the "
                             f"embedding has {vocabulary_size} rows (valid ids 0..{vocabulary_size - 1}). "
                             "Check that the tokenizer and the model share a vocabulary.")
        pos = ops.convert_to_numpy(positions)
        if pos.size and pos.max() >= sequence_length:
            raise ValueError(f"Position {pos.max()} exceeds the model context n_ctx={sequence_length}.")
    elif not in_xla_context():  # asserts are dropped under XLA anyway; skipping them avoids warnings
        tf.debugging.assert_non_negative(token_ids, message="token id < 0")
        tf.debugging.assert_less(token_ids, tf.cast(vocabulary_size, token_ids.dtype),
                                 message=f"token id >= vocabulary size {vocabulary_size}")
        tf.debugging.assert_less(positions, tf.cast(sequence_length, positions.dtype),
                                 message=f"position >= n_ctx {sequence_length}")


@keras.saving.register_keras_serializable(package="gpt_keras")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head masked self-attention with an optional key/value cache.

    The cache is a `(keys, values)` pair, each `[batch, n_head, max_len,
    head_dim]`: heads before positions, so that attention reads it without a
    transpose, and two tensors rather than one stacked, so that a decode step
    writes one position of each in place instead of copying the whole cache.
    With a cache, `x` holds only the new positions; they are written at
    `cache_update_index` and attend to every cached position the mask allows.
    """

    def __init__(self, n_embd: int, n_head: int, attn_pdrop: float = 0.1, resid_pdrop: float = 0.1,
                 initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.attn_pdrop = attn_pdrop
        self.resid_pdrop = resid_pdrop
        self.initializer_range = initializer_range
        init = _normal(initializer_range)
        self.c_attn = keras.layers.Dense(3 * n_embd, kernel_initializer=init, name="c_attn")
        self.c_proj = keras.layers.Dense(n_embd, kernel_initializer=init, name="c_proj")
        self.attn_dropout = keras.layers.Dropout(attn_pdrop)
        self.resid_dropout = keras.layers.Dropout(resid_pdrop)

    def build(self, input_shape):
        self.c_attn.build(input_shape)
        self.c_proj.build(tuple(input_shape[:-1]) + (self.n_embd,))
        self.built = True

    def call(self, x, attention_mask=None, cache=None, cache_update_index=None, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        decoding = cache is not None
        qkv = ops.reshape(project(self.c_attn, x, decoding), (batch, length, 3, self.n_head, self.head_dim))
        # One transpose and an unstack, not three slices: the gradient of a
        # slice is a zero-filled tensor of the whole input (3 per layer, ~10%
        # of a bf16 step on CPU without XLA); an unstack's is one stack.
        q, k, v = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), 3)  # each [batch, head, len, dim]
        if decoding:  # the new positions join the cached ones
            k = write_cache(cache[0], k, cache_update_index)
            v = write_cache(cache[1], v, cache_update_index)
            cache = (k, v)
        # Scores, mask and softmax in float32 whatever the compute dtype (mixed
        # precision): -1e9 overflows float16, and bf16 softmax sums lose mass.
        scores = ops.cast(ops.einsum("bhqd,bhkd->bhqk", q, k), "float32") * (1.0 / math.sqrt(self.head_dim))
        if attention_mask is not None:
            scores = ops.where(attention_mask[:, None, :, :], scores, _MASK_VALUE)
        probs = self.attn_dropout(ops.cast(ops.softmax(scores, axis=-1), v.dtype), training=training)
        out = ops.transpose(ops.einsum("bhqk,bhkd->bhqd", probs, v), (0, 2, 1, 3))
        out = self.resid_dropout(project(self.c_proj, ops.reshape(out, (batch, length, self.n_embd)), decoding),
                                 training=training)
        return (out, cache) if decoding else out

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(n_embd=self.n_embd, n_head=self.n_head, attn_pdrop=self.attn_pdrop,
                      resid_pdrop=self.resid_pdrop, initializer_range=self.initializer_range)
        return config


@keras.saving.register_keras_serializable(package="gpt_keras")
class DecoderBlock(keras.layers.Layer):
    """Post-LN transformer block, as GPT-1:

        n = LN_1(x + attn(x));  h = LN_2(n + mlp(n))

    with `mlp(n) = dropout(c_proj(gelu_tanh(c_fc(n))))`. With
    `normalize_first=True`, GPT-2's pre-LN order instead (same weights, same
    names; the backbone then adds a final LayerNorm):

        n = x + attn(LN_1(x));  h = n + mlp(LN_2(n))
    """

    def __init__(self, n_embd: int, n_head: int, n_inner: int, attn_pdrop: float = 0.1,
                 resid_pdrop: float = 0.1, layer_norm_epsilon: float = 1e-5,
                 initializer_range: float = 0.02, normalize_first: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.normalize_first = bool(normalize_first)
        self.n_embd, self.n_head, self.n_inner = n_embd, n_head, n_inner
        self.attn_pdrop, self.resid_pdrop = attn_pdrop, resid_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        init = _normal(initializer_range)
        self.attn = CausalSelfAttention(n_embd, n_head, attn_pdrop, resid_pdrop, initializer_range, name="attn")
        self.ln_1 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ln_1")
        self.c_fc = keras.layers.Dense(n_inner, kernel_initializer=init, name="c_fc")
        self.c_proj = keras.layers.Dense(n_embd, kernel_initializer=init, name="c_proj")
        self.mlp_dropout = keras.layers.Dropout(resid_pdrop)
        self.ln_2 = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="ln_2")

    def build(self, input_shape):
        self.attn.build(input_shape)
        self.ln_1.build(input_shape)
        self.c_fc.build(input_shape)
        self.c_proj.build(tuple(input_shape[:-1]) + (self.n_inner,))
        self.ln_2.build(input_shape)
        self.built = True

    def call(self, x, attention_mask=None, cache=None, cache_update_index=None, training=None):
        decoding = cache is not None
        if self.normalize_first:  # pre-LN (GPT-2)
            a, cache = self._attend(self.ln_1(x), attention_mask, cache, cache_update_index, training)
            n = x + a
            h = n + self._mlp(self.ln_2(n), decoding, training)
        else:  # post-LN (GPT-1)
            a, cache = self._attend(x, attention_mask, cache, cache_update_index, training)
            n = self.ln_1(x + a)
            h = self.ln_2(n + self._mlp(n, decoding, training))
        return (h, cache) if decoding else h

    def _attend(self, x, attention_mask, cache, cache_update_index, training):
        """`(attn(x), the updated cache)`; the cache is None without one."""
        out = self.attn(x, attention_mask=attention_mask, cache=cache, cache_update_index=cache_update_index,
                        training=training)
        return out if cache is not None else (out, None)

    def _mlp(self, x, decoding: bool, training):
        """`dropout(c_proj(gelu_tanh(c_fc(x))))`."""
        a = project(self.c_fc, x, decoding)
        # Under a 16-bit compute dtype the GELU is one fused XLA island (`gpt_keras.kernels`).
        a = kernels.gelu_tanh(a) if kernels.wanted(a.dtype) else keras.activations.gelu(a, approximate=True)
        return self.mlp_dropout(project(self.c_proj, a, decoding), training=training)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(n_embd=self.n_embd, n_head=self.n_head, n_inner=self.n_inner,
                      attn_pdrop=self.attn_pdrop, resid_pdrop=self.resid_pdrop,
                      layer_norm_epsilon=self.layer_norm_epsilon, initializer_range=self.initializer_range,
                      normalize_first=self.normalize_first)
        return config
