"""The model, pretrain and finetune sections: what is trained, and how."""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Literal

from pydantic import Field, StrictBool, model_validator

from pipelines.config.validation import Problems, Section, check


DEFAULT_PRESET = "demo"


class ModelSpec(Section):
    """A gpt_keras preset plus field overrides, or a checkpoint to start from.

    The vocabulary size comes from the tokenizer: the preset's is a default;
    an override must agree. `init_from`: a directory in the original OpenAI
    release layout, the HF `openai-gpt` layout or the gpt_keras model format
    (detected); its sizes, vocabulary and tokenizer mode win, and a `preset`,
    `overrides` or preprocess key that disagrees is an error. `n_head` is for
    the original layout, which carries no config (default: GPT-1's 64-wide
    heads, n_embd // 64)."""
    preset: str | None = None   # unset: DEFAULT_PRESET, or the checkpoint's sizes with init_from
    overrides: dict[str, Any] = {}
    init_from: str = ""
    n_head: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _values(self) -> "ModelSpec":
        self.gpt_config()
        return self

    def gpt_config(self, **fields: Any):
        """The preset with the overrides (and `fields`) applied."""
        from gpt_keras.config import GPTConfig
        try:
            return GPTConfig.from_preset(self.preset or DEFAULT_PRESET, **{**self.overrides, **fields})
        except (ValueError, TypeError) as e:
            check(False, "", str(e))


@functools.cache
def _finetune_recipe() -> dict[str, Any]:
    """The paper's fine-tuning recipe where gpt_keras defines it (its one home):
    `TrainSettings`' defaults and those of `gpt_keras.train.finetune`'s
    arguments (lm_weight, lora_rank). Read on first use, not at import, so that
    importing the schema (`run.py --help`) needs no TensorFlow."""
    import inspect  # pylint: disable=g-import-not-at-top
    from gpt_keras import train  # pylint: disable=g-import-not-at-top

    arguments = inspect.signature(train.finetune).parameters
    return {**dataclasses.asdict(train.TrainSettings()), **{k: arguments[k].default for k in ("lm_weight", "lora_rank")}}


def _recipe(key: str, **constraints: Any) -> Any:
    """A field whose default is the fine-tuning recipe's `key` (`_finetune_recipe`),
    validated like a given value (so TrainSettings' `epochs=3` is this schema's 3.0)."""
    return Field(default_factory=lambda: _finetune_recipe()[key], validate_default=True, **constraints)


Schedule = Literal["warmup_cosine", "warmup_linear", "constant"]


class OptimSpec(Section):
    """What pre-training and fine-tuning share. The defaults are pre-training's
    (the paper's section 4.1); weight decay, clipping and the dtype policy are
    the same for both: the fine-tuning recipe's (`_finetune_recipe`)."""
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(2.5e-4, gt=0)
    schedule: Schedule = "warmup_cosine"
    warmup: float = Field(2000, ge=0)  # steps (warmup_cosine) or fraction of steps (warmup_linear)
    epochs: float = Field(1.0, gt=0)   # passes over the training data
    max_steps: int = Field(0, ge=0)    # cap on optimizer steps (0: none)
    steps_per_checkpoint: int = Field(200, gt=0)
    validation_batches: int = Field(0, ge=0)  # batches of the validation split per evaluation (0: all of it)
    l2: float = _recipe("l2")
    max_grad_norm: float = _recipe("max_grad_norm")
    jit_compile: StrictBool | None = None  # None: XLA for float32 (and on GPUs), none for bf16 on CPUs
    # Variables stay float32; mixed policies compute in bf16/fp16; auto: bf16 where the
    # machine has it in hardware and the model is wide enough (gpt_keras.precision).
    dtype_policy: str = _recipe("dtype_policy")

    @model_validator(mode="after")
    def _dtype_policy(self) -> "OptimSpec":
        from gpt_keras.precision import CHOICES  # pylint: disable=g-import-not-at-top  (their one home)
        check(self.dtype_policy in CHOICES, "dtype_policy",
               f"must be one of {', '.join(CHOICES)}; got {self.dtype_policy!r}")
        return self


class PretrainSpec(OptimSpec):
    # false: no pre-training stage; fine-tuning starts from model.init_from as it is
    # (true with init_from: continued pre-training on preprocess.corpus).
    enabled: StrictBool = True
    # Model directories kept at log-spaced steps (and step 0), for the paper's
    # Figure 2 (right): zero-shot performance against pre-training updates.
    snapshots: int = Field(0, ge=0)
    # Dropout (embd, attn, resid) while pre-training only; unset: the model's. Fine-tuning
    # uses the model's. Less than one pass over the corpus has nothing to overfit.
    dropout: float | None = Field(None, ge=0, lt=1)
    # A wall-clock budget: pre-training stops at the first step past it, so that a slow
    # machine runs fewer steps instead of longer, and the stage's metrics say how many.
    max_minutes: float | None = Field(None, gt=0)


