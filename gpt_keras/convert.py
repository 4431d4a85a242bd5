"""Checkpoint conversion: the original OpenAI GPT-1 release, HF `openai-gpt`,
and the project's own format.

Formats
-------
* **original** (OpenAI `finetune-transformer-lm`): `params_shapes.json` plus
  `params_0.npy` ... `params_{N-1}.npy`, flat float32 shards that concatenate
  to the arrays in release order: positions, tokens, then 12 per block
  (`c_attn` w/b, `attn.c_proj` w/b, `ln_1` g/b, `c_fc` w/b, `mlp.c_proj` w/b,
  `ln_2` g/b). Conv weights are `[1, in, out]` in the release and `[in, out]`
  in some copies (e.g. allennlp's fixture); both are accepted. The number of
  shards is counted, not assumed. Vocabulary: `encoder*.json` + `*.bpe`.
* **hf**: `config.json` + `model.safetensors` (sharded or not), or
  `pytorch_model.bin` when torch is importable. Keys with or without the
  `transformer.` prefix; `lm_head.weight` is tied and not stored on export.
  Vocabulary: `vocab.json` + `merges.txt`.
* **gpt_keras** (project format): `config.json` (`{"format": "gpt_keras",
  "config": GPTConfig}`), `model.weights.h5`, and the tokenizer's files.

Vocabulary vs embedding
-----------------------
The embedding is the source of truth. A vocabulary's size is its largest id
plus one: several strings may share one id (the allennlp fixture maps
`<unk>` to 0, so its 51 entries cover ids 0..49 and fit 50 rows). Then:
* size == token rows: plain LM, `n_special=0`;
* size + 3 == token rows: the trailing 3 rows are `_start_`, `_delimiter_`,
  `_classify_` (`n_special=3`, as the paper and our HF export lay them out);
* anything else, in particular ids beyond the embedding, is an error
  (`VocabularyMismatchError`): such ids could never be embedded, and the
  special-token ids (`n_vocab + k`) would land on the wrong rows.

`convert_checkpoint` adds the special-token rows, drawn N(0, 0.02) with a
seed, when the source lacks them, as the paper's fine-tuning does.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Union

import keras
import numpy as np

from gpt_keras import saving
from gpt_keras.config import SPECIAL_TOKENS, GPTConfig
from gpt_keras.model import GPTBackbone, with_special_tokens
from gpt_keras.saving import CONFIG_FILE, ModelDirectoryError, detect_format

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
# Marker in exported HF config.json: HF has no notion of n_special.
HF_SPECIAL_KEY = "gpt_keras_n_special"
_BLOCK_PARTS = ("attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2")  # release order


# One error type for every unreadable checkpoint, whatever its format.
ConversionError = ModelDirectoryError


class VocabularyMismatchError(ConversionError):
    """The vocabulary files do not fit the token embedding."""


# ---- names: one map from HF names (no prefix) to our variables -------------

def weight_names(n_layer: int) -> list[str]:
    """HF parameter names (no `transformer.` prefix) in original release order."""
    names = ["positions_embed.weight", "tokens_embed.weight"]
    for i in range(n_layer):
        for part in _BLOCK_PARTS:
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
        out.update({f"h.{i}.{part}": layers[part] for part in _BLOCK_PARTS})
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


def _count_layers(state: Mapping[str, np.ndarray]) -> int:
    layers = {int(m.group(1)) for k in state if (m := re.match(r"h\.(\d+)\.", k))}
    if layers != set(range(len(layers))):
        raise ConversionError(f"Checkpoint blocks are not numbered 0..N-1: found {sorted(layers)}")
    return len(layers)


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


# ---- vocabulary files --------------------------------------------------------

def find_vocab(path: PathLike) -> tuple[str, Path, Path] | None:
    """(format, encoder, merges) of the vocabulary files in `path`, or None.

    HF: `vocab.json` + `merges.txt`. Original: `encoder*.json` + `*.bpe`
    (`encoder_bpe_40000.json`/`vocab_40000.bpe` in the release, other names
    elsewhere).
    """
    path = Path(path)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return "hf", path / "vocab.json", path / "merges.txt"
    encoders = sorted(path.glob("encoder*.json"))
    merges = sorted(path.glob("*.bpe"))
    if not encoders and not merges:
        return None
    if len(encoders) != 1 or len(merges) != 1:
        raise ConversionError(f"Expected one encoder*.json and one *.bpe vocabulary file in {path}, found "
                              f"{[p.name for p in encoders]} and {[p.name for p in merges]}")
    return "original", encoders[0], merges[0]


def vocab_size_of(encoder_path: PathLike) -> int:
    """BPE ids of an encoder JSON ({token: id}): largest id + 1, since aliases
    share ids; special tokens stored as the last ids are not counted."""
    with open(encoder_path, encoding="utf-8") as f:
        encoder = json.load(f)
    if not isinstance(encoder, dict) or not encoder:
        raise ConversionError(f"{encoder_path} is not a non-empty {{token: id}} JSON object")
    size = max(int(i) for i in encoder.values()) + 1
    special_ids = sorted(int(encoder[t]) for t in SPECIAL_TOKENS if t in encoder)
    if special_ids == list(range(size - len(SPECIAL_TOKENS), size)):
        size -= len(SPECIAL_TOKENS)
    return size


def split_special_rows(n_rows: int, n_vocab: int, source: str = "checkpoint") -> int:
    """n_special for a token embedding of `n_rows` and a vocabulary of `n_vocab` ids."""
    n_special = n_rows - n_vocab
    if n_special in (0, len(SPECIAL_TOKENS)):
        return n_special
    hint = ("the vocabulary has ids the embedding cannot hold" if n_special < 0
            else f"only 0 or {len(SPECIAL_TOKENS)} extra (special-token) rows are understood")
    raise VocabularyMismatchError(
        f"The vocabulary has {n_vocab} ids but the {source} token embedding has {n_rows} rows: {hint}. "
        "Use the vocabulary files that belong to these weights.")


def _load_tokenizer(fmt: str, encoder: Path, merges: Path, mode: str):
    """The project tokenizer for these files, or None if `gpt_keras.tokenizer` is unavailable."""
    try:
        from gpt_keras.tokenizer import GPTTokenizer  # lazy: weights work without it
    except ImportError as err:
        log.warning("gpt_keras.tokenizer is not importable (%s); vocabulary files are copied as is.", err)
        return None
    load = GPTTokenizer.from_hf if fmt == "hf" else GPTTokenizer.from_original
    try:
        return load(str(encoder), str(merges), mode=mode)
    except (ValueError, OSError) as err:
        raise ConversionError(f"The vocabulary files {encoder.name} + {merges.name} cannot be loaded by the "
                              f"project tokenizer: {err} (convert the weights alone with include_vocab=False / "
                              "--no-vocab)") from err


# ---- original OpenAI release -------------------------------------------------

def _shard_files(path: Path) -> list[Path]:
    shards = {}
    for p in path.glob("params_*.npy"):
        m = re.fullmatch(r"params_(\d+)\.npy", p.name)
        if m:
            shards[int(m.group(1))] = p
    if not shards:
        raise ConversionError(f"No params_*.npy shards in {path}")
    missing = sorted(set(range(max(shards) + 1)) - set(shards))
    if missing:
        raise ConversionError(f"Missing shard(s) {', '.join(f'params_{i}.npy' for i in missing)} in {path} "
                              f"(found {len(shards)} of {max(shards) + 1})")
    return [shards[i] for i in sorted(shards)]


def read_original(path: PathLike) -> dict[str, np.ndarray]:
    """Arrays of an original-release directory under HF names.

    Counts the shards, concatenates them, splits by `params_shapes.json`, and
    squeezes the leading 1 of `[1, in, out]` conv weights.
    """
    path = Path(path)
    shapes_file = path / "params_shapes.json"
    if not shapes_file.is_file():
        raise ConversionError(f"{path} has no params_shapes.json: not an original OpenAI release directory")
    with open(shapes_file, encoding="utf-8") as f:
        shapes = [tuple(int(d) for d in s) for s in json.load(f)]
    if len(shapes) < 2 or (len(shapes) - 2) % len(_BLOCK_PARTS * 2):
        raise ConversionError(f"params_shapes.json lists {len(shapes)} arrays; expected 2 + 12 * n_layer")
    shards = _shard_files(path)
    flat = np.concatenate([np.load(p).reshape(-1) for p in shards])
    sizes = [int(np.prod(s)) for s in shapes]
    if flat.size != sum(sizes):
        raise ConversionError(f"The {len(shards)} shard(s) in {path} hold {flat.size} values but "
                              f"params_shapes.json describes {sum(sizes)}: a shard is missing or truncated")
    arrays = [a.reshape(s) for a, s in zip(np.split(flat, np.cumsum(sizes)[:-1]), shapes)]
    arrays = [a[0] if a.ndim == 3 and a.shape[0] == 1 else a for a in arrays]
    return dict(zip(weight_names((len(shapes) - 2) // 12), arrays))


def write_original(backbone: GPTBackbone, dst: PathLike, n_shards: int = 10) -> Path:
    """Write the backbone in the original release layout (`[1, in, out]` conv weights)."""
    arrays = [a[None] if name.endswith("weight") and a.ndim == 2 and name.startswith("h.") else a
              for name, a in backbone_state(backbone).items()]
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "params_shapes.json", "w", encoding="utf-8") as f:
        json.dump([list(a.shape) for a in arrays], f)
    for i, shard in enumerate(np.array_split(np.concatenate([a.reshape(-1) for a in arrays]), n_shards)):
        np.save(dst / f"params_{i}.npy", shard.astype(np.float32))
    return dst


def load_original(path: PathLike, n_head: int | None = None, n_ctx: int | None = None,
                  n_special: int | None = None, check_vocab: bool = True,
                  **config_overrides: Any) -> GPTBackbone:
    """A backbone from an original-release directory.

    The release has no config, so sizes come from the array shapes. `n_head`
    cannot be inferred: pass it, or it defaults to `n_embd // 64` (GPT-1's
    head width). `n_ctx` keeps only the first positions (as the original
    `train.py` does). `n_special` defaults to what the vocabulary files imply
    (checked against the embedding unless `check_vocab` is False), else 0.
    """
    state = read_original(path)
    positions, tokens = state["positions_embed.weight"], state["tokens_embed.weight"]
    if n_ctx is not None:
        if not 0 < n_ctx <= positions.shape[0]:
            raise ConversionError(f"n_ctx={n_ctx} must be in 1..{positions.shape[0]} (positions in the release)")
        state["positions_embed.weight"] = positions = positions[:n_ctx]
    n_embd = tokens.shape[1]
    if n_head is None:
        if n_embd % 64:
            raise ConversionError(f"Cannot infer n_head for n_embd={n_embd} (original releases carry no "
                                  "config); pass n_head")
        n_head = n_embd // 64
    n_special = _n_special_for(path, tokens.shape[0], n_special, check_vocab)
    config = GPTConfig(vocab_size=tokens.shape[0] - n_special, n_special=n_special, n_ctx=positions.shape[0],
                       n_layer=_count_layers(state), n_embd=n_embd, n_head=n_head,
                       n_inner=state["h.0.mlp.c_fc.weight"].shape[-1], **config_overrides)
    return backbone_from_state(state, config)


def _n_special_for(path: PathLike, n_rows: int, n_special: int | None, check_vocab: bool) -> int:
    """n_special: explicit, else implied by vocabulary files in `path`, else 0."""
    vocab = find_vocab(path) if check_vocab else None
    if vocab is not None:
        implied = split_special_rows(n_rows, vocab_size_of(vocab[1]))
        if n_special is not None and n_special != implied:
            raise VocabularyMismatchError(f"n_special={n_special} was requested, but the vocabulary in {path} "
                                          f"and the {n_rows}-row embedding imply n_special={implied}")
        return implied
    n_special = 0 if n_special is None else int(n_special)
    if n_special not in (0, len(SPECIAL_TOKENS)):
        raise ConversionError(f"n_special={n_special}: gpt_keras models have 0 or {len(SPECIAL_TOKENS)} "
                              f"special-token rows {SPECIAL_TOKENS}")
    return n_special


# ---- HF openai-gpt -------------------------------------------------------------

def _hf_weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            return [path / name for name in sorted(set(json.load(f)["weight_map"].values()))]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name]
    raise ConversionError(f"No model.safetensors, model.safetensors.index.json or pytorch_model.bin in {path}")


def _read_weight_file(file: Path) -> dict[str, np.ndarray]:
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(file), framework="np") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (TypeError, ValueError):  # e.g. bfloat16, which numpy lacks: go through torch
            pass
        except SafetensorError as err:  # a truncated or damaged download
            raise ConversionError(f"{file} is not a readable safetensors file ({err}); download it again") from None
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConversionError(f"Reading {file.name} needs torch (pip install 'gpt_keras[parity]'), "
                              "or convert the checkpoint to model.safetensors") from None
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        tensors = load_file(str(file))
    else:
        tensors = torch.load(str(file), map_location="cpu", weights_only=True)
    return {k: v.detach().float().numpy() for k, v in tensors.items()}


# `OpenAIGPTConfig` defaults, for config.json files that leave keys out.
_HF_DEFAULTS = {"vocab_size": 40478, "n_positions": 512, "n_embd": 768, "n_layer": 12, "n_head": 12, "afn": "gelu"}
# Parameters of HF checkpoints that are not backbone weights.
_HF_IGNORED = re.compile(r"(^|\.)attn\.(bias|masked_bias)$|(^|\.)position_ids$")
_HF_HEADS = re.compile(r"^(lm_head|multiple_choice_head|score)\.")


def read_hf(path: PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays under HF names without the `transformer.` prefix, HF config dict).

    Drops non-persistent buffers and heads: `lm_head.weight` is tied to the
    token embedding (an untied one is an error), task heads are not imported.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConversionError(f"{path} has no config.json: not a HF checkpoint directory")
    with open(path / CONFIG_FILE, encoding="utf-8") as f:
        hf_config = {**_HF_DEFAULTS, **json.load(f)}
    raw: dict[str, np.ndarray] = {}
    for file in _hf_weight_files(path):
        raw.update(_read_weight_file(file))
    state, heads = {}, {}
    for key, value in raw.items():
        if _HF_HEADS.match(key):
            heads[key] = value
        elif not _HF_IGNORED.search(key):
            state[key[len("transformer."):] if key.startswith("transformer.") else key] = value
    lm_head = heads.pop("lm_head.weight", None)
    if lm_head is not None:
        # Tied: `DoubleHeadsModel.save_pretrained` stores only the lm_head side.
        tokens = state.setdefault("tokens_embed.weight", lm_head)
        if not np.array_equal(lm_head, tokens):
            raise ConversionError("lm_head.weight differs from tokens_embed.weight; GPT-1's LM head is tied")
    if heads:
        log.warning("Ignoring task-head weights %s (only the backbone is imported)", sorted(heads))
    return state, hf_config


def load_hf(path: PathLike, n_special: int | None = None, check_vocab: bool = True,
            **config_overrides: Any) -> GPTBackbone:
    """A backbone from a HF `openai-gpt` directory (`OpenAIGPTModel`/`LMHeadModel`/`DoubleHeadsModel`).

    `n_special` defaults to the `gpt_keras_n_special` marker of our exports,
    else to what the vocabulary files imply (checked against the embedding
    unless `check_vocab` is False), else 0.
    """
    state, hf = read_hf(path)
    afn = hf["afn"]
    if afn != "gelu":  # HF's "gelu" is the tanh form (gelu_new), the only one our blocks implement
        raise ConversionError(f"Unsupported activation afn={afn!r}; gpt_keras implements GPT-1's tanh GELU")
    if "tokens_embed.weight" not in state:
        raise ConversionError(f"{path} holds no tokens_embed.weight; keys: {sorted(state)[:5]}...")
    n_rows = state["tokens_embed.weight"].shape[0]
    # pytorch-pretrained-bert era configs count specials apart: rows = vocab_size + n_special.
    legacy_special = int(hf.get("n_special") or 0)
    if n_rows != hf["vocab_size"] + legacy_special:
        raise ConversionError(f"config.json vocab_size={hf['vocab_size']}"
                              + (f" + n_special={legacy_special}" if legacy_special else "")
                              + f" but tokens_embed.weight has {n_rows} rows")
    if n_special is None:
        n_special = hf.get(HF_SPECIAL_KEY)
    if n_special is None and legacy_special:
        n_special = legacy_special
    n_special = _n_special_for(path, n_rows, n_special, check_vocab)
    values = dict(vocab_size=n_rows - n_special, n_special=n_special, n_ctx=hf["n_positions"],
                  n_layer=hf["n_layer"], n_embd=hf["n_embd"], n_head=hf["n_head"], n_inner=4 * hf["n_embd"])
    for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop", "layer_norm_epsilon", "initializer_range"):
        if key in hf:
            values[key] = hf[key]
    if "summary_first_dropout" in hf:  # HF's classifier-head dropout
        values["clf_pdrop"] = hf["summary_first_dropout"]
    values.update(config_overrides)
    return backbone_from_state(state, GPTConfig(**values))


def export_hf(backbone: GPTBackbone, dst: PathLike, tokenizer=None, prefix: str = "transformer.") -> Path:
    """Write `config.json` + `model.safetensors` loadable by `OpenAIGPTLMHeadModel.from_pretrained`.

    Keys carry `prefix` (what `save_pretrained` of the LM head model writes);
    `lm_head.weight` is left out since HF ties it. The token embedding keeps
    its special-token rows (`vocab_size` = all rows); `gpt_keras_n_special`
    records how many, for the way back. `tokenizer` (optional) is saved in
    the HF vocabulary format.
    """
    from safetensors.numpy import save_file

    c = backbone.config
    require_gpt1_order(c)
    if c.n_inner != 4 * c.n_embd:
        raise ConversionError(f"HF openai-gpt fixes the MLP width to 4 * n_embd = {4 * c.n_embd}; "
                              f"this model has n_inner={c.n_inner}")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {prefix + k: np.ascontiguousarray(v, dtype=np.float32) for k, v in backbone_state(backbone).items()}
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    hf_config = {
        "architectures": ["OpenAIGPTLMHeadModel"], "model_type": "openai-gpt", "afn": "gelu",
        "vocab_size": c.total_vocab_size, "n_positions": c.n_ctx, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head, "embd_pdrop": c.embd_pdrop, "attn_pdrop": c.attn_pdrop,
        "resid_pdrop": c.resid_pdrop, "layer_norm_epsilon": c.layer_norm_epsilon,
        "initializer_range": c.initializer_range, "summary_type": "cls_index", "summary_use_proj": True,
        "summary_activation": None, "summary_proj_to_labels": True, "summary_first_dropout": c.clf_pdrop,
        "tie_word_embeddings": True, HF_SPECIAL_KEY: c.n_special,
    }
    _write_json(dst / CONFIG_FILE, hf_config)
    if tokenizer is not None:
        tokenizer.save(str(dst), format="hf")
    return dst


def load_any(path: PathLike, **kwargs: Any) -> GPTBackbone:
    """A backbone from a directory in any supported format (kwargs go to the format's loader)."""
    fmt = detect_format(path)
    if fmt == "gpt_keras":
        return saving.load_backbone(path)
    return (load_original if fmt == "original" else load_hf)(path, **kwargs)


def load_checkpoint(src: PathLike, *, n_head: int | None = None, include_vocab: bool = True,
                    tokenizer_mode: str | None = None) -> tuple[GPTBackbone, Any, str]:
    """(backbone, tokenizer or None, format) of a checkpoint directory in any
    supported format, as it is (no special-token rows added).

    The tokenizer is the checkpoint's own vocabulary, checked against the
    embedding. Its mode defaults to the source's text handling: "original"
    (`text_standardize`, what the OpenAI release was trained on) for the
    original layout, "hf" for HF, the recorded mode for gpt_keras directories.
    """
    fmt = detect_format(src)
    if fmt == "gpt_keras":
        if n_head is not None and n_head != saving.read_config(src).n_head:
            raise ConversionError(f"n_head={n_head} was requested, but {src} has "
                                  f"n_head={saving.read_config(src).n_head}")
        backbone = saving.load_backbone(src)
        tokenizer = saving.load_tokenizer(src) if include_vocab else None
        if tokenizer is not None and tokenizer_mode and tokenizer.mode != tokenizer_mode:
            raise ConversionError(f"tokenizer_mode={tokenizer_mode!r} was requested, but {src} records "
                                  f"mode {tokenizer.mode!r}")
        return backbone, tokenizer, fmt
    vocab = find_vocab(src) if include_vocab else None
    if fmt == "original":
        backbone = load_original(src, n_head=n_head, check_vocab=include_vocab)
    else:
        backbone = load_hf(src, check_vocab=include_vocab)
        if n_head is not None and n_head != backbone.config.n_head:
            raise ConversionError(f"n_head={n_head} was requested, but {src}/config.json has "
                                  f"n_head={backbone.config.n_head}")
    # The loader (check_vocab) made vocab_size the files' largest id + 1, which is the tokenizer's n_vocab.
    tokenizer = _load_tokenizer(*vocab, mode=tokenizer_mode or fmt) if vocab else None
    return backbone, tokenizer, fmt


def convert_checkpoint(src: PathLike, dst: PathLike, *, n_head: int | None = None,
                       add_special_tokens: bool = True, seed: int = 0, include_vocab: bool = True,
                       tokenizer_mode: str | None = None) -> Path:
    """Convert an original-release or HF directory into the project format.

    Checks the vocabulary (if present and `include_vocab`) against the
    embedding, adds the special-token rows (N(0, 0.02), `seed`) unless the
    source has them or `add_special_tokens` is False, and saves config,
    weights and vocabulary. `tokenizer_mode` defaults to the source's own
    text handling: "original" for the OpenAI release, "hf" for HF.
    """
    if detect_format(src) == "gpt_keras":
        raise ConversionError(f"{src} is already in the gpt_keras format")
    backbone, tokenizer, _ = load_checkpoint(src, n_head=n_head, include_vocab=include_vocab,
                                             tokenizer_mode=tokenizer_mode)
    vocab = find_vocab(src) if include_vocab else None
    if add_special_tokens:
        backbone = with_special_tokens(backbone, seed=seed)
    return saving.save_model(backbone, dst, tokenizer, vocabulary_format=vocab[0] if vocab else "original")


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


# ---- command line ----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """`python -m gpt_keras.convert {import,export-hf,export-original} SRC DST`."""
    parser = argparse.ArgumentParser(
        prog="python -m gpt_keras.convert",
        description="Convert GPT-1 checkpoints between the original OpenAI release, HF openai-gpt and gpt_keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="original release or HF openai-gpt dir -> gpt_keras model dir")
    imp.add_argument("src")
    imp.add_argument("dst")
    imp.add_argument("--n-head", type=int, default=None,
                     help="heads (original releases carry no config; default n_embd // 64)")
    imp.add_argument("--no-special-tokens", action="store_true", help="do not add the 3 special-token rows")
    imp.add_argument("--seed", type=int, default=0, help="seed of the new special-token rows")
    imp.add_argument("--no-vocab", action="store_true", help="convert the weights only, ignoring vocabulary files")
    imp.add_argument("--tokenizer-mode", choices=("original", "hf"), default=None,
                     help="text handling of the tokenizer (default: the source's own)")
    for name, what in (("export-hf", "HF layout (config.json + model.safetensors)"),
                       ("export-original", "original release layout (params_*.npy)")):
        exp = sub.add_parser(name, help=f"gpt_keras model dir (or any supported dir) -> {what}")
        exp.add_argument("src")
        exp.add_argument("dst")
    sub.choices["export-original"].add_argument("--shards", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "import":
            out = convert_checkpoint(args.src, args.dst, n_head=args.n_head,
                                     add_special_tokens=not args.no_special_tokens, seed=args.seed,
                                     include_vocab=not args.no_vocab, tokenizer_mode=args.tokenizer_mode)
        else:
            if detect_format(args.src) == "gpt_keras":
                backbone, tokenizer = saving.load_backbone(args.src), saving.load_tokenizer(args.src)
            else:
                backbone, tokenizer = load_any(args.src), None
            if args.command == "export-hf":
                out = export_hf(backbone, args.dst, tokenizer)
            else:
                out = write_original(backbone, args.dst, args.shards)
                if tokenizer is not None:
                    tokenizer.save(str(out), format="original")
    except ModelDirectoryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
