"""The plan: every stage of a config in run order, with the config each reads.

A stage's fingerprint covers only the config it reads and the fingerprints of
the stages it reads (STAGE_TABLE), so that adding a task re-runs that task's
records and fine-tuning (and evaluate), never the vocabulary, corpus or
pre-training.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from pipelines.config.experiment import ExperimentConfig
from pipelines.config.validation import ConfigError
from pipelines.resolve import ResolvedConfig, resolve
from pipelines.stages.context import (Context, finetune_stage, group_of, has_zeroshot, records_stage, seed_runs,
                                      transfer_stage)
from pipelines.stages.evaluate import run_evaluate
from pipelines.stages.export import run_export
from pipelines.stages.outputs import StageResult
from pipelines.stages.finetune import run_finetune, run_transfer
from pipelines.stages.preprocess import run_import, run_packed_corpus, run_task_records, run_vocabulary
from pipelines.stages.pretrain import run_pretrain
from pipelines.stages.zeroshot import run_zeroshot

# What users type in --stages: each group names the stages beside it in STAGE_TABLE.
STAGE_NAMES = ["preprocess", "pretrain", "finetune", "analysis", "evaluate", "export"]
STAGE_TABLE = """
    --stages    stage            reads (stages + config)
    preprocess  import           model.init_from (its files), model.n_head: the checkpoint as a model directory
                vocab            preprocess.corpus, num_merges, tokenizer_mode (or vocab_dir, or import)
                corpus           vocab + preprocess.corpus, n_ctx, val_fraction, num_shards, seed
                records/<task>   vocab + that task, preprocess.n_ctx, num_shards, seed
    pretrain    pretrain         vocab, corpus (+ import) + model, pretrain, seed; with
                                 pretrain.enabled=false only import (the checkpoint as is)
    finetune    finetune/<task>  pretrain, records/<task> + finetune, seed; with finetune.seeds one stage
                                 per seed k, finetune/<task>-seed<k>, reading k instead of seed
    analysis    transfer/<task>/<name>   pretrain, records/<task> + finetune, analysis.transfer, table5,
                                 figure2, data_efficiency (if set): other modes, lambda = 0, 0..n_layer-1
                                 blocks transferred, pretrained_n<N> / scratch_n<N> on N training examples;
                                 with finetune.seeds, transfer/<task>/<name>-seed<k> per seed
                zeroshot/<task>  pretrain (+ snapshots), records/<task> + analysis zero_shot, few_shot,
                                 prompts, figure2 (if set)
    evaluate    evaluate         corpus, pretrain, every finetune, transfer, zeroshot stage + finetune.batch_size,
                                 analysis.figure2, data_efficiency (draw evaluate/figure2.png,
                                 evaluate/data_efficiency.png)
    export      export           finetune/<export task> (the first seed's) + export
"""


@dataclasses.dataclass
class Stage:
    """One step of the plan: what it is called, what it reads, and how it runs."""
    name: str                        # e.g. "records/rt_polarity"; also its directory under work_dir
    upstream: list[str]              # the stages whose artifacts it reads
    run: Callable[[Context, str], StageResult]
    config: Any                      # the config values it reads (fingerprinted)

    @property
    def group(self) -> str:
        """The `--stages` group it belongs to (`group_of`)."""
        return group_of(self.name)


def plan(config: ExperimentConfig, resolved: ResolvedConfig | None = None) -> list[Stage]:
    """Every stage of this config in run order, each with the config it reads.
    `resolved`: `resolve(config)`, made here when not given (with
    `model.init_from`, that reads and checks the checkpoint: a bad checkpoint
    or key stops before any stage)."""
    resolved = resolved or resolve(config)
    pp, seed, checkpoint = config.preprocess, config.seed, resolved.checkpoint
    corpus = pp.corpus.model_dump()
    imported = []
    if checkpoint:
        imported = [Stage("import", [], run_import, {"init_from": checkpoint.path, "signature": checkpoint.signature,
                                                      "n_head": config.model.n_head, "vocab_dir": pp.vocab_dir})]
    tokens = {"tokenizer_mode": resolved.tokenizer_mode, "max_bad_fraction": pp.max_bad_fraction}
    source = ({"init_from": True} if imported else {"vocab_dir": pp.vocab_dir} if pp.vocab_dir
              else {"corpus": corpus, "num_merges": config.num_merges})
    tasks = [t.name for t in pp.tasks]
    # Each fine-tuning stage reads its own seed, not the list: adding a seed runs only its stages,
    # and a config without seeds (or fine-tuning dropout) keeps the fingerprints it had before
    # the key existed.
    unread = {"seeds"} | ({"dropout"} if config.finetune.dropout is None else set())
    runs, finetune_reads = seed_runs(config), config.finetune.model_dump(exclude=unread)
    pretrain_reads = ["import"] if imported and not config.pretrain.enabled else ["vocab", "corpus"] + [
        s.name for s in imported]
    stages = [
        *imported,
        Stage("vocab", [s.name for s in imported], run_vocabulary, {**source, **tokens}),
        Stage("corpus", ["vocab"], run_packed_corpus,
              {"corpus": corpus, "n_ctx": pp.n_ctx, "val_fraction": pp.val_fraction, "seed": seed,
               "num_shards": pp.num_shards, **tokens}),
        *[Stage(records_stage(t.name), ["vocab"], functools.partial(run_task_records, task=t),
                {"task": t.model_dump(), "n_ctx": pp.n_ctx, "seed": seed, "num_shards": pp.num_shards, **tokens})
          for t in pp.tasks],
        Stage("pretrain", pretrain_reads, run_pretrain,
              {"model": config.model.model_dump(), "pretrain": config.pretrain.model_dump(), "seed": seed}),
        *[Stage(finetune_stage(t, suffix), ["pretrain", records_stage(t)],
                functools.partial(run_finetune, task=t, seed=k, suffix=suffix),
                {"finetune": finetune_reads, "seed": k}) for t in tasks for k, suffix in runs],
    ]
    analysis = config.analysis
    variants = resolved.analysis_variants
    for t in tasks:  # the analysis section's extra fine-tuned models and zero/few-shot scoring
        stages += [Stage(transfer_stage(t, name, suffix), ["pretrain", records_stage(t)],
                         functools.partial(run_transfer, task=t, variant=name, seed=k, suffix=suffix),
                         {"finetune": finetune_reads, "variant": changes, "seed": k})
                   for name, changes in variants.items() for k, suffix in runs]
        if has_zeroshot(config):
            prompt = analysis.prompts.get(t)
            stages.append(Stage(f"zeroshot/{t}", ["pretrain", records_stage(t)],
                                functools.partial(run_zeroshot, task=t),
                                {"zero_shot": analysis.zero_shot, "few_shot": analysis.few_shot,
                                 "calibrate": analysis.calibrate, "prompt": prompt and prompt.model_dump(),
                                 "figure2": analysis.figure2}))
    stages.append(Stage("evaluate", ["corpus", "pretrain", *[s.name for s in stages
                                                              if s.group in ("finetune", "analysis")]],
                        run_evaluate, {"batch_size": config.finetune.batch_size, "figure2": analysis.figure2,
                                       "data_efficiency": analysis.data_efficiency}))
    if config.export_task:
        stages.append(Stage("export", [finetune_stage(config.export_task, runs[0][1])], run_export,
                            {"export": config.export.model_dump(), "model_name": config.export_task}))
    return stages


def select(stages: list[Stage], requested: str) -> list[str]:
    """`--stages` -> stage names: a group (preprocess, finetune, ...), `records`, or one stage."""
    names, unknown = set(), []
    for token in filter(None, (t.strip() for t in requested.split(","))):
        matched = {s.name for s in stages if token in (s.name, s.group, s.name.split("/")[0])}
        if not matched and token not in STAGE_NAMES:  # a group may be empty: no tasks, no finetune
            unknown.append(token)
        names |= matched
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages are {STAGE_NAMES} or one of "
                          f"{[s.name for s in stages]}")
    return [s.name for s in stages if s.name in names]
