"""The sampling core: the next token of each row from its logits.

Every setting is a per-row tensor, so one batch can mix greedy and sampled
rows: a row is greedy when its temperature is 0; `top_k=0` and `top_p=1`
disable those filters. Sampling uses the Gumbel-max trick with stateless
random numbers keyed by (row seed, step): a row's draws depend on its seed
only, not on the batch, and are the same with or without XLA.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def _gumbel_noise(seeds: tf.Tensor, step: tf.Tensor, vocab_size: tf.Tensor) -> tf.Tensor:
    """Gumbel(0, 1) noise `[batch, vocab]`; row i is keyed by (seeds[i], step).

    Philox bits from the stateless op with an explicit key and counter, turned
    into floats here: XLA and the plain TF kernels give the same bits, but not
    the same floats from `tf.random.stateless_uniform`, and a seed must draw the
    same tokens with or without XLA (and in an exported SavedModel).
    """
    counter = tf.stack([tf.cast(step, tf.uint64), tf.constant(0, tf.uint64)])

    def row(seed):
        return tf.raw_ops.StatelessRandomUniformFullIntV2(
            shape=tf.reshape(vocab_size, [1]), key=tf.reshape(seed, [1]), counter=counter,
            alg=1, dtype=tf.uint32)  # alg 1 = Philox

    bits = tf.map_fn(row, tf.cast(seeds, tf.uint64), fn_output_signature=tf.uint32)
    # 24 random bits -> uniform in (0, 1), never 0 or 1, so both logs are finite.
    uniform = (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) + 0.5) * 2.0**-24
    return -tf.math.log(-tf.math.log(uniform))


def _filter_top_k_top_p(logits: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Sets logits outside each row's top-k, then outside its nucleus (top-p of
    the top-k distribution), to -inf. `top_k <= 0` and `top_p >= 1` keep all."""
    vocab = tf.shape(logits)[-1]
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    ranks = tf.range(vocab)[None, :]
    in_top_k = ranks < k[:, None]
    probs = tf.nn.softmax(tf.where(in_top_k, sorted_logits, -np.inf), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays while the
    # mass strictly before it is < top_p (so the most likely one always stays).
    mass_before = tf.cumsum(probs, axis=-1, exclusive=True)
    keep = tf.logical_and(in_top_k, mass_before < top_p[:, None])
    n_keep = tf.maximum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1), 1)
    threshold = tf.gather(sorted_logits, n_keep - 1, batch_dims=1)
    return tf.where(logits >= threshold[:, None], logits, -np.inf)


def select_tokens(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
                  seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """Next token per row from `[batch, vocab]` logits, with per-row settings.

    Rows with `temperature <= 0` take the argmax. The others sample from
    softmax(logits / temperature) restricted by top-k and top-p. The sort
    that filtering needs only runs when some sampling row asks for it.
    """
    logits = tf.cast(logits, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    sampling = temperature > 0

    def sample():
        scaled = logits / tf.where(sampling, temperature, 1.0)[:, None]
        filtering = tf.reduce_any(sampling & ((top_k > 0) | (top_p < 1.0)))
        scaled = tf.cond(filtering, lambda: _filter_top_k_top_p(scaled, top_k, top_p), lambda: scaled)
        noise = _gumbel_noise(seeds, step, tf.shape(logits)[-1])
        sampled = tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)
        return tf.where(sampling, sampled, greedy)

    return tf.cond(tf.reduce_any(sampling), sample, lambda: greedy)
