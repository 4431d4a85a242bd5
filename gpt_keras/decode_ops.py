"""The decode step's CPU/XLA op choices, kept out of `gpt_keras.layers`.

A decode step feeds one new position per row against the key/value cache.
It runs either inside XLA (`gpt_keras.generate`'s compiled loop) or as plain
TF ops (an exported SavedModel: the stock server leaves CPU XLA off), and
each context wants a different form of two ops, which the blocks call only
when they are given a cache:

* `write_cache`: the new keys/values into the cache, in place under XLA, as
  a scatter of the new rows outside it;
* `project`: a Dense layer, with the bias added apart from the matmul under
  XLA, so that XLA:CPU runs the matmul on its multi-threaded kernel.

Both compute the same values as the plain ops. `in_xla_context` is the test
they branch on; it also tells the input checks to skip asserts XLA drops.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def in_xla_context() -> bool:
    """Whether ops built now run under XLA (a `jit_compile` function)."""
    from tensorflow.python.ops import control_flow_util  # pylint: disable=g-import-not-at-top
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)


def write_cache(cache, new, index):
    """cache[:, :, index:index+len(new)] = new, for `[batch, n_head, len, head_dim]` tensors.

    Under XLA this is one dynamic-update-slice on the loop-carried buffer, done
    in place. `ops.slice_update` is XlaDynamicUpdateSlice on TF, an XLA-only op
    that an exported SavedModel cannot carry; outside XLA the same write is
    done with core ops.
    """
    if in_xla_context():
        return ops.slice_update(cache, [0, 0, index, 0], new)
    # A scatter of the new rows (TF may reuse the cache's buffer when nothing
    # else holds it); a pad + select rewrote every layer's whole cache: in a
    # gpt1 bf16-weights profile 3.9 ms of a 29 ms token, the scatter 1.3 ms.
    batch, heads, length = tf.unstack(tf.shape(new)[:3])
    rows, head_ids, slots = tf.meshgrid(tf.range(batch), tf.range(heads), index + tf.range(length), indexing="ij")
    return tf.tensor_scatter_nd_update(cache, tf.stack([rows, head_ids, slots], axis=-1), new)


def project(layer, x, decoding: bool):
    """`layer(x)`; in an XLA decode step, with the bias added apart from the matmul.

    XLA:CPU fuses `dot + bias` into one fusion that it emits as its own
    single-threaded matrix-vector loop; an unfused dot runs on the runtime's
    multi-threaded kernel. For a batch-1 gpt1 decode step, 35.9 ms per token
    fused against 27.6 ms unfused (a profile). A second use of the product
    (`0 * y[..., :1]`, exact for finite values) is what keeps XLA from fusing.
    Layers that are not Keras Dense (a `gpt_keras.compress` view's) run as they are.
    """
    if not (decoding and isinstance(layer, keras.layers.Dense) and in_xla_context()):
        return layer(x)
    y = ops.matmul(x, ops.cast(layer.kernel, x.dtype))
    return y + ops.cast(layer.bias, y.dtype) + 0.0 * y[..., :1]
