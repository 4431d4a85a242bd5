"""The original OpenAI GPT-1 release (`finetune-transformer-lm`), both ways.

`params_shapes.json` plus `params_0.npy` ... `params_{N-1}.npy`: flat float32
shards that concatenate to the arrays in release order (`state.weight_names`):
positions, tokens, then 12 per block (`c_attn` w/b, `attn.c_proj` w/b,
`ln_1` g/b, `c_fc` w/b, `mlp.c_proj` w/b, `ln_2` g/b). Conv weights are
`[1, in, out]` in the release and `[in, out]` in some copies (e.g.
allennlp's fixture); both are accepted. The number of shards is counted, not
assumed. The release carries no config: sizes come from the array shapes.
Vocabulary: `encoder*.json` + `*.bpe` (`gpt_keras.convert.vocab`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gpt_keras.config import GPTConfig
from gpt_keras.convert.state import (BLOCK_PARTS, ConversionError, backbone_from_state, backbone_state,
                                     weight_names)
from gpt_keras.convert.vocab import n_special_for
from gpt_keras.model import GPTBackbone
from gpt_keras.saving import PathLike


def _count_layers(state: Mapping[str, np.ndarray]) -> int:
    """n_layer from the `h.<i>.` names (the release records no config)."""
    layers = {int(m.group(1)) for k in state if (m := re.match(r"h\.(\d+)\.", k))}
    if layers != set(range(len(layers))):
        raise ConversionError(f"Checkpoint blocks are not numbered 0..N-1: found {sorted(layers)}")
    return len(layers)


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
    if len(shapes) < 2 or (len(shapes) - 2) % len(BLOCK_PARTS * 2):
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
    n_special = n_special_for(path, tokens.shape[0], n_special, check_vocab)
    config = GPTConfig(vocab_size=tokens.shape[0] - n_special, n_special=n_special, n_ctx=positions.shape[0],
                       n_layer=_count_layers(state), n_embd=n_embd, n_head=n_head,
                       n_inner=state["h.0.mlp.c_fc.weight"].shape[-1], **config_overrides)
    return backbone_from_state(state, config)
