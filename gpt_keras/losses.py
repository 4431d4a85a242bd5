"""The language-modelling loss L1 (eq. 1): next-token cross-entropy over pairs of real tokens.

Returned as (sum, count) so `gpt_keras.step` can normalise by the global number
of predicted tokens across replicas.
"""
from __future__ import annotations

import keras
from keras import ops

from gpt_keras import kernels


def lm_loss_sum(logits, token_ids, padding_mask):
    """Summed next-token cross-entropy and the number of predicted tokens.

    Position t predicts t+1 when both are real tokens, so padding (right or left)
    never contributes.
    """
    return _next_token_loss_sum(logits[..., :-1, :], token_ids, padding_mask)


def lm_head_loss_sum(embed, hidden, token_ids, padding_mask):
    """`lm_loss_sum` of the tied head's logits, computed from the hidden states.

    The head runs on every position but the last (which predicts nothing), so
    training never slices the [batch, length, vocab] logits: the gradient of
    that slice is a zero-filled tensor as large as the logits (~10% of a CPU
    step at gpt1 size without XLA).
    """
    return _next_token_loss_sum(embed.attend(hidden[..., :-1, :]), token_ids, padding_mask)


def _next_token_loss_sum(shifted_logits, token_ids, padding_mask):
    # shifted_logits[..., t, :] predicts token t + 1.
    mask = ops.cast(padding_mask, "bool")
    valid = ops.cast(ops.logical_and(mask[..., :-1], mask[..., 1:]), "float32")
    labels = token_ids[..., 1:]
    if kernels.wanted(shifted_logits.dtype):  # mixed precision: the cast and the loss fused
        vocab = ops.shape(shifted_logits)[-1]
        losses = ops.reshape(kernels.sparse_xent(ops.reshape(labels, (-1,)), ops.reshape(shifted_logits, (-1, vocab))),
                             ops.shape(labels))
    else:
        losses = keras.losses.sparse_categorical_crossentropy(labels, shifted_logits, from_logits=True)
    return ops.sum(losses * valid), ops.sum(valid)
