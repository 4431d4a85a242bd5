"""Mixed precision: the training dtype policies and where they apply.

Variables stay float32; under a mixed policy the layers compute in bfloat16
or float16. LayerNorm statistics (Keras computes them in float32), the
attention softmax (`gpt_keras.layers`) and every loss (`gpt_keras.model`)
stay float32. `mixed_float16` also needs dynamic loss scaling, which
`gpt_keras.optim.OpenAIAdam` does (`dynamic_loss_scale=True`).

Keras has one global policy, read when a layer is constructed. Training
sets it only while its model is built (`dtype_policy`), so later stages of
the same process (evaluation, export, generation) build float32 models.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import tensorflow as tf

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def check_policy(name: str) -> str:
    """Validate a training dtype policy name; returns it."""
    if name not in POLICIES:
        raise ValueError(f"unknown dtype policy {name!r}; expected one of {POLICIES} "
                         "(variables stay float32; the mixed policies compute in bfloat16 or float16)")
    return name


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to `name` inside the block, and the
    previous one restored after it (also on error)."""
    check_policy(name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def needs_loss_scaling(name: str) -> bool:
    """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
    return check_policy(name) == "mixed_float16"


def default_jit_compile(name: str) -> bool:
    """Whether a training step under policy `name` should use XLA by default.

    Measured by `bench/bench_train.py` on an AVX512_BF16/AMX CPU: XLA's CPU
    bfloat16 matmuls are no faster than its float32 ones, TF's oneDNN bf16
    kernels 3-5x faster; with the XLA islands of `gpt_keras.kernels` a
    gpt1 bf16 step without XLA runs ~1.8x float32 + XLA. So on CPUs a mixed
    step runs without XLA; float32 steps, and every policy on GPUs/TPUs,
    keep XLA.
    """
    check_policy(name)
    if name == "float32":
        return True
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
