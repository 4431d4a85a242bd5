"""Model configuration and presets.

`GPTConfig` names follow the original release / HF `OpenAIGPTConfig`
(`n_embd`, `n_layer`, ...) so that weights and configs map one-to-one.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

# The three special tokens are appended after the BPE vocabulary, in this order
# (DESIGN.md "Special tokens"): ids n_vocab, n_vocab + 1, n_vocab + 2.
SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Hyper-parameters of a GPT-1 style decoder.

    `vocab_size` is the BPE vocabulary *without* specials; `n_special` rows are
    appended to the token embedding for `_start_`, `_delimiter_`, `_classify_`.
    A backbone imported from a plain LM checkpoint may have `n_special=0`; task
    models add the rows (see `gpt_keras.model.with_special_tokens`).
    """

    vocab_size: int = 40478
    n_special: int = 3
    n_ctx: int = 512
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    n_inner: int = 3072
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    clf_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    # GPT-1 is post-LN (`LN(x + sublayer(x))`), which the released weights need.
    # True: GPT-2's pre-LN order (`x + sublayer(LN(x))`, then a final LayerNorm
    # `ln_f`), for small models trained here from scratch: it learns on a short
    # budget where post-LN stalls (pipelines/configs/demo.yaml has the numbers).
    # A pre-LN model is not GPT-1: the HF and original-layout writers refuse it.
    normalize_first: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "n_ctx", "n_layer", "n_embd", "n_head", "n_inner"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.n_special not in (0, len(SPECIAL_TOKENS)):
            problems.append(f"n_special must be 0 or {len(SPECIAL_TOKENS)}, got {self.n_special!r}")
        if not problems and self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("embd_pdrop", "attn_pdrop", "resid_pdrop", "clf_pdrop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                problems.append(f"{name} must be in [0, 1), got {value!r}")
        if not isinstance(self.normalize_first, bool):
            problems.append(f"normalize_first must be true or false, got {self.normalize_first!r}")
        if not self.layer_norm_epsilon > 0 or not self.initializer_range > 0:
            problems.append("layer_norm_epsilon and initializer_range must be > 0")
        if problems:
            raise ValueError("Invalid GPTConfig: " + "; ".join(problems))

    @property
    def total_vocab_size(self) -> int:
        """Rows of the token embedding: BPE vocabulary plus special tokens."""
        return self.vocab_size + self.n_special

    @property
    def start_id(self) -> int:
        return self._special_id(0)

    @property
    def delimiter_id(self) -> int:
        return self._special_id(1)

    @property
    def classify_id(self) -> int:
        return self._special_id(2)

    def _special_id(self, k: int) -> int:
        if not self.n_special:
            raise ValueError(f"This config has no special-token rows (n_special=0: a pre-trained LM; fine-tuning "
                             f"adds them, with ids {self.vocab_size}..{self.vocab_size + 2}); use "
                             "config.replace(n_special=3) or gpt_keras.model.with_special_tokens(backbone, seed).")
        return self.vocab_size + k

    def replace(self, **changes: Any) -> "GPTConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown GPTConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GPTConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        """A named preset, optionally with fields overridden (e.g. `vocab_size`
        taken from a trained tokenizer)."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available presets: {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, GPTConfig] = {
    # The paper's / original release's 117M model (HF `openai-gpt`).
    "gpt1": GPTConfig(),
    # Demo: trains in minutes on 2 CPU cores; the vocabulary comes from the tokenizer.
    "demo": GPTConfig(vocab_size=8000, n_ctx=128, n_layer=4, n_embd=256, n_head=4, n_inner=1024),
    # Tiny: for unit tests.
    "tiny": GPTConfig(vocab_size=97, n_ctx=32, n_layer=2, n_embd=32, n_head=4, n_inner=64),
}
