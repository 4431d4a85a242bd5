"""Text generation: greedy, temperature, top-k and top-p sampling with a KV cache.

Three layers, from the inside out:

* `select_tokens` and `generate_tokens`: plain TensorFlow functions of
  tensors. Prompts are LEFT-padded `[batch, L]` ids + mask, and every sampling
  setting is a per-row tensor (`max_new_tokens`, `temperature`, `top_k`,
  `top_p`, `seeds`), so one batch can mix greedy and sampled rows. They need
  no XLA: this is the core the LM serving signature wraps (with a fixed
  `budget`, the documented upper bound on `max_new_tokens`).
* `Generator`: a `tf.Module` owning the backbone and the compiled
  `tf.function`s (XLA via `jit_compile`, optional).
* `generate`: the Python API (lists of ids in, lists of new ids out) with
  input validation, and the `python -m gpt_keras.generate` command line.

Conventions of the core: a row is greedy when its temperature is 0; `top_k=0`
and `top_p=1` disable those filters. The prompt is run once (prefill), then
the loop feeds one position per step through the layers' cache path
(`GPTBackbone.call_with_cache`).
Positions come from the padding mask, so left padding shifts nothing. A row
ends at a stop token (not part of its output) or at its `max_new_tokens`;
finished rows emit padding (id 0) and the loop exits once every row is done.
Sampling uses the Gumbel-max trick with stateless random numbers keyed by
(row seed, step): a row's draws depend on its seed only, not on the batch.
"""
from __future__ import annotations

import argparse
import random
import sys
import weakref
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from gpt_keras import precision
from gpt_keras.compress import WEIGHT_FORMATS, compressed_backbone, compressed_logits
from gpt_keras.decode_ops import in_xla_context
from gpt_keras.model import GPTBackbone, position_ids
from gpt_keras.preprocessor import pad, ragged_ids

STRATEGIES = ("greedy", "sample")
# Prompts are left-padded to a multiple of this, so that prompts of similar
# length share one compiled (XLA) program instead of one per length.
_PROMPT_BUCKET = 8


# ---------------------------------------------------------------- graph core

def lm_head(backbone: GPTBackbone) -> tf.Tensor:
    """The tied LM head as a `[n_embd, vocab]` matrix, for `lm_logits`.

    Transposed once per generate call, outside the decode loop: a matmul
    against the stored `[vocab, n_embd]` table with `transpose_b` (or
    `embed.attend`, which transposes it in every step) runs 2-3x slower on
    CPU for a batch of 8 rows. Only the BPE rows: a special token
    (`_start_`, `_delimiter_`, `_classify_`) is an input marker, never text,
    so generation can never emit one.
    """
    return tf.transpose(backbone.embed.token_embeddings[:backbone.config.vocab_size])


def lm_logits(head: tf.Tensor, hidden: tf.Tensor) -> tf.Tensor:
    """Float32 logits `[batch, vocab]` from hidden states `[batch, n_embd]`."""
    return tf.cast(tf.matmul(hidden, tf.cast(head, hidden.dtype)), tf.float32)


def head_logits(backbone: GPTBackbone):
    """`hidden [batch, n_embd] -> float32 logits [batch, vocab]` for this
    backbone: its compressed head if it is a `gpt_keras.compress` view, else
    `lm_logits` with `lm_head` (taken once, outside the decode loop)."""
    if getattr(backbone, "lm_head_layer", None) is not None:
        return lambda hidden: compressed_logits(backbone, hidden)
    head = lm_head(backbone)
    return lambda hidden: lm_logits(head, hidden)


def _gumbel_noise(seeds: tf.Tensor, step: tf.Tensor, vocab_size: tf.Tensor) -> tf.Tensor:
    """Gumbel(0, 1) noise `[batch, vocab]`; row i is keyed by (seeds[i], step).

    Philox bits from the stateless op with an explicit key and counter, turned
    into floats here: XLA and the plain TF kernels give the same bits, but not
    the same floats from `tf.random.stateless_uniform`, and a seed must draw the
    same tokens with or without XLA (and in an exported SavedModel).
    """
    counter = tf.stack([tf.cast(step, tf.uint64), tf.constant(0, tf.uint64)])

    def row(seed):
        return tf.raw_ops.StatelessRandomUniformFullIntV2(
            shape=tf.reshape(vocab_size, [1]), key=tf.reshape(seed, [1]), counter=counter,
            alg=1, dtype=tf.uint32)  # alg 1 = Philox

    bits = tf.map_fn(row, tf.cast(seeds, tf.uint64), fn_output_signature=tf.uint32)
    # 24 random bits -> uniform in (0, 1), never 0 or 1, so both logs are finite.
    uniform = (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) + 0.5) * 2.0**-24
    return -tf.math.log(-tf.math.log(uniform))


