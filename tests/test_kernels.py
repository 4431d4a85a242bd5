"""XLA islands (`gpt_keras.kernels`) and the cheaper LM-loss / optimizer
formulations: same values and gradients as the plain TF ops they replace."""
import numpy as np
import pytest
import tensorflow as tf
from helpers import random_ids, tiny_config

import gpt_keras as gk
from gpt_keras import kernels
from gpt_keras.losses import lm_head_loss_sum, lm_loss_sum
from gpt_keras.optim import OpenAIAdam


def _value_and_grad(fn, x):
    """fn(x) and the gradient of <fn(x), u> for a fixed non-uniform u."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    upstream = tf.reshape(tf.cast(tf.linspace(-1.0, 1.0, tf.size(y)), y.dtype), tf.shape(y))
    return y, tape.gradient(y, x, output_gradients=upstream)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_gelu_island_matches_tf_gelu_and_its_gradient(dtype, tol):
    x = tf.cast(tf.random.stateless_normal((3, 5, 64), (1, 2)) * 3.0, dtype)
    y, dx = _value_and_grad(kernels.gelu_tanh, x)
    y_ref, dx_ref = _value_and_grad(lambda v: tf.nn.gelu(v, approximate=True), x)
    assert y.dtype == dx.dtype == x.dtype
    np.testing.assert_allclose(tf.cast(y, "float32"), tf.cast(y_ref, "float32"), atol=tol, rtol=tol)
    np.testing.assert_allclose(tf.cast(dx, "float32"), tf.cast(dx_ref, "float32"), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_xent_island_matches_sparse_softmax_cross_entropy(dtype):
    logits = tf.cast(tf.random.stateless_normal((12, 50), (3, 4)) * 4.0, dtype)
    labels = tf.constant(np.random.default_rng(0).integers(0, 50, 12), tf.int32)
    loss, grad = _value_and_grad(lambda v: kernels.sparse_xent(labels, v), logits)
    ref = lambda v: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(v, "float32"))
    loss_ref, grad_ref = _value_and_grad(ref, logits)
    assert loss.dtype == tf.float32 and grad.dtype == logits.dtype
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.cast(grad, "float32"), tf.cast(grad_ref, "float32"), rtol=1e-2, atol=1e-3)


def test_islands_apply_only_to_16_bit_compute():
    assert kernels.wanted("bfloat16") and kernels.wanted(tf.float16)
    assert not kernels.wanted("float32")


@pytest.mark.parametrize("padding", ["right", "left"])
def test_lm_head_loss_on_shifted_hidden_states_equals_the_full_logits_loss(padding):
    backbone = gk.GPTBackbone(**tiny_config().to_dict())
    ids = random_ids(np.random.default_rng(1), (3, 9), 97)
    mask = np.ones_like(ids)
    if padding == "right":
        mask[0, 6:] = 0
    else:
        mask[1, :4] = 0
    inputs = {"token_ids": ids, "padding_mask": mask}
    with tf.GradientTape(persistent=True) as tape:
        hidden = backbone(inputs)
        full = lm_loss_sum(backbone.embed.attend(hidden), ids, mask)
        shifted = lm_head_loss_sum(backbone.embed, hidden, ids, mask)
    np.testing.assert_allclose(full[0], shifted[0], rtol=1e-5)
    assert float(full[1]) == float(shifted[1])
    table = backbone.embed.token_embeddings
    np.testing.assert_allclose(tape.gradient(full[0], table), tape.gradient(shifted[0], table), atol=1e-6)


def test_fused_adam_update_is_the_original_update():
    """p -= lr_t (m / (sqrt(v) + eps) + l2 p), lr_t bias-corrected (the original opt.py)."""
    w0 = np.random.default_rng(2).standard_normal((4, 3)).astype("float32")
    grads = [np.random.default_rng(s).standard_normal((4, 3)).astype("float32") for s in (3, 4)]
    var = tf.Variable(w0)
    opt = OpenAIAdam(learning_rate=0.1, max_grad_norm=0.0)
    w, m, v = w0.astype("float64"), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        opt.apply_gradients([(tf.constant(g), var)])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        lr_t = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        w = w - lr_t * (m / (np.sqrt(v) + 1e-8) + 0.01 * w)
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-6)
