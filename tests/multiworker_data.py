"""Data and settings shared by the multi-worker test and its worker processes."""
import numpy as np
import tensorflow as tf

import gpt_keras as gk

SETTINGS = dict(learning_rate=1e-2, schedule="constant", epochs=2, steps_per_epoch=1, max_grad_norm=0.05,
                verbose=0)


def config() -> gk.GPTConfig:
    return gk.GPTConfig.from_preset("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)


def batches() -> tf.data.Dataset:
    """Global batches of 8 whose halves are padded very differently."""
    rng = np.random.default_rng(11)
    ids = rng.integers(1, 97, (16, 12)).astype("int32")
    mask = np.ones_like(ids)
    mask[0:4, 4:] = 0
    mask[8:12, 2:] = 0
    return tf.data.Dataset.from_tensor_slices({"token_ids": ids * mask, "padding_mask": mask}).batch(8)
