"""XLA islands: the elementwise work of a mixed-precision step, fused.

On CPUs a mixed-precision training step runs without XLA, because XLA's CPU
bfloat16 matmuls are no faster than its float32 ones while TF's oneDNN
kernels run bf16 matmuls 3-4x faster (`bench/bench_train.py`'s matmul probe;
`precision.default_jit_compile`). Without XLA, though, every elementwise op
is a separate TF kernel pass over memory: the tanh-GELU is ~8 of them forward
and more backward, the LM loss casts and reads the [tokens, vocab] logits
several times. Here those pieces are compiled alone with XLA, forward and
backward, while the matmuls around them stay on oneDNN.

They are used only where a layer computes in a 16-bit dtype (`wanted`): a
float32 step already runs whole under XLA (where these are simply inlined),
and inference with float32 weights keeps plain TF ops, so varying shapes
never trigger an XLA compile there. Under a mixed policy each new input
shape compiles once (tens of milliseconds per island).
"""
from __future__ import annotations

import tensorflow as tf


def wanted(dtype) -> bool:
    """Whether a layer computing in `dtype` should use the XLA islands."""
    return tf.as_dtype(dtype) in (tf.bfloat16, tf.float16)


def _gelu(x):
    return tf.nn.gelu(x, approximate=True)  # GPT-1's tanh approximation


@tf.function(jit_compile=True)
def _gelu_forward(x):
    return _gelu(x)


@tf.function(jit_compile=True)
def _gelu_backward(x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _gelu(x)
    return tape.gradient(y, x, output_gradients=upstream)


@tf.custom_gradient
def gelu_tanh(x):
    """tanh-GELU as one XLA loop forward and one backward (`custom_gradient`
    so that the backward pass is compiled too: TF does not compile the
    gradient of a `jit_compile` function by itself)."""
    return _gelu_forward(x), lambda upstream: _gelu_backward(x, upstream)


@tf.function(jit_compile=True)
def _xent_forward(labels, logits):
    logits = tf.cast(logits, tf.float32)
    return tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=labels)


@tf.function(jit_compile=True)
def _xent_backward(upstream, backprop, dtype: tf.DType):
    return tf.cast(upstream[:, None] * backprop, dtype)


def sparse_xent(labels, logits):
    """Per-row cross-entropy of integer `labels` [n] against `logits` [n, vocab]
    (any float dtype; computed in float32), fused with its float32 cast."""

    @tf.custom_gradient
    def xent(logits):
        loss, backprop = _xent_forward(labels, logits)
        # The labels get no gradient; the logits' gradient keeps their dtype.
        return loss, lambda upstream: _xent_backward(upstream, backprop, logits.dtype)

    return xent(logits)
