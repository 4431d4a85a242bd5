"""HF `openai-gpt` checkpoints (`OpenAIGPTModel`/`LMHeadModel`/`DoubleHeadsModel`), both ways.

`config.json` + `model.safetensors` (sharded or not), or `pytorch_model.bin`
when torch is importable. Keys with or without the `transformer.` prefix;
`lm_head.weight` is tied and not stored on export. HF has no notion of
special-token rows: an export records how many in `config.json` under
`HF_SPECIAL_KEY`. Vocabulary: `vocab.json` + `merges.txt`
(`gpt_keras.convert.vocab`).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpt_keras.config import GPTConfig
from gpt_keras.convert.state import ConversionError, backbone_from_state, backbone_state, require_gpt1_order
from gpt_keras.convert.vocab import n_special_for
from gpt_keras.model import GPTBackbone
from gpt_keras.saving import CONFIG_FILE, PathLike

log = logging.getLogger(__name__)

# Marker in exported HF config.json: HF has no notion of n_special.
HF_SPECIAL_KEY = "gpt_keras_n_special"


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
    n_special = n_special_for(path, n_rows, n_special, check_vocab)
    values = dict(vocab_size=n_rows - n_special, n_special=n_special, n_ctx=hf["n_positions"],
                  n_layer=hf["n_layer"], n_embd=hf["n_embd"], n_head=hf["n_head"], n_inner=4 * hf["n_embd"])
    for key in ("embd_pdrop", "attn_pdrop", "resid_pdrop", "layer_norm_epsilon", "initializer_range"):
        if key in hf:
            values[key] = hf[key]
    if "summary_first_dropout" in hf:  # HF's classifier-head dropout
        values["clf_pdrop"] = hf["summary_first_dropout"]
    values.update(config_overrides)
    return backbone_from_state(state, GPTConfig(**values))


def export_hf(backbone: GPTBackbone, dst: PathLike, tokenizer: Any = None, prefix: str = "transformer.") -> Path:
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
    (dst / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(str(dst), format="hf")
    return dst
