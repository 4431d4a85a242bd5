"""The evaluate stage: the pre-trained LM's held-out perplexity and every
fine-tuned and zero-shot model's scores on each task's test split, over
seeds, with paired comparisons (docs/seeds.md)."""
from __future__ import annotations

import math
import os

import numpy as np

from pipelines import report
from pipelines.stages.context import (Context, finetune_stage, group_of, has_zeroshot, missing_output, seed_runs,
                                      transfer_stage)
from pipelines.stages.outputs import (CorpusOutput, EvaluateOutput, FinetuneOutput, PretrainOutput, StageResult,
                                      TransferOutput, ZeroShotOutput)


def run_evaluate(ctx: Context, out: str) -> StageResult:
    """Held-out LM perplexity, and every fine-tuned and zero-shot model's
    scores on each task's test split, in metrics.json. Each fine-tuned
    variant's row also holds its score per seed with their mean and spread,
    and (but the pre-trained one's) its paired comparison with the
    pre-trained model; each model's answers are in predictions/<task>.json
    (docs/seeds.md)."""
    results, fingerprint = _lm_results(ctx)
    for task in ctx.config.preprocess.tasks:
        if has_zeroshot(ctx.config):
            results.update(ctx.output(f"zeroshot/{task.name}", ZeroShotOutput).metrics)
        results.update(_task_results(ctx, task.name, fingerprint, os.path.join(out, "predictions")))
    report.write_json(os.path.join(out, "metrics.json"), results)
    analysis = ctx.config.analysis
    figure2 = (report.figure2(results, [t.name for t in ctx.config.preprocess.tasks], ctx.resolved.n_layer,
                              os.path.join(out, "figure2")) if analysis.figure2 else None)
    efficiency = (report.data_efficiency(results, os.path.join(out, "data_efficiency.png"))
                  if analysis.data_efficiency else None)
    return StageResult(EvaluateOutput(os.path.join(out, "metrics.json"), os.path.join(out, "predictions"), figure2,
                                      efficiency), results)


def _lm_results(ctx: Context) -> tuple[dict, str]:
    """({"lm": held-out loss and perplexity of the pre-trained LM}, its vocabulary's fingerprint)."""
    from gpt_keras import data as gk_data
    from gpt_keras import saving
    from gpt_keras.model import GPTLMModel

    backbone, tokenizer = saving.load_model(ctx.output("pretrain", PretrainOutput).model_dir)
    lm = GPTLMModel(backbone)
    lm.compile()
    held_out = gk_data.pretrain_dataset(ctx.output("corpus", CorpusOutput).corpus_dir, "validation",
                                        ctx.config.finetune.batch_size, expected_fingerprint=tokenizer.fingerprint,
                                        config=backbone.config)
    loss = lm.evaluate(held_out, verbose=0, return_dict=True)["lm_loss"]
    return {"lm": {"validation_lm_loss": loss, "validation_perplexity": math.exp(loss)}}, tokenizer.fingerprint


def _fine_tuned(ctx: Context, task: str) -> tuple[dict[str, dict[int, str]], dict[str, int]]:
    """(variant (`<task>/<variant>`) -> seed -> model directory, variant ->
    parameters trained), over every fine-tuning stage of `task` (finetune and
    analysis), seeds in config order."""
    models: dict[str, dict[int, str]] = {}
    trained: dict[str, int] = {}
    for seed, suffix in seed_runs(ctx.config):
        stages = [finetune_stage(task, suffix)] + [transfer_stage(task, v, suffix)
                                                   for v in ctx.resolved.analysis_variants]
        for stage in stages:
            fine_tuned = ctx.output(stage, TransferOutput)
            for key, model_dir in fine_tuned.models.items():
                models.setdefault(key.removesuffix(suffix), {})[seed] = model_dir
                trained[key.removesuffix(suffix)] = _trained_count(ctx, stage, fine_tuned, key)
    return models, trained


def _trained_count(ctx: Context, stage: str, fine_tuned: TransferOutput, key: str) -> int:
    """The parameters the fine-tuning of `key` changed, as its stage recorded
    them. A finetune stage run before it recorded them trained every weight
    when `finetune.transfer` is full: then the saved model's count is exact."""
    from gpt_keras import saving
    from gpt_keras.transfer import trainable_parameters

    recorded = fine_tuned.trainable_parameters
    if recorded is not None:
        return recorded[key]
    if group_of(stage) == "finetune" and ctx.config.finetune.transfer == "full":
        return trainable_parameters(saving.load_task_model(fine_tuned.models[key]))
    raise missing_output(stage, "trainable_parameters")


