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
import functools
import logging
import os
from typing import Iterator

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
AUTO = "auto"  # resolved per machine and model by `resolve_policy`
CHOICES = (AUTO,) + POLICIES

# CPU flags with bfloat16 arithmetic in hardware (oneDNN's bf16 kernels use them).
# Without them bf16 is emulated: on a 2-core AVX2 EPYC a gpt1 bf16 training step
# ran 0.97x fp32 + XLA and bf16-weight generation 0.23x fp32 (issue 24); with
# avx512_bf16 (Zen 4 EPYC, no AMX) a gpt1 bf16 step ran 1.26x fp32 + XLA, with
# AMX (Xeon) 1.79x (bench/bench_train.py).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Below this width a step is not matmul-bound and bf16 did not pay even with AMX
# (the demo's 256-wide pre-training: 205 s bf16 against 145-205 s fp32).
AUTO_BF16_MIN_WIDTH = 512
# oneDNN's ONEDNN_MAX_CPU_ISA values that still use bf16 instructions: any other
# limit (e.g. AVX2, which bench/ sets to measure an AVX2 CPU) makes bf16 emulated.
ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16() -> str | None:
    """The CPU flag that gives this machine bfloat16 arithmetic ("amx_bf16",
    "avx512_bf16"), or None: no such flag, or oneDNN limited below it."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if limit and limit not in ONEDNN_BF16_ISAS:
        return None
    found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    return found[-1] if found else None


def fast_bf16() -> str | None:
    """Why this machine computes bfloat16 in hardware ("GPU compute capability
    8.0", "CPU flag amx_bf16"), or None when it would emulate it."""
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if tuple(capability) >= (8, 0):  # Ampere and newer: bf16 tensor cores
            return f"GPU compute capability {capability[0]}.{capability[1]}"
    if tf.config.list_physical_devices("TPU"):
        return "TPU"
    flag = cpu_bf16()
    return f"CPU flag {flag}" if flag else None


def check_policy(name: str, allow_auto: bool = False) -> str:
    """Validate a training dtype policy name (with `allow_auto`, also "auto"); returns it."""
    if name not in (CHOICES if allow_auto else POLICIES):
        raise ValueError(f"unknown dtype policy {name!r}; expected one of {CHOICES if allow_auto else POLICIES} "
                         "(variables stay float32; the mixed policies compute in bfloat16 or float16)")
    return name


def resolve_policy(name: str, n_embd: int) -> str:
    """The concrete policy for training a model `n_embd` wide on this machine.

    "auto": mixed_bfloat16 where bfloat16 is computed in hardware and the model
    is at least AUTO_BF16_MIN_WIDTH wide, else float32 (never slower than
    float32 on the machines measured). An explicit mixed_bfloat16 on a machine
    that would emulate it is kept, with one warning saying what it costs."""
    check_policy(name, allow_auto=True)
    reason = fast_bf16()
    if name == AUTO:
        chosen = "mixed_bfloat16" if reason and n_embd >= AUTO_BF16_MIN_WIDTH else "float32"
        log.info("dtype_policy auto -> %s (%s; model %d wide, bf16 from %d)", chosen,
                 reason or "no bf16 hardware", n_embd, AUTO_BF16_MIN_WIDTH)
        return chosen
    if name == "mixed_bfloat16" and reason is None:
        _warn_emulated("dtype_policy mixed_bfloat16", "a gpt1 training step ran 0.97x float32 + XLA on an AVX2 "
                       "CPU", "float32 or auto")
    return name


@functools.lru_cache(maxsize=None)
def _warn_emulated(what: str, measured: str, instead: str) -> None:
    """One warning per setting and process (cached)."""
    log.warning("%s on a machine without bfloat16 hardware (no GPU with compute capability >= 8.0, no CPU flag "
                "%s): bfloat16 is emulated and slower (measured: %s); use %s", what, " or ".join(BF16_CPU_FLAGS),
                measured, instead)


def resolve_weights(weights: str, batch_size: int) -> str:
    """The weight format generation uses: "auto" -> "bf16" for one row on a CPU
    with AMX (bf16 weights decoded 1.09x fp32 there at batch 1, 0.87x at batch
    8), else "fp32": with AVX512_BF16 alone (Zen 4) they ran 1.00x fp32 at
    batch 1, so exact fp32 is kept; a GPU keeps fp32 too (bf16 weights run on
    oneDNN's CPU kernels). An explicit "bf16" without bf16 hardware warns once
    (it ran 0.23x fp32 on an AVX2 CPU)."""
    if weights == AUTO:
        on_cpu = not tf.config.list_physical_devices("GPU")
        return "bf16" if batch_size == 1 and on_cpu and cpu_bf16() == "amx_bf16" else "fp32"
    if weights == "bf16" and fast_bf16() is None:
        _warn_emulated('weights="bf16"', "generation at 0.23x fp32 on an AVX2 CPU", 'weights="fp32" or "auto"')
    return weights


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
