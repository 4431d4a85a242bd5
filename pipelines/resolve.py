"""The config resolved once: what the schema leaves to the checkpoint or the defaults.

`pipelines.config` is a pure schema: it checks keys and values and reads no
file. What a run also needs, but a config does not say by itself - the
tokenizer mode, the model's sizes, the analysis section's extra models - comes
from `model.init_from`'s checkpoint when there is one (read and checked here,
through `pipelines.init_from.check`, so that a bad checkpoint or key stops
before any stage), else from the preset and the defaults. `resolve(config)`
works it out once into a `ResolvedConfig`; `stages.plan` and every stage read
that object (`Context.resolved`), never the checkpoint again.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from pipelines import init_from
from pipelines.config.data import DEFAULT_TOKENIZER_MODE
from pipelines.config.experiment import AnalysisSpec, ExperimentConfig
from pipelines.config.validation import ConfigError


@dataclasses.dataclass(frozen=True)
class ResolvedConfig:
    """One experiment config with what it leaves open worked out."""
    config: ExperimentConfig
    checkpoint: init_from.Source | None  # model.init_from, read and checked (None without it)
    tokenizer_mode: str                  # preprocess.tokenizer_mode, else the checkpoint's, else the default
    n_layer: int                         # blocks of the model: the preset's, or the checkpoint's
    # Name -> `finetune` changes of each extra model the analysis section fine-tunes (`analysis_variants`).
    analysis_variants: dict[str, dict[str, Any]]

    def gpt_config(self, n_vocab: int):
        """The model's `GPTConfig` for a tokenizer of `n_vocab` BPE tokens; an
        explicit `model.overrides.vocab_size` that disagrees is an error."""
        if self.checkpoint:  # the checkpoint's sizes (init_from.check compared the rest)
            return self.checkpoint.config
        config = self.config
        override = config.model.overrides.get("vocab_size")
        if override is not None and override != n_vocab:
            source = (f"preprocess.vocab_dir={config.preprocess.vocab_dir!r}" if config.preprocess.vocab_dir
                      else f"preprocess.num_merges={config.num_merges}")
            raise ConfigError(f"model.overrides.vocab_size={override} disagrees with the tokenizer's {n_vocab} BPE "
                              f"tokens ({source}); remove the override")
        return config.model.gpt_config(vocab_size=n_vocab)


def resolve(config: ExperimentConfig) -> ResolvedConfig:
    """`config` resolved: with `model.init_from`, its checkpoint is read and
    checked against every key that could contradict it (a `ConfigError` names
    the key); its sizes and tokenizer mode are the run's."""
    checkpoint = init_from.check(config) if config.model.init_from else None
    if config.preprocess.tokenizer_mode:  # with init_from, init_from.check made sure it agrees
        mode = config.preprocess.tokenizer_mode
    else:
        mode = init_from.tokenizer_mode(config, checkpoint) if checkpoint else DEFAULT_TOKENIZER_MODE
    n_layer = checkpoint.config.n_layer if checkpoint else config.model.gpt_config().n_layer
    return ResolvedConfig(config, checkpoint, mode, n_layer, analysis_variants(config.analysis, n_layer))


def analysis_variants(a: AnalysisSpec, n_layer: int) -> dict[str, dict[str, Any]]:
    """Name -> `finetune` changes of each extra model the analysis section
    fine-tunes (stage `transfer/<task>/<name>`), from the pre-trained model
    unless the changes say `"init": "scratch"`; `"train_examples": n`
    fine-tunes on n of the training examples only. `n_layer`: the model's
    blocks (Figure 2 transfers 0..n_layer-1 of them)."""
    variants = {mode: {"transfer": mode, **({"learning_rate": a.learning_rates[mode]}
                                            if mode in a.learning_rates else {})} for mode in a.transfer}
    if a.table5:
        variants["no_aux_lm"] = {"lm_weight": 0.0}
    if a.figure2:
        variants.update({f"layers_{n}": {"n_transfer": n} for n in range(n_layer)})
    steps = {} if a.data_efficiency_min_steps is None else {"min_steps": a.data_efficiency_min_steps}
    for n in a.data_efficiency:
        variants[f"pretrained_n{n}"] = {"train_examples": n, **steps}
        variants[f"scratch_n{n}"] = {"train_examples": n, "init": "scratch", **steps}
    return variants
