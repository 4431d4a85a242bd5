"""Text generation: greedy, temperature, top-k and top-p sampling with a KV cache.

    from gpt_keras.generate import generate
    new_ids = generate(lm_model, [tokenizer.encode("the cat")], 20, strategy="sample", top_p=0.9)

From the inside out:

* `sampling`: the next token of each row from its logits (`select_tokens`).
* `core`: the generation loop as plain TF functions of tensors
  (`generate_tokens`, what the LM serving signature wraps) and `Generator`,
  a backbone with its compiled (XLA, optional) `tf.function`s.
* here, `generate`: the Python API (lists of ids in, lists of new ids out)
  with input validation, reusing one `Generator` and one compressed view
  per backbone; `python -m gpt_keras.generate` is its command line.
"""
from __future__ import annotations

import random
import weakref
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from gpt_keras import precision
from gpt_keras.compress import WEIGHT_FORMATS, compressed_backbone
from gpt_keras.generate.core import Generator, generate_tokens
from gpt_keras.model import GPTBackbone
from gpt_keras.preprocessor import pad, ragged_ids

STRATEGIES = ("greedy", "sample")
# Prompts are left-padded to a multiple of this, so that prompts of similar
# length share one compiled (XLA) program instead of one per length.
_PROMPT_BUCKET = 8


# Compiled functions live as long as their backbone, so repeated `generate`
# calls do not recompile.
_GENERATORS: "weakref.WeakKeyDictionary[GPTBackbone, dict[bool, Generator]]" = weakref.WeakKeyDictionary()


def _generator(backbone: GPTBackbone, jit_compile: bool) -> Generator:
    per_backbone = _GENERATORS.setdefault(backbone, {})
    if jit_compile not in per_backbone:
        # A proxy: a strong reference from the value would keep the key alive.
        per_backbone[jit_compile] = Generator(weakref.proxy(backbone), jit_compile=jit_compile)
    return per_backbone[jit_compile]


# Compressed views, rebuilt when the source weights change (checked by a
# checksum: one read of the weights, about the cost of one decode step).
_COMPRESSED: "weakref.WeakKeyDictionary[GPTBackbone, dict[str, tuple[float, Any]]]" = weakref.WeakKeyDictionary()


def _checksum(backbone: GPTBackbone) -> float:
    return float(tf.add_n([tf.reduce_sum(tf.cast(w, tf.float32)) * (i + 1.0) for i, w in enumerate(backbone.weights)]))


def _with_weights(backbone: GPTBackbone, weights: str) -> GPTBackbone:
    """`backbone` itself for fp32, else its (cached) compressed view."""
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"Unknown weights {weights!r}; use one of {WEIGHT_FORMATS}")
    if weights == "fp32" or getattr(backbone, "weight_format", "fp32") != "fp32":
        return backbone
    per_backbone = _COMPRESSED.setdefault(backbone, {})
    checksum = _checksum(backbone)
    if weights not in per_backbone or per_backbone[weights][0] != checksum:
        per_backbone[weights] = (checksum, compressed_backbone(backbone, weights))
    return per_backbone[weights][1]


def as_backbone(model: Any) -> GPTBackbone:
    """`model` if it is a `GPTBackbone`, else its `.backbone` (a `GPTLMModel`'s); TypeError otherwise."""
    if isinstance(model, GPTBackbone):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, GPTBackbone):
        return backbone
    raise TypeError(f"Expected a GPTBackbone or a model with a `.backbone` (GPTLMModel), got {type(model).__name__}")


def _prompt_lists(prompts: Any) -> list[list[int]]:
    """Prompts as lists of ids: from lists, a RaggedTensor, a 2-D array (all
    real tokens), or a dict of padded `token_ids` + `padding_mask`."""
    if isinstance(prompts, dict):
        ids, mask = np.asarray(prompts["token_ids"]), np.asarray(prompts["padding_mask"]).astype(bool)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"token_ids and padding_mask must be 2-D and alike, got {ids.shape} and {mask.shape}")
        return [row[m].tolist() for row, m in zip(ids, mask)]
    if isinstance(prompts, tf.RaggedTensor):
        return prompts.to_list()
    if isinstance(prompts, (tf.Tensor, np.ndarray)):
        array = np.asarray(prompts)
        if array.ndim != 2:
            raise ValueError(f"A prompt array must be 2-D [batch, length], got shape {array.shape}")
        return array.tolist()
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise TypeError("prompts must be token ids (a list of lists of ints, a RaggedTensor or a 2-D array), "
                        f"got {type(prompts).__name__}; encode text with the tokenizer first")
    if prompts and all(isinstance(p, (int, np.integer)) for p in prompts):
        raise TypeError("prompts must be a batch: wrap a single prompt in a list, [[id, id, ...]]")
    return [list(p) for p in prompts]