def _task_results(ctx: Context, task: str, fingerprint: str, predictions_dir: str) -> dict[str, dict]:
    """One row per fine-tuned variant of `task` (`_over_seeds`), with its
    comparison with the pre-trained model; writes every model's answers,
    per seed, to `predictions_dir`/<task>.json."""
    from gpt_keras import data as gk_data
    from gpt_keras.metrics import predictions

    task_dir = ctx.output(finetune_stage(task, seed_runs(ctx.config)[0][1]), FinetuneOutput).task_dir
    metadata = gk_data.load_metadata(task_dir)
    split, family = metadata.evaluation_split, metadata.family
    rows, answers = {}, {}
    models, trained = _fine_tuned(ctx, task)
    for key, model_dirs in models.items():
        outputs = {}
        for seed, model_dir in model_dirs.items():
            # The split is read unshuffled: every model answers the same examples in the same order.
            labels, outputs[seed] = _score(model_dir, task_dir, split, ctx.config.finetune.batch_size, fingerprint)
        rows[key] = {"split": split, "examples": int(len(labels)), "trainable_parameters": trained[key],
                     **_over_seeds(family, len(metadata.label_names or []) or None, labels, outputs)}
        answers[key] = {seed: predictions(family, o) for seed, o in outputs.items()}
    if family != "regression":  # correctness per example: the paired tests need it
        correct = {k: np.stack([a == labels for a in by_seed.values()]) for k, by_seed in answers.items()}
        _compare_to_pretrained(rows, correct, f"{task}/pretrained")
        if ctx.config.analysis.data_efficiency:
            rows[f"{task}/data_efficiency"] = _data_efficiency(rows, correct, task, ctx.config.analysis.data_efficiency,
                                                               metadata.splits["train"].records)
    report.write_json(os.path.join(predictions_dir, f"{task}.json"), {
        "split": split, "labels": labels.tolist(),
        "predictions": {k: {str(seed): a.tolist() for seed, a in by_seed.items()} for k, by_seed in answers.items()}})
    return rows


def _score(model_dir: str, task_dir: str, split: str, batch: int, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, outputs) of the task model in `model_dir` on `split`."""
    from gpt_keras import data as gk_data
    from gpt_keras import saving

    model = saving.load_task_model(model_dir)
    data = gk_data.task_dataset(task_dir, split, batch, expected_fingerprint=fingerprint, config=model.backbone.config)
    labels, outputs = [], []
    for x, y in data:
        outputs.append(np.asarray(model(x, training=False)))
        labels.append(y.numpy())
    return np.concatenate(labels), np.concatenate(outputs)


def _over_seeds(family: str, num_labels: int | None, labels: np.ndarray, outputs: dict[int, np.ndarray]) -> dict:
    """A variant's metrics from its runs (seed -> outputs): one run's as they
    are; over several, each scalar metric's mean (a Wilson interval belongs
    to one model's accuracy, so none is given). "seeds" holds the main score
    (accuracy, or Pearson's r for regression) of each seed, their mean,
    sample std (None for one seed) and count."""
    from gpt_keras.metrics import mean_and_std, task_metrics

    runs = {seed: task_metrics(family, labels, o, num_labels) for seed, o in outputs.items()}
    first = next(iter(runs.values()))
    row = dict(first) if len(runs) == 1 else {
        k: float(np.mean([r[k] for r in runs.values()])) for k, v in first.items() if not isinstance(v, list)}
    metric = "pearson" if family == "regression" else "accuracy"
    mean, std = mean_and_std([r[metric] for r in runs.values()])
    row["seeds"] = {"metric": metric, "by_seed": {str(seed): r[metric] for seed, r in runs.items()},
                    "mean": mean, "std": std, "n": len(runs)}
    return row


def _compare_to_pretrained(rows: dict[str, dict], correct: dict[str, np.ndarray], reference: str) -> None:
    """Adds "vs_pretrained" to every row but `reference`'s: its accuracy minus
    the pre-trained model's, paired by seed and example, with a 95% interval
    and the exact sign test (`gpt_keras.metrics`). `correct`: variant ->
    per-example correctness [seeds, examples]."""
    from gpt_keras.metrics import paired_difference, sign_test

    for key, right in correct.items():
        if key != reference:
            rows[key]["vs_pretrained"] = {"reference": reference, **paired_difference(right, correct[reference]),
                                          "sign_test": sign_test(right, correct[reference])}


def _data_efficiency(rows: dict[str, dict], correct: dict[str, np.ndarray], task: str, sizes: list[int],
                     all_examples: int) -> dict:
    """Test accuracy against labelled training examples: at each size (and at
    all of them: the finetune stage's models), the pre-trained model's and
    the scratch twin's scores over seeds, and the pre-trained minus scratch
    difference paired by seed and example, with its 95% interval and sign
    test. A size of all the examples or more is the full point, not a row."""
    from gpt_keras.metrics import paired_difference, sign_test

    keys = [(n, f"{task}/pretrained_n{n}", f"{task}/scratch_n{n}") for n in sorted(sizes) if n < all_examples]
    keys.append((all_examples, f"{task}/pretrained", f"{task}/scratch"))
    points = [{"train_examples": n, "pretrained": rows[pre]["seeds"], "scratch": rows[scratch]["seeds"],
               "gain": {**paired_difference(correct[pre], correct[scratch]),
                        "sign_test": sign_test(correct[pre], correct[scratch])}}
              for n, pre, scratch in keys if pre in rows and scratch in rows]
    return {"metric": "accuracy", "points": points}
