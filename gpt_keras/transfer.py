"""Transfer modes: how much of the pre-trained backbone fine-tuning may change.

| mode        | what learns                                                        |
|-------------|--------------------------------------------------------------------|
| `full`      | everything (the paper's fine-tuning)                               |
| `frozen`    | the head only: a linear probe on the extract token's state         |
| `lora`      | low-rank adapters on every attention and MLP projection, the special-token rows, and the head |
| `layer_mix` | a softmax-weighted sum of every block's extract-token state, the special-token rows, and the head |

All modes share the backbone and tokenizer, and are chosen by
configuration (`GPTTaskModel(..., transfer=...)`, `finetune(transfer=...)`,
the pipeline's `finetune.transfer`), never by a model class per mode.

`frozen` is a fixed feature extractor: the backbone runs in inference mode
(`backbone_training`: no embedding, attention or residual dropout, also while
training; a Keras layer whose weights are not trainable would still drop out)
and none of its weights learns, the special-token rows included: they keep
the N(0, 0.02) draw of `with_special_tokens` (its seed). So the probe measures
what the pre-trained features carry and nothing else adapts. The head keeps
its own dropout (`clf_pdrop`) in training. The auxiliary LM loss is still
computed and logged, but it moves no weight.

In `lora` and `layer_mix` the special-token rows are fresh at fine-tuning,
and a model that never saw `_start_`, `_delimiter_` or `_classify_` would
otherwise read random, fixed vectors, so they learn on purpose: the token
embedding stays a trainable variable, its gradient is masked to those three
rows (`mask_gradients`), and it is excluded from weight decay, so each BPE row
keeps its pre-trained value exactly (Adam moves nothing whose gradient is
always zero). One variable, so checkpoints and conversion are unchanged.

LoRA uses Keras' own `Dense.enable_lora`, which freezes only the kernel it
wraps; the rest is frozen here. Keras has no merge call, so `merged` writes
the adapted kernels (`kernel + (alpha / rank) * A @ B`) into a plain model
(transfer `full`): saved and exported models are plain, reload without
adapters, and serving costs nothing extra.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

MODES = ("full", "frozen", "lora", "layer_mix")
SPECIAL_ROWS_LEARN = ("lora", "layer_mix")  # modes whose (masked) special-token rows train
DEFAULT_LORA_RANK = 8


def check_mode(mode: str, lora_rank: int | None = None) -> str:
    """Validate a transfer mode (and the LoRA rank); returns the mode."""
    if mode not in MODES:
        raise ValueError(f"unknown transfer mode {mode!r}; expected one of {MODES}")
    if mode == "lora" and (not isinstance(lora_rank, int) or isinstance(lora_rank, bool) or lora_rank < 1):
        raise ValueError(f"lora_rank must be a positive integer, got {lora_rank!r}")
    return mode


def projections(backbone: Any) -> list[keras.layers.Dense]:
    """The attention and MLP projections of every block (where LoRA adapts)."""
    return [d for block in backbone.blocks for d in (block.attn.c_attn, block.attn.c_proj, block.c_fc, block.c_proj)]


def configure(model: Any) -> None:
    """Make the trainable set of a `GPTTaskModel` match its `transfer` mode."""
    if model.transfer == "full":
        return
    backbone = model.backbone
    if model.transfer == "lora":
        for dense in projections(backbone):
            dense.enable_lora(model.lora_rank)
    adapters = {id(v) for d in projections(backbone) for v in (getattr(d, "lora_kernel_a", None),
                                                               getattr(d, "lora_kernel_b", None)) if v is not None}
    token_embeddings = backbone.embed.token_embeddings
    rows_learn = model.transfer in SPECIAL_ROWS_LEARN
    for variable in backbone.weights:
        variable.trainable = id(variable) in adapters or (rows_learn and variable is token_embeddings)


def backbone_training(mode: str, training: bool | None) -> bool | None:
    """The `training` flag the backbone runs with: always False for `frozen`
    (inference mode, so no dropout), `training` otherwise."""
    return False if mode == "frozen" else training


def special_row_mask(model: Any) -> np.ndarray | None:
    """[rows, 1] float mask of the token embedding rows that may learn (the
    special tokens) in the modes of `SPECIAL_ROWS_LEARN`; None where no mask
    applies: `full` trains every row, `frozen` none (its embedding is not trainable)."""
    if model.transfer not in SPECIAL_ROWS_LEARN:
        return None
    config = model.backbone.config
    mask = np.zeros((config.total_vocab_size, 1), np.float32)
    mask[config.vocab_size:] = 1.0
    return mask


def trainable_parameters(model: Any) -> int:
    """Parameters fine-tuning actually changes: every trainable weight, with the
    token embedding counted as its special rows only when the rest is masked."""
    mask = special_row_mask(model)
    token_embeddings = model.backbone.embed.token_embeddings
    total = 0
    for variable in model.trainable_weights:
        size = int(np.prod(variable.shape))
        if variable is token_embeddings and mask is not None:
            size = int(mask.sum()) * int(variable.shape[1])
        total += size
    return total


def has_adapters(model: Any) -> bool:
    backbone = model if not hasattr(model, "backbone") else model.backbone
    return any(getattr(d, "lora_enabled", False) for d in projections(backbone))


def merged(model: Any) -> Any:
    """A plain copy of a LoRA `GPTTaskModel` (adapted kernels written in), or
    the model itself when it has no adapters. The copy is rebuilt from the
    model's own Keras config (`type(model).from_config`), so this module never
    imports the model classes: `gpt_keras.model` and `gpt_keras.saving` sit above it."""
    if not has_adapters(model):
        return model
    source = model.backbone
    backbone = type(source).from_config(_unnamed(source.get_config()))
    # With LoRA on, Keras' `Dense.kernel` is already `_kernel + (alpha / rank) * A @ B`
    # (the stored variable is `_kernel`): write that into the plain kernel.
    plain_weights = {id(dense._kernel): dense.kernel.numpy()  # pylint: disable=protected-access
                     for dense in projections(source)}
    adapters = {id(v) for d in projections(source) for v in (d.lora_kernel_a, d.lora_kernel_b)}
    values = [plain_weights.get(id(v), v.numpy()) for v in source.weights if id(v) not in adapters]
    backbone.set_weights(values)
    plain = type(model).from_config({**_unnamed(model.get_config()), "backbone": backbone, "transfer": "full"})
    for target, value in zip(plain.head.weights, model.head.weights):
        target.assign(value)
    return plain


def _unnamed(config: dict[str, Any]) -> dict[str, Any]:
    """A Keras config without its `name`: the copy gets a fresh one, as a new model would."""
    return {k: v for k, v in config.items() if k != "name"}