def _filter_top_k_top_p(logits: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Sets logits outside each row's top-k, then outside its nucleus (top-p of
    the top-k distribution), to -inf. `top_k <= 0` and `top_p >= 1` keep all."""
    vocab = tf.shape(logits)[-1]
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    ranks = tf.range(vocab)[None, :]
    in_top_k = ranks < k[:, None]
    probs = tf.nn.softmax(tf.where(in_top_k, sorted_logits, -np.inf), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays while the
    # mass strictly before it is < top_p (so the most likely one always stays).
    mass_before = tf.cumsum(probs, axis=-1, exclusive=True)
    keep = tf.logical_and(in_top_k, mass_before < top_p[:, None])
    n_keep = tf.maximum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1), 1)
    threshold = tf.gather(sorted_logits, n_keep - 1, batch_dims=1)
    return tf.where(logits >= threshold[:, None], logits, -np.inf)


def select_tokens(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
                  seeds: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
    """Next token per row from `[batch, vocab]` logits, with per-row settings.

    Rows with `temperature <= 0` take the argmax. The others sample from
    softmax(logits / temperature) restricted by top-k and top-p. The sort
    that filtering needs only runs when some sampling row asks for it.
    """
    logits = tf.cast(logits, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    sampling = temperature > 0

    def sample():
        scaled = logits / tf.where(sampling, temperature, 1.0)[:, None]
        filtering = tf.reduce_any(sampling & ((top_k > 0) | (top_p < 1.0)))
        scaled = tf.cond(filtering, lambda: _filter_top_k_top_p(scaled, top_k, top_p), lambda: scaled)
        noise = _gumbel_noise(seeds, step, tf.shape(logits)[-1])
        sampled = tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)
        return tf.where(sampling, sampled, greedy)

    return tf.cond(tf.reduce_any(sampling), sample, lambda: greedy)


class _Settings:
    """The per-row inputs of the core, as tensors of the right dtypes."""

    def __init__(self, max_new_tokens, temperature, top_k, top_p, seeds, stop_token_ids):
        self.max_new_tokens = tf.convert_to_tensor(max_new_tokens, tf.int32)
        self.temperature = tf.convert_to_tensor(temperature, tf.float32)
        self.top_k = tf.convert_to_tensor(top_k, tf.int32)
        self.top_p = tf.convert_to_tensor(top_p, tf.float32)
        self.seeds = tf.convert_to_tensor(seeds, tf.int64)
        self.stop_token_ids = tf.reshape(tf.convert_to_tensor(stop_token_ids, tf.int32), [-1])

    def select(self, logits, step):
        return select_tokens(logits, self.temperature, self.top_k, self.top_p, self.seeds, step)

    def record(self, token, step, budget, tokens, lengths, done):
        """Writes the token chosen at `step` into the outputs; returns the new
        (tokens, lengths, done). A stop token ends its row and is not emitted."""
        is_stop = tf.reduce_any(token[:, None] == self.stop_token_ids[None, :], axis=-1)
        emit = tf.logical_and(tf.logical_not(done), tf.logical_not(is_stop))
        column = tf.range(budget)[None, :] == step
        tokens = tf.where(tf.logical_and(column, emit[:, None]), token[:, None], tokens)
        lengths = lengths + tf.cast(emit, tf.int32)
        done = done | is_stop | (step + 1 >= self.max_new_tokens)
        return tokens, lengths, done


def generate_tokens(backbone: GPTBackbone, token_ids, padding_mask, max_new_tokens, temperature, top_k,
                    top_p, seeds, stop_token_ids, budget: int, use_cache: bool = True
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    """The generation core: tensors in, tensors out; plain TF (no XLA needed).

    Args:
      backbone: the model.
      token_ids, padding_mask: `[batch, L]` LEFT-padded prompts (every row has
        at least one real token).
      max_new_tokens: `[batch]` int, each clipped to `budget` (a row with 0
        generates nothing).
      temperature: `[batch]` float; 0 = greedy.
      top_k: `[batch]` int; 0 = off.  top_p: `[batch]` float in (0, 1]; 1 = off.
      seeds: `[batch]` int, keys of the row's random numbers.
      stop_token_ids: `[n]` int (may be empty).
      budget: static upper bound on new tokens: the cache holds `L + budget`
        positions, which must be <= n_ctx.
      use_cache: False recomputes the whole prefix at every step (the
        reference the cached path is tested against; eager only, slow).
    Returns:
      (`[batch, budget]` int32 new tokens, 0 after a row's end;
       `[batch]` int32 number of new tokens per row, stop tokens excluded).
    """
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    padding_mask = tf.cast(tf.convert_to_tensor(padding_mask), tf.int32)
    settings = _Settings(max_new_tokens, temperature, top_k, top_p, seeds, stop_token_ids)
    batch, prompt_len = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    n_ctx = backbone.config.n_ctx
    budget = int(budget)
    if budget < 1:
        raise ValueError(f"budget (the max_new_tokens bound) must be >= 1, got {budget}")
    static_len = token_ids.shape[1]
    if static_len is not None and static_len + budget > n_ctx:
        raise ValueError(f"prompt length {static_len} + max_new_tokens {budget} exceeds n_ctx={n_ctx}")
    checks = []
    if not in_xla_context():  # asserts are dropped under XLA; the static check above covers it
        checks.append(tf.debugging.assert_less_equal(
            prompt_len + budget, n_ctx, message=f"prompt length + max_new_tokens budget > n_ctx={n_ctx}"))
    with tf.control_dependencies(checks):
        tokens = tf.zeros([batch, budget], tf.int32)
    lengths = tf.zeros([batch], tf.int32)
    done = settings.max_new_tokens < 1
    loop = _cached_loop if use_cache else _uncached_loop
    return loop(backbone, token_ids, padding_mask, settings, budget, tokens, lengths, done)


def _cached_loop(backbone, token_ids, padding_mask, settings, budget, tokens, lengths, done):
    batch, prompt_len = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    max_len = prompt_len + budget
    logits_of = head_logits(backbone)
    # Keys a row may attend to: its real prompt tokens and everything generated.
    valid_keys = tf.concat([tf.cast(padding_mask, tf.bool), tf.ones([batch, budget], tf.bool)], axis=1)
    slots = tf.range(max_len)
    causal = tf.range(prompt_len)[:, None] >= slots[None, :]
    hidden, caches = backbone.call_with_cache(token_ids, position_ids(padding_mask),
                                        causal[None] & valid_keys[:, None, :],
                                        backbone.empty_cache(batch, max_len), 0)
    token = settings.select(logits_of(hidden[:, -1]), 0)
    tokens, lengths, done = settings.record(token, 0, budget, tokens, lengths, done)
    first_position = tf.reduce_sum(padding_mask, axis=1)  # where the first new token goes

    def body(step, token, caches, tokens, lengths, done):
        index = prompt_len + step - 1  # cache slot of the token fed now (chosen at step - 1)
        fed = tf.where(done, 0, token)[:, None]  # finished rows feed padding
        mask = valid_keys & (slots[None, :] <= index)
        hidden, caches = backbone.call_with_cache(fed, (first_position + step - 1)[:, None],
                                            mask[:, None, :], caches, index)
        token = settings.select(logits_of(hidden[:, 0]), step)
        tokens, lengths, done = settings.record(token, step, budget, tokens, lengths, done)
        return step + 1, token, caches, tokens, lengths, done

    def cond(step, token, caches, tokens, lengths, done):
        return tf.logical_and(step < budget, tf.logical_not(tf.reduce_all(done)))

    _, _, _, tokens, lengths, _ = tf.while_loop(
        cond, body, (tf.constant(1), token, caches, tokens, lengths, done), maximum_iterations=budget)
    return tokens, lengths


def _uncached_loop(backbone, token_ids, padding_mask, settings, budget, tokens, lengths, done):
    """Reference path: a Python loop that runs the full backbone on the whole
    (growing) sequence at every step."""
    ids, mask = token_ids, padding_mask
    logits_of = head_logits(backbone)
    for step in range(budget):
        if bool(tf.reduce_all(done)):
            break
        hidden = backbone({"token_ids": ids, "padding_mask": mask})
        token = settings.select(logits_of(hidden[:, -1]), step)
        tokens, lengths, done = settings.record(token, step, budget, tokens, lengths, done)
        ids = tf.concat([ids, tf.where(done, 0, token)[:, None]], axis=1)
        mask = tf.concat([mask, tf.ones_like(mask[:, :1])], axis=1)
    return tokens, lengths


# ------------------------------------------------------------ compiled module

class Generator(tf.Module):
    """A backbone plus its compiled generation functions.

    `Generator(backbone)(token_ids, padding_mask, ..., budget=N)` runs
    `generate_tokens` inside one `tf.function` per `budget`, compiled with XLA
    when `jit_compile` (each new prompt shape compiles once).
    """

    def __init__(self, backbone: GPTBackbone, jit_compile: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.backbone = backbone
        self.jit_compile = jit_compile
        self._functions: dict[int, Any] = {}

    def function(self, budget: int):
        """The `tf.function` generating up to `budget` tokens (reused per budget)."""
        if budget not in self._functions:
            def run(token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p, seeds, stop_token_ids):
                return generate_tokens(self.backbone, token_ids, padding_mask, max_new_tokens, temperature,
                                       top_k, top_p, seeds, stop_token_ids, budget)
            self._functions[budget] = tf.function(run, jit_compile=self.jit_compile, reduce_retracing=True)
        return self._functions[budget]

    def __call__(self, token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p, seeds,
                 stop_token_ids, *, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
        """`generate_tokens` (cached), compiled; arguments as there."""
        return self.function(budget)(token_ids, padding_mask, max_new_tokens, temperature, top_k, top_p,
                                     seeds, stop_token_ids)

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


# ---------------------------------------------------------------- Python API

def _as_backbone(model: Any) -> GPTBackbone:
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
    backbone = _as_backbone(model_or_backbone)
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


# -------------------------------------------------------------- command line

def _load(args: argparse.Namespace):
    """(backbone, tokenizer) from `--model`: a model directory (pre-trained or
    fine-tuned: its backbone generates), or a `.keras` GPTLMModel file with `--tokenizer DIR`."""
    from gpt_keras import saving  # pylint: disable=g-import-not-at-top

    if args.model.endswith(".keras"):
        import keras  # pylint: disable=g-import-not-at-top
        backbone, tokenizer = _as_backbone(keras.models.load_model(args.model)), None
    else:
        backbone, tokenizer = saving.load_backbone(args.model), saving.load_tokenizer(args.model)
    if args.tokenizer:
        from gpt_keras.tokenizer import GPTTokenizer  # pylint: disable=g-import-not-at-top
        tokenizer = GPTTokenizer.load(args.tokenizer)
    if tokenizer is None:
        raise ValueError(f"No tokenizer found for {args.model}; pass --tokenizer DIR (a vocabulary directory)")
    return backbone, tokenizer


def main(argv: list[str] | None = None) -> int:
    """`python -m gpt_keras.generate --model DIR --prompt TEXT [...]`."""
    parser = argparse.ArgumentParser(prog="python -m gpt_keras.generate",
                                     description="Generate text with a gpt_keras language model.")
    parser.add_argument("--model", required=True,
                        help="gpt_keras model directory (gpt_keras.saving; foreign checkpoints: gpt_keras.convert), "
                             "or a .keras GPTLMModel file")
    parser.add_argument("--tokenizer", default=None,
                        help="vocabulary directory (default: the one in --model)")
    parser.add_argument("--prompt", required=True, action="append",
                        help="prompt text; repeat for a batch")
    parser.add_argument("--max_new_tokens", type=int, default=50)
    parser.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="1.0 = off")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", type=int, action="append", default=[], help="stop token id (repeatable)")
    parser.add_argument("--no_xla", action="store_true", help="run the decode loop without XLA")
    parser.add_argument("--weights", choices=(precision.AUTO, *WEIGHT_FORMATS), default=precision.AUTO,
                        help="weights to generate with: bf16 reads half the bytes per token (gpt_keras.compress); "
                             "auto: bf16 where that is faster (one prompt, a CPU with AMX)")
    args = parser.parse_args(argv)
    try:
        backbone, tokenizer = _load(args)
        prompts = [tokenizer.encode(text) for text in args.prompt]
        outputs = generate(backbone, prompts, args.max_new_tokens, strategy=args.strategy,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                           stop_token_ids=args.stop, jit_compile=False if args.no_xla else None,
                           weights=args.weights)
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Decoding prompt + continuation together joins the BPE pieces correctly.
    for i, (prompt, new) in enumerate(zip(prompts, outputs)):
        text = tokenizer.decode(prompt + new)
        print(text if len(prompts) == 1 else f"[{i}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
