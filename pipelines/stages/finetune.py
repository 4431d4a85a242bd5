"""The fine-tuning stages, through `pipelines.trainer.finetune`: each task from
the pre-trained model and from scratch (`finetune/<task>`), and the analysis
section's other variants (`transfer/<task>/<name>`), each selected over a
recipe grid (learning rate, lambda, dropout) on the validation split."""
from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

from pipelines import report
from pipelines.config.training import FinetuneSpec
from pipelines.stages.context import Context, records_stage
from pipelines.stages.outputs import (FinetuneOutput, PretrainOutput, RecordsOutput, StageResult, TransferOutput,
                                       VocabOutput)

if TYPE_CHECKING:  # the trainer imports TensorFlow: the stages import it when they run
    from pipelines.trainer import FinetuneResult


def finetune_selected(ctx: Context, run_dir: str, task: str, init_dir: str, spec: FinetuneSpec, seed: int,
                      train_examples: int | None = None) -> tuple[FinetuneResult, dict]:
    """Fine-tune one model for `task` from `init_dir` ("" = no pre-training:
    the pre-trained model's architecture, fresh weights) with `spec`, once per
    setting of its recipe grid (`FinetuneSpec.grid`: lists in learning_rate,
    lm_weight, dropout); the model that does best on the validation split is
    kept in `run_dir`. `seed` draws the head, the special-token rows, dropout
    and the order of batches (and, with `train_examples`, which training
    examples are used). Returns the kept run's result and the metrics the
    stage records: the chosen recipe and, with a grid, every setting's
    validation score."""
    from gpt_keras import saving
    from pipelines import trainer

    began = time.time()
    task_dir = ctx.output(records_stage(task), RecordsOutput).task_dir
    vocab_dir = ctx.output("vocab", VocabOutput).vocab_dir
    grid, varied = spec.grid, spec.varied
    trials = []
    for setting in grid:
        name = ", ".join(f"{k}={setting[k]:g}" for k in varied)  # e.g. "learning_rate=0.0001, dropout=0"
        trial_dir = run_dir if len(grid) == 1 else f"{run_dir}_{len(trials)}"
        start = (saving.load_backbone(init_dir) if init_dir
                 else saving.read_config(ctx.output("pretrain", PretrainOutput).model_dir))
        trials.append((name, setting, trial_dir, trainer.finetune(
            spec.model_copy(update=setting), start, task_dir, vocab_dir, trial_dir, os.path.join(trial_dir, "logs"),
            seed=seed, train_examples=train_examples)))
    # Regression keeps its lowest validation loss: its scores are negated. max keeps the first of equals.
    best = max(trials, key=lambda trial: trial[3].validation_score)
    for trial in trials:
        if trial[2] != run_dir:
            if trial is best:
                os.replace(trial[2], run_dir)
            else:
                shutil.rmtree(trial[2])
    kept, chosen, _, result = best
    metrics = {"best_" + result.monitor: result.best, "trainable_parameters": result.trainable_parameters,
               "train_examples": result.train_examples, "seconds": round(time.time() - began, 1),
               "seed": seed, "learning_rate": chosen["learning_rate"],
               **{k: chosen[k] for k in varied if k != "learning_rate"}}
    if len(grid) > 1:
        metrics["validation_by_setting"] = {name: abs(r.validation_score) for name, _, _, r in trials}
        metrics["chosen_setting"] = kept
    return result, metrics


def run_finetune(ctx: Context, out: str, task: str, seed: int, suffix: str) -> StageResult:
    """One task, from the pre-trained model and (the paper's ablation) from
    scratch, with `seed`; the models are `<task>/<variant><suffix>`."""
    cfg = ctx.config
    variants = {"pretrained": ctx.output("pretrain", PretrainOutput).model_dir}
    if cfg.finetune.ablation_without_pretraining:
        variants["scratch"] = ""
    models, metrics, histories = {}, {}, {}
    for variant, init_dir in variants.items():
        key, run_dir = f"{task}/{variant}{suffix}", os.path.join(out, variant)
        result, metrics[key] = finetune_selected(ctx, run_dir, task, init_dir, cfg.finetune, seed)
        histories[variant], models[key] = result.history, run_dir
    report.plot_curves(histories, ["task_loss", "accuracy", "lm_loss"], os.path.join(out, "curves.png"),
                       f"Fine-tuning {task}: with vs without pre-training (seed {seed})")
    task_dir = ctx.output(records_stage(task), RecordsOutput).task_dir
    return StageResult(FinetuneOutput(models, _trained(metrics), task_dir=task_dir), metrics)


def run_transfer(ctx: Context, out: str, task: str, variant: str, seed: int, suffix: str) -> StageResult:
    """One more model fine-tuned with `seed`, as the analysis section asks
    (`ResolvedConfig.analysis_variants`): another transfer mode, no
    auxiliary LM loss, fewer transferred blocks, or fewer labelled examples
    (from the pre-trained model or from scratch)."""
    changes = dict(ctx.resolved.analysis_variants[variant])
    examples = changes.pop("train_examples", None)
    scratch = changes.pop("init", "pretrained") == "scratch"
    init_dir = "" if scratch else ctx.output("pretrain", PretrainOutput).model_dir
    model_dir = os.path.join(out, "model")
    _, summary = finetune_selected(ctx, model_dir, task, init_dir, ctx.config.finetune.model_copy(update=changes),
                                   seed, examples)
    metrics = {f"{task}/{variant}{suffix}": summary}
    return StageResult(TransferOutput({key: model_dir for key in metrics}, _trained(metrics)), metrics)


def _trained(metrics: dict[str, dict]) -> dict[str, int]:
    """Model key -> the parameters its fine-tuning changed, counted while it
    trained: a saved LoRA model is merged, so its reloaded copy would count
    as a fully fine-tuned one."""
    return {key: result["trainable_parameters"] for key, result in metrics.items()}
