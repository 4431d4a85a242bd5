"""The backbone as arrays under HF `openai-gpt` names, both ways.

Both foreign formats name their arrays like HF's `OpenAIGPTModel` without the
`transformer.` prefix (`tokens_embed.weight`, `h.0.attn.c_attn.weight`, ...;
the original release is the same arrays in `weight_names` order), so this is
the one map between those names and the backbone's variables. Conv1D weights
are `[in, out]`, as Dense kernels.
"""
from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np

from gpt_keras.config import GPTConfig
from gpt_keras.model import GPTBackbone
from gpt_keras.saving import ModelDirectoryError

# The arrays of one block, in release order (a weight and a bias each).
BLOCK_PARTS = ("attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2")

# One error type for every unreadable checkpoint, whatever its format.
ConversionError = ModelDirectoryError


def weight_names(n_layer: int) -> list[str]:
    """HF parameter names (no `transformer.` prefix) in original release order."""
    names = ["positions_embed.weight", "tokens_embed.weight"]
    for i in range(n_layer):
        for part in BLOCK_PARTS:
            names += [f"h.{i}.{part}.weight", f"h.{i}.{part}.bias"]
    return names


def require_gpt1_order(config: GPTConfig) -> None:
    """Foreign formats hold GPT-1's post-LN order only: refuse a pre-LN model."""
    if config.normalize_first:
        # Same weight names, different computation: written out, it would load as a broken GPT-1.
        raise ConversionError("This model is pre-LN (normalize_first=True, with a final LayerNorm ln_f): it is not "
                              "GPT-1, and neither HF openai-gpt nor the original release layout can represent it. "
                              "Keep it in the gpt_keras model format (save_to_preset).")


def _block_layers(backbone: GPTBackbone) -> dict[str, keras.layers.Layer]:
    """HF layer name (e.g. `h.0.attn.c_attn`) -> the backbone's layer, in release order."""
    out = {}
    for i, block in enumerate(backbone.blocks):
        layers = {"attn.c_attn": block.attn.c_attn, "attn.c_proj": block.attn.c_proj, "ln_1": block.ln_1,
                  "mlp.c_fc": block.c_fc, "mlp.c_proj": block.c_proj, "ln_2": block.ln_2}
        out.update({f"h.{i}.{part}": layers[part] for part in BLOCK_PARTS})
    return out


def _variables(backbone: GPTBackbone) -> dict[str, keras.Variable]:
    """HF name -> backbone variable. Conv1D weights are [in, out] like Dense kernels."""
    require_gpt1_order(backbone.config)
    out = {"positions_embed.weight": backbone.embed.position_embeddings,
           "tokens_embed.weight": backbone.embed.token_embeddings}
    for name, layer in _block_layers(backbone).items():
        is_ln = isinstance(layer, keras.layers.LayerNormalization)
        out[f"{name}.weight"] = layer.gamma if is_ln else layer.kernel
        out[f"{name}.bias"] = layer.beta if is_ln else layer.bias
    return out


def _float_kernel(layer: Any) -> np.ndarray:
    """A Dense kernel as float32: Keras int8 kernels are dequantized with their
    per-output-channel scales (Keras stores round(w * scale)); other
    quantization modes are refused rather than written without their scales."""
    mode = getattr(layer, "quantization_mode", None)
    if mode is None:
        return np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float32)
    if mode == "int8" and not getattr(layer, "lora_enabled", False):
        kernel = keras.ops.convert_to_numpy(layer._kernel).astype(np.float32)  # pylint: disable=protected-access
        return kernel / keras.ops.convert_to_numpy(layer.kernel_scale).astype(np.float32)
    raise ConversionError(f"{layer.name} is quantized ({mode}{', with LoRA' if mode == 'int8' else ''}): its "
                          "kernel cannot be written as float weights; save or convert the unquantized model")


def backbone_state(backbone: GPTBackbone) -> dict[str, np.ndarray]:
    """The backbone's weights as float32 numpy arrays under HF names (release
    order); Keras int8-quantized kernels are dequantized (see `_float_kernel`)."""
    dense = {f"{name}.weight": layer for name, layer in _block_layers(backbone).items()
             if isinstance(layer, keras.layers.Dense)}
    return {name: _float_kernel(dense[name]) if name in dense
            else np.asarray(keras.ops.convert_to_numpy(v), np.float32)
            for name, v in _variables(backbone).items()}


def backbone_from_state(state: Mapping[str, np.ndarray], config: GPTConfig) -> GPTBackbone:
    """A `GPTBackbone` for `config` holding the arrays of `state` (HF names).

    Raises `ConversionError` listing every missing key, unexpected key and
    shape mismatch, so that one run shows all problems.
    """
    backbone = GPTBackbone(**config.to_dict())
    variables = _variables(backbone)
    problems = [f"missing weight {k}" for k in variables if k not in state]
    problems += [f"unexpected weight {k}" for k in state if k not in variables]
    for name, var in variables.items():
        if name in state and tuple(state[name].shape) != tuple(var.shape):
            problems.append(f"{name}: checkpoint shape {tuple(state[name].shape)} != model shape "
                            f"{tuple(var.shape)}")
    if problems:
        raise ConversionError(f"Checkpoint does not fit GPTConfig({_short(config)}): " + "; ".join(problems))
    for name, var in variables.items():
        var.assign(np.asarray(state[name], dtype=var.dtype))
    return backbone


def _short(config: GPTConfig) -> str:
    return ", ".join(f"{k}={getattr(config, k)}" for k in
                     ("vocab_size", "n_special", "n_ctx", "n_layer", "n_embd", "n_head", "n_inner"))