def _left_pad(prompts: Sequence[Sequence[int]], length: int | None) -> tuple[np.ndarray, np.ndarray]:
    out = pad(ragged_ids(prompts), length, side="left")
    return out["token_ids"].numpy(), out["padding_mask"].numpy()


def _validate(backbone: GPTBackbone, prompts: list[list[int]], max_new_tokens: int, strategy: str,
              temperature: float, top_k: int, top_p: float) -> None:
    config = backbone.config
    if not prompts:
        raise ValueError("No prompts given: pass at least one prompt")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"Prompt {i} is empty: generation needs at least one token to condition on "
                             "(e.g. the `_start_` id)")
        if len(prompt) > config.n_ctx:
            raise ValueError(f"Prompt {i} has {len(prompt)} tokens, more than the model context "
                             f"n_ctx={config.n_ctx}")
        bad = [t for t in prompt if isinstance(t, bool) or not isinstance(t, (int, np.integer))
               or not 0 <= t < config.total_vocab_size]
        if bad:
            raise ValueError(f"Prompt {i} has values that are not token ids in [0, {config.total_vocab_size}): "
                             f"{bad[:5]}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > config.n_ctx:
        raise ValueError(f"The longest prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                         f"the model context n_ctx={config.n_ctx}; shorten the prompt or generate fewer tokens")
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; use one of {STRATEGIES}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")


def generate(model_or_backbone: Any, prompts: Any, max_new_tokens: int, *, strategy: str = "greedy",
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             stop_token_ids: Sequence[int] = (), use_cache: bool = True, jit_compile: bool | None = None,
             weights: str = "auto") -> list[list[int]]:
    """Generates up to `max_new_tokens` ids after each prompt.

    Args:
      model_or_backbone: a `GPTBackbone` or a `GPTLMModel`.
      prompts: a batch of token-id prompts (list of lists, RaggedTensor, 2-D
        array, or a dict of `token_ids` + `padding_mask`); lengths may differ.
      max_new_tokens: new tokens per prompt at most; prompt + new <= n_ctx.
      strategy: "greedy" (argmax) or "sample" (with temperature, top_k, top_p).
      seed: sampling seed (row i uses seed + i); None draws one at random.
      stop_token_ids: ids that end a row; they are not part of its output.
      use_cache: False runs the slow uncached reference (eager, no XLA).
      jit_compile: compile the decode loop with XLA; None (default) = XLA
        for fp32 weights, a plain TF graph for compressed ones (XLA's CPU
        bf16 dots are slower than its fp32 ones; oneDNN's are faster).
      weights: "fp32", or "bf16": generate with a bf16 copy of every matrix
        and of the tied LM head (`gpt_keras.compress`), half the bytes per
        step; the model itself stays fp32. "auto" (default): bf16 where it was
        measured faster (one row, a CPU with AMX), else fp32
        (`gpt_keras.precision.resolve_weights`).
    Returns:
      The new ids of each prompt (without padding or stop tokens).
    """
    backbone = as_backbone(model_or_backbone)
    prompts = _prompt_lists(prompts)
    _validate(backbone, prompts, max_new_tokens, strategy, temperature, top_k, top_p)
    backbone = _with_weights(backbone, precision.resolve_weights(weights, len(prompts)))
    if jit_compile is None:
        jit_compile = getattr(backbone, "weight_format", "fp32") == "fp32"
    stop = [int(t) for t in stop_token_ids]
    batch, budget = len(prompts), int(max_new_tokens)
    # Bucketed prompt length (fewer XLA compiles); still fits the context.
    longest = max(len(p) for p in prompts)
    length = min(-(-longest // _PROMPT_BUCKET) * _PROMPT_BUCKET, backbone.config.n_ctx - budget)
    ids, mask = _left_pad(prompts, length)
    if seed is None:
        seed = random.randrange(2**31)
    settings = (np.full([batch], budget, np.int32),
                np.full([batch], temperature if strategy == "sample" else 0.0, np.float32),
                np.full([batch], top_k, np.int32), np.full([batch], top_p, np.float32),
                np.arange(batch, dtype=np.int64) + int(seed), np.asarray(stop, np.int32).reshape([-1]))
    if use_cache:
        tokens, lengths = _generator(backbone, jit_compile)(ids, mask, *settings, budget=budget)
    else:
        tokens, lengths = generate_tokens(backbone, ids, mask, *settings, budget=budget, use_cache=False)
    tokens, lengths = tokens.numpy(), lengths.numpy()
    return [tokens[i, :lengths[i]].tolist() for i in range(batch)]
