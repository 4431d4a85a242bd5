"""Run a batch of task inputs as at most two length buckets, in the graph.

A served batch is padded to its longest row, and on CPU a row costs about
its padded length: in a server-side batch of 16 Rotten Tomatoes sentences
(30 tokens on average, the longest ~60) about 40% of the model's work is
padding. The export therefore sorts the rows by length and, when it pays,
splits them into a short and a long bucket, each padded to its own longest
row, runs the model once per bucket and puts the rows back in order.
Padding never changes a result (masked positions are excluded everywhere),
so the outputs equal one call on the whole batch.

A model call also has a fixed cost (hundreds of small ops; ~2.5 ms for the
`demo` preset on a 2-core Xeon, as much as ~55 tokens), so a split is taken
only when it saves more padded tokens than that cost (`estimated_call_cost`;
an export may set its own).
A single row never splits. Core TF ops only (a `tf.while_loop` over the
buckets, so the model is in the graph once): no XLA, as the stock
`tensorflow_model_server` needs.
"""
from __future__ import annotations

from typing import Callable

import tensorflow as tf

# The fixed cost of one model call, in padded tokens' worth of work, at
# n_embd = 256 (the `demo` preset: 2.6 ms of fixed cost, 0.045 ms per token on
# a 2-core Xeon, bench/profile_serving.py). Per-token work grows with
# n_embd ** 2 and the fixed cost (op count) does not, so larger models get a
# smaller figure (`estimated_call_cost`).
DEMO_CALL_COST_TOKENS = 55
_DEMO_WIDTH = 256


def estimated_call_cost(n_embd: int) -> int:
    """The fixed cost of a model call of width `n_embd`, in tokens (>= 4)."""
    return max(4, round(DEMO_CALL_COST_TOKENS * (_DEMO_WIDTH / n_embd) ** 2))


def split_point(lengths: tf.Tensor, call_cost: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(order, k): the rows sorted by length, and how many of the shortest go
    into the first bucket (k = 0: no split).

    A bucket of n rows padded to length L costs n * L tokens plus
    `call_cost`; k minimises the total over the two buckets, and is kept only
    when it beats one bucket."""
    lengths = tf.cast(lengths, tf.int64)
    order = tf.argsort(lengths, stable=True)
    ordered = tf.gather(lengths, order)
    n = tf.size(ordered, out_type=tf.int64)
    longest = ordered[-1:]  # empty for an empty batch
    one = n * tf.reduce_sum(longest)  # the cost of one bucket (0 when empty)
    k = tf.range(1, tf.maximum(n, 1), dtype=tf.int64)  # candidate sizes of the short bucket
    two = k * ordered[:-1] + (n - k) * tf.reduce_sum(longest) + call_cost  # ordered[k - 1] = ordered[:-1]
    best = tf.argmin(tf.concat([[one], two], 0), output_type=tf.int64)  # 0 = one bucket
    return order, best


def forward_in_buckets(forward: Callable[[tf.RaggedTensor], tf.Tensor], token_ids: tf.RaggedTensor,
                       call_cost: int) -> tf.Tensor:
    """`forward(token_ids)` over rows [batch, ...], run as at most two
    length buckets (`split_point`); rows come back in their input order.

    `token_ids` is ragged [batch, n_seq, (len)]; `forward` pads a ragged
    batch and returns one output row per input row."""
    lengths = tf.reduce_max(token_ids.row_lengths(axis=2), axis=1)  # a row's longest sequence
    order, k = split_point(lengths, call_cost)
    n = tf.size(order, out_type=tf.int64)
    bounds = tf.concat([[0], tf.boolean_mask([k], [k > 0]), [n]], 0)  # [0, n] or [0, k, n]
    sorted_ids = tf.gather(token_ids, order)

    row_shape = []  # the static shape of an output row, seen when the loop body is traced

    def body(i, outputs):
        out = tf.cast(forward(sorted_ids[bounds[i]:bounds[i + 1]]), tf.float32)
        row_shape[:] = out.shape[1:]
        return i + 1, outputs.write(tf.cast(i, tf.int32), out)

    buckets = tf.size(bounds, out_type=tf.int64) - 1
    empty = tf.TensorArray(tf.float32, size=0, dynamic_size=True, infer_shape=False)
    _, outputs = tf.while_loop(lambda i, _: i < buckets, body, (tf.constant(0, tf.int64), empty))
    merged = outputs.concat()
    merged.set_shape([None, *row_shape])
    return tf.gather(merged, tf.math.invert_permutation(order))
