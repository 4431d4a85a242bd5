"""Small builders shared by the tests."""
import numpy as np

import gpt_keras as gk


def tiny_config(**overrides) -> gk.GPTConfig:
    """The `tiny` preset without dropout, so runs are exactly repeatable."""
    values = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)
    values.update(overrides)
    return gk.GPTConfig.from_preset("tiny", **values)


def random_ids(rng: np.random.Generator, shape, vocab_size: int) -> np.ndarray:
    return rng.integers(1, vocab_size, size=shape).astype("int32")