MAX_GRID = 64  # fine-tuning runs per model that a recipe grid may ask for


class FinetuneSpec(OptimSpec):
    # A list in learning_rate, lm_weight or dropout makes a grid (their product): one model
    # per setting, and the one that does best on the validation split is kept; each
    # variant (pre-trained, scratch, ...) picks its own recipe (docs/seeds.md).
    learning_rate: float | list[float] = _recipe("learning_rate")
    schedule: Schedule = _recipe("schedule")
    warmup: float = _recipe("warmup", ge=0)
    epochs: float = _recipe("epochs", gt=0)
    # Small tasks get more passes: epochs are raised until training takes at least this
    # many steps (whole passes; the best pass on the validation split is kept anyway).
    min_steps: int = Field(0, ge=0)
    lm_weight: float | list[float] = _recipe("lm_weight")  # the paper's lambda (eq. 5); 0: no auxiliary LM loss
    # Dropout (embd, attn, resid) while fine-tuning; unset: the model's (a pre-trained
    # model's is what it was built with, not pretrain.dropout). 0.0 matches a pre-training
    # run without dropout.
    dropout: float | list[float] | None = None
    # The paper's Figure 2 (left), the original's --n_transfer: the embeddings and the
    # first n blocks come from the pre-trained model, the rest start fresh (unset: all).
    n_transfer: int | None = Field(None, ge=0)
    ablation_without_pretraining: StrictBool = True  # also train from scratch (the paper's ablation)
    early_stopping_patience: int = 0                 # evaluations without improvement (0: off)
    # Task batches vary in length; without XLA each batch is padded only to its
    # longest row instead of recompiling or padding everything to n_ctx.
    jit_compile: StrictBool = _recipe("jit_compile")
    transfer: str = "full"                     # what learns: full | frozen | lora | layer_mix (gpt_keras.transfer)
    lora_rank: int = _recipe("lora_rank", gt=0)  # adapter rank with transfer: lora
    # Paired seeds (docs/seeds.md): every fine-tuned variant once per seed, each its own
    # stage (`finetune/<task>-seed<k>`); the seed drives head init, dropout and data order,
    # never the data split (the experiment `seed`). Empty: one run with the experiment `seed`.
    seeds: list[int] = []

    @model_validator(mode="after")
    def _values(self) -> "FinetuneSpec":
        from gpt_keras.transfer import MODES  # pylint: disable=g-import-not-at-top  (their one home)
        problems = Problems()
        problems.check(self.transfer in MODES, "transfer", f"must be one of {', '.join(MODES)}; got {self.transfer!r}")
        rates, weights, dropouts = (_values(v) for v in (self.learning_rate, self.lm_weight, self.dropout))
        problems.check(bool(rates) and all(r > 0 for r in rates), "learning_rate",
                       f"must be > 0, or a non-empty list of values > 0 (a grid); got {self.learning_rate!r}")
        problems.check(bool(weights) and all(w >= 0 for w in weights), "lm_weight",
                       f"must be >= 0, or a non-empty list of values >= 0 (a grid); got {self.lm_weight!r}")
        problems.check(bool(dropouts) and all(d is None or 0 <= d < 1 for d in dropouts), "dropout",
                       f"must be in [0, 1), or a non-empty list of such values (a grid); got {self.dropout!r}")
        size = len(rates) * len(weights) * len(dropouts)
        problems.check(size <= MAX_GRID, "learning_rate",
                       f"the recipe grid (learning_rate x lm_weight x dropout) has {size} settings, "
                       f"at most {MAX_GRID} are run per model: give fewer values")
        repeated = sorted({k for k in self.seeds if self.seeds.count(k) > 1})
        negative = [k for k in self.seeds if k < 0]
        problems.check(not repeated and not negative, "seeds",
                       f"must be distinct integers >= 0 (each names a stage, finetune/<task>-seed<k>); got "
                       f"{self.seeds}: " + "; ".join(filter(None, (repeated and f"{repeated} repeated",
                                                                   negative and f"{negative} negative"))))
        problems.raise_found()
        return self

    @property
    def grid(self) -> list[dict[str, float | None]]:
        """The recipes to try, each a mapping of learning_rate, lm_weight and
        dropout to one value: one setting, or the product of the lists."""
        keys = ("learning_rate", "lm_weight", "dropout")
        return [dict(zip(keys, values))
                for values in itertools.product(*(_values(getattr(self, k)) for k in keys))]

    @property
    def varied(self) -> list[str]:
        """The recipe keys given as lists (the grid's axes)."""
        return [k for k in ("learning_rate", "lm_weight", "dropout") if isinstance(getattr(self, k), list)]


def _values(value: Any) -> list:
    """A grid axis: a list as it is, a single value as a list of one."""
    return list(value) if isinstance(value, list) else [value]
