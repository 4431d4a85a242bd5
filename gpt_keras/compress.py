"""Compressed weights for generation: bf16 matrices on oneDNN's fused matmul.

A batch-1 decode step reads every weight matrix once, so its speed is set by
the bytes it reads. bf16 halves them, but only one kernel turns that into
speed on x86 CPUs with AVX512_BF16 / AMX: TF's oneDNN MatMul + BiasAdd fusion
(an `inner_product`), measured at 1.4-2x its fp32 twin per gpt1 matrix. XLA's
bf16 dots, Keras' `quantize("int8")` and an unfused bf16 MatMul (oneDNN
re-packs the matrix for AMX in every call) are all slower than fp32. So a
compressed matrix is a bf16 kernel + bf16 bias run as
`cast(bias_add(matmul(cast(x, bf16), kernel), bias), float32)`, outside XLA:
plain core ops, which an exported SavedModel can carry.

`compressed_backbone(backbone, "bf16")` returns a view of the backbone for
generation: the same embedding and LayerNorm variables (shared, not copied),
with every Dense layer and the tied LM head replaced by a `BF16Dense`. The
source backbone is never changed, and its weights stay fp32 (checkpoints and
`convert` never see the bf16 copies). `compressed_logits` is the view's head:
bf16 logits, with the best few recomputed from the fp32 table.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

WEIGHT_FORMATS = ("fp32", "bf16")
# Logits recomputed exactly (fp32 rows of the tied table) for the best
# candidates of the bf16 head, whose outputs are rounded to bf16: near-ties
# at the top would otherwise flip greedy tokens. 16 rows cost ~0.04% of the head.
REFINED_LOGITS = 16


class BF16Dense(tf.Module):
    """`x @ kernel + bias` with a bf16 kernel and bias; fp32 in, fp32 out.

    `kernel` is `[in, out]`; the bias defaults to zeros, which keeps the fast
    fused MatMul + BiasAdd kernel for the (bias-free) LM head too.
    """

    def __init__(self, kernel: Any, bias: Any = None, name: str | None = None):
        super().__init__(name=name)
        kernel = tf.convert_to_tensor(kernel)
        if kernel.shape.rank != 2:
            raise ValueError(f"BF16Dense needs a 2-D [in, out] kernel, got shape {kernel.shape}")
        self.units = int(kernel.shape[1])
        self.kernel = tf.Variable(tf.cast(kernel, tf.bfloat16), trainable=False, name="kernel")
        bias = tf.zeros([self.units]) if bias is None else tf.convert_to_tensor(bias)
        self.bias = tf.Variable(tf.cast(bias, tf.bfloat16), trainable=False, name="bias")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        # A 2-D MatMul: a rank-3 one becomes BatchMatMul, which oneDNN does not fuse.
        flat = tf.reshape(tf.cast(x, tf.bfloat16), [-1, tf.shape(x)[-1]])
        y = tf.cast(tf.nn.bias_add(tf.matmul(flat, self.kernel), self.bias), x.dtype)
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.units]], axis=0))


def _view(layer: Any, **replace: Any) -> Any:
    """A shallow copy of a Keras layer with some attributes replaced.

    Built from `__dict__` (not `copy.copy`, which pickles a Keras model) and
    set past Keras' attribute tracking, so the source layer is untouched and
    the view owns no new Keras variables.
    """
    view = object.__new__(type(layer))
    view.__dict__.update(layer.__dict__)
    for name, value in replace.items():
        object.__setattr__(view, name, value)
    return view


def compressed_logits(view: Any, hidden: tf.Tensor, refine: int = REFINED_LOGITS) -> tf.Tensor:
    """float32 logits `[batch, vocab]` of a view's bf16 head for hidden states
    `[batch, n_embd]`, with the `refine` largest recomputed from the fp32
    embedding rows (so greedy decoding picks fp32's token among them)."""
    approx = tf.cast(view.lm_head_layer(hidden), tf.float32)
    top = tf.math.top_k(approx, k=min(refine, view.config.vocab_size)).indices  # [batch, k]
    rows = tf.gather(view.embed.token_embeddings, top)  # [batch, k, n_embd], fp32
    exact = tf.einsum("be,bke->bk", tf.cast(hidden, tf.float32), rows)
    batch = tf.broadcast_to(tf.range(tf.shape(top)[0])[:, None], tf.shape(top))
    return tf.tensor_scatter_nd_update(approx, tf.stack([batch, top], axis=-1), exact)


def compressed_backbone(backbone: Any, weights: str = "bf16") -> Any:
    """The backbone generation runs with `weights` ("fp32": the backbone itself).

    For "bf16": a view sharing the embedding and LayerNorm variables, whose
    Dense layers are `BF16Dense` copies, with the tied LM head (the BPE rows,
    transposed) as `view.lm_head_layer`. The copies are taken now: a view
    does not follow later training of the source. `view.compressed_layers`
    lists the copies and `view.kept_variables` the source variables the view
    still reads (what an export must track).
    """
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"Unknown weights {weights!r}; use one of {WEIGHT_FORMATS}")
    if weights == "fp32":
        return backbone
    replaced: list[Any] = []

    def bf16(dense: keras.layers.Dense) -> BF16Dense:
        if getattr(dense, "quantization_mode", None):
            raise ValueError(f"{dense.name} is already quantized ({dense.quantization_mode}); "
                             "compress the fp32 model instead")
        replaced.extend(dense.weights)
        return BF16Dense(dense.kernel, dense.bias if dense.use_bias else None, name=dense.name)

    blocks = []
    for block in backbone.blocks:
        attn = _view(block.attn, c_attn=bf16(block.attn.c_attn), c_proj=bf16(block.attn.c_proj))
        blocks.append(_view(block, attn=attn, c_fc=bf16(block.c_fc), c_proj=bf16(block.c_proj)))
    head = BF16Dense(tf.transpose(backbone.embed.token_embeddings[:backbone.config.vocab_size]), name="lm_head")
    layers = [head] + [m for b in blocks for m in (b.attn.c_attn, b.attn.c_proj, b.c_fc, b.c_proj)]
    gone = {id(v) for v in replaced}
    return _view(backbone, blocks=blocks, lm_head_layer=head, weight_format=weights, compressed_layers=layers,
                 kept_variables=[v for v in backbone.weights if id(v) not in gone])
