"""The pipeline's stages, TFX-style, and the plan that orders them.

Each stage is a function `(ctx, out_dir) -> entry updates` that reads the
artifacts of the stages before it (through `ctx.artifact(...)`) and writes
only into `out_dir`; `pipelines.manifest` makes that atomic and records it.
A stage's fingerprint covers only the config it reads and the fingerprints
of the stages it reads (STAGE_TABLE), so that adding a task re-runs that
task's records and fine-tuning (and evaluate), never the vocabulary, corpus
or pre-training.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import shutil
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipelines import report
from pipelines.analysis import run_zeroshot
from pipelines.config import ConfigError, ExperimentConfig, FinetuneSpec, InputSpec, TaskSpec
from pipelines.resolve import ResolvedConfig, resolve

if TYPE_CHECKING:  # the trainer imports TensorFlow: the stages import it when they run
    from pipelines.trainer import FinetuneResult

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


def group_of(stage: str) -> str:
    """`records/x` -> preprocess, `finetune/x` -> finetune, `transfer/x/m` -> analysis."""
    prefix = stage.split("/")[0]
    if prefix in ("import", "vocab", "corpus", "records"):
        return "preprocess"
    return "analysis" if prefix in ("transfer", "zeroshot") else prefix


def seed_runs(config: ExperimentConfig) -> list[tuple[int, str]]:
    """(seed, name suffix) of each fine-tuning run of every variant: one per
    `finetune.seeds`, its stages and models named with `-seed<k>`; without
    seeds, one run with the experiment `seed` under the plain names."""
    if config.finetune.seeds:
        return [(k, f"-seed{k}") for k in config.finetune.seeds]
    return [(config.seed, "")]


def finetune_stage(task: str, suffix: str = "") -> str:
    """The stage that fine-tunes `task` (pre-trained, and from scratch) for the seed of `suffix`."""
    return f"finetune/{task}{suffix}"


def transfer_stage(task: str, variant: str, suffix: str = "") -> str:
    """The stage of an analysis variant of `task` for the seed of `suffix`."""
    return f"transfer/{task}/{variant}{suffix}"


@dataclasses.dataclass
class Context:
    """What a stage sees: the config (and what it leaves open, resolved), Beam
    arguments, and finished artifacts."""
    config: ExperimentConfig
    resolved: ResolvedConfig
    beam_args: list[str]
    artifacts: dict[str, dict]  # stage -> its manifest entry "outputs"
    work_dir: str
    fingerprints: dict[str, str]

    def artifact(self, stage: str, key: str) -> Any:
        try:
            return self.artifacts[stage][key]
        except KeyError:
            group = group_of(stage)
            raise RuntimeError(f"stage output {stage}.{key} is missing: run the {group!r} stage first "
                               f"(python pipelines/run.py --stages {group})") from None


@dataclasses.dataclass
class Stage:
    name: str                        # e.g. "records/rt_polarity"; also its directory under work_dir
    upstream: list[str]              # the stages whose artifacts it reads
    run: Callable[[Context, str], dict]
    config: Any                      # the config values it reads (fingerprinted)

    @property
    def group(self) -> str:
        return group_of(self.name)


# ---- preprocess ------------------------------------------------------------

def resolve_path(path: str) -> str:
    """`pkg://package/relative/path` -> the file inside the installed package."""
    if not path.startswith("pkg://"):
        return path
    package, _, relative = path[len("pkg://"):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{path}: Python package {package!r} is not installed "
                                f"(pip install {package.replace('_', '-')})")
    return os.path.join(list(spec.submodule_search_locations)[0], relative)


def _inputs(spec: InputSpec) -> list[str]:
    if spec.format == "tfds":
        return [f"tfds:{p}" for p in spec.paths]
    return [resolve_path(p) for p in spec.paths]


def _options(ctx: Context):
    """The one preprocessing options object of this run (each input's format,
    where and clean_html travel in its own InputSpec); the corpus's document
    unit and size limits apply to plain-text inputs only."""
    from pipelines.preprocess import PreprocessOptions

    pp, corpus = ctx.config.preprocess, ctx.config.preprocess.corpus
    return PreprocessOptions(mode=ctx.resolved.tokenizer_mode, max_bad_fraction=pp.max_bad_fraction,
                             split_salt=str(ctx.config.seed), text_field=corpus.text_field,
                             text_unit=corpus.text_unit, max_line_bytes=corpus.max_line_bytes,
                             max_document_bytes=corpus.max_document_bytes, num_shards=pp.num_shards)


def _resolved(spec: InputSpec) -> InputSpec:
    """The spec with `pkg://` paths resolved; format, where and clean_html reach the reader."""
    return spec if spec.format == "tfds" else dataclasses.replace(spec, paths=_inputs(spec))


def _counts(summary: dict) -> dict:
    return {k: summary[k] for k in ("input", "written", "rejected", "tokens", "records") if k in summary}


def _written(out: str, outputs: dict, summary: dict) -> dict:
    report.write_json(os.path.join(out, "summary.json"), summary)
    return {"outputs": outputs, "metrics": _counts(summary)}


def run_import(ctx: Context, out: str) -> dict:
    """`model.init_from` as a model directory, weights as they are (special-token
    rows, when the checkpoint lacks them, are added fresh at fine-tuning)."""
    from gpt_keras import saving
    from gpt_keras.tokenizer import GPTTokenizer
    from pipelines import init_from

    cfg = ctx.config
    path = ctx.resolved.checkpoint.path
    backbone, tokenizer, fmt = init_from.load(path, cfg.model.n_head)
    if tokenizer is None:  # checked by init_from.check: preprocess.vocab_dir matches the weights
        tokenizer = GPTTokenizer.load(cfg.preprocess.vocab_dir, mode=ctx.resolved.tokenizer_mode)
    model_dir = os.path.join(out, "model")
    saving.save_model(backbone, model_dir, tokenizer)
    summary = {"init_from": path, "format": fmt, "config": backbone.config.to_dict(),
               "tokenizer_mode": tokenizer.mode}
    return _written(out, {"model_dir": model_dir}, summary)


def run_vocabulary(ctx: Context, out: str) -> dict:
    """The BPE vocabulary: learned from the corpus, copied from `preprocess.vocab_dir`,
    or the checkpoint's (`model.init_from`, through the import stage)."""
    from pipelines.preprocess import run_vocab

    pp = ctx.config.preprocess
    vocab_dir = os.path.join(out, "vocab")
    reuse = ctx.artifact("import", "model_dir") if ctx.config.model.init_from else pp.vocab_dir
    if reuse:
        from gpt_keras.tokenizer import GPTTokenizer
        GPTTokenizer.load(reuse, mode=ctx.resolved.tokenizer_mode).save(vocab_dir, format="original")
        summary = {"reused": reuse}
    else:
        summary = run_vocab(_resolved(pp.corpus.input), vocab_dir, ctx.config.num_merges, ctx.beam_args,
                            options=_options(ctx))
    return _written(out, {"vocab_dir": vocab_dir}, summary)


def run_packed_corpus(ctx: Context, out: str) -> dict:
    """The pre-training corpus, tokenized and packed into n_ctx-token rows."""
    from pipelines.preprocess import run_corpus

    pp = ctx.config.preprocess
    vocab_dir = ctx.artifact("vocab", "vocab_dir")
    corpus_dir = os.path.join(out, "corpus")
    summary = run_corpus(_resolved(pp.corpus.input), corpus_dir, vocab_dir, pp.n_ctx, pp.val_fraction,
                         ctx.beam_args, options=_options(ctx))
    return _written(out, {"corpus_dir": corpus_dir}, summary)


def run_task_records(ctx: Context, out: str, task: TaskSpec) -> dict:
    """One task's records, through the paper's input transform for its family, in
    the splits the data gives or drawn by a hash (`TaskSpec`)."""
    from gpt_keras import schema
    from pipelines.preprocess import run_task

    pp = ctx.config.preprocess
    vocab_dir = ctx.artifact("vocab", "vocab_dir")
    task_dir = os.path.join(out, "records")
    test_fraction = 0.0 if task.splits_given else task.test_fraction  # given splits: the test split is given
    fractions = {"train": 1.0 - task.val_fraction - test_fraction, "validation": task.val_fraction}
    if test_fraction:
        fractions["test"] = test_fraction
    if task.splits:  # an input per split: its rows are that split's, as given
        inputs = {name: _resolved(spec) for name, spec in task.splits.items()}
        carve = 0.0 if "validation" in task.splits else task.val_fraction
    else:
        inputs = _resolved(task.input)
        carve = task.val_fraction if task.input.format == "tfds" and not task.split_field else 0.0
    summary = run_task(
        inputs, task.family, {**task.fields, "label": task.label_field}, task_dir, vocab_dir,
        pp.n_ctx, task.label_names or None, ctx.beam_args, options=_options(ctx),
        num_choices=task.num_choices or None, split_fractions=fractions, split_field=task.split_field or None,
        carve_validation=carve, allowed_splits=schema.TASK_SPLITS)
    if task.splits_given and not summary["splits"].get("validation", {}).get("documents"):
        raise ConfigError(f"preprocess.tasks[{task.name}]: no validation rows (fine-tuning selects on them); "
                          f"{task.split_field and f'give split column {task.split_field!r} validation rows, or '}"
                          "set splits.validation, or leave the splits to the hash (val_fraction)")
    return _written(out, {"task_dir": task_dir}, summary)


# ---- pretrain / finetune (through pipelines.trainer) ---------------------------

def _checkpoint_dir(ctx: Context, stage: str) -> str:
    # Outside the atomic artifact so that a killed run resumes from it; keyed by
    # the stage fingerprint so that a changed config never resumes stale state.
    return os.path.join(ctx.work_dir, ".checkpoints", f"{stage}-{ctx.fingerprints[stage]}")


def load_vocabulary(ctx: Context):
    """The vocabulary stage's tokenizer."""
    from gpt_keras.tokenizer import GPTTokenizer
    return GPTTokenizer.load(ctx.artifact("vocab", "vocab_dir"), mode=ctx.resolved.tokenizer_mode)


def run_pretrain(ctx: Context, out: str) -> dict:
    """Pre-training from scratch, or continued from `model.init_from`; with
    `pretrain.enabled: false` the imported checkpoint as it is."""
    from gpt_keras import saving
    from pipelines import trainer

    cfg = ctx.config
    init_dir = ctx.artifact("import", "model_dir") if cfg.model.init_from else ""
    if not cfg.pretrain.enabled:
        return {"outputs": {"model_dir": init_dir}, "metrics": {"steps": 0}}
    model_dir, snapshot_dir = os.path.join(out, "model"), os.path.join(out, "snapshots")
    start = saving.load_backbone(init_dir) if init_dir else ctx.resolved.gpt_config(load_vocabulary(ctx).n_vocab)
    result = trainer.pretrain(cfg.pretrain, start, ctx.artifact("corpus", "corpus_dir"),
                              ctx.artifact("vocab", "vocab_dir"), model_dir, os.path.join(out, "logs"),
                              seed=cfg.seed, checkpoint_dir=_checkpoint_dir(ctx, "pretrain"),
                              snapshot_dir=snapshot_dir)
    report.plot_curves({"pretrain": result.history}, ["lm_loss", "perplexity"], os.path.join(out, "curves.png"),
                       "Pre-training (L1)")
    last = {k: v[-1] for k, v in result.history.items() if v}
    return {"outputs": {"model_dir": model_dir, "curves": os.path.join(out, "curves.png"), "snapshots": snapshot_dir},
            "metrics": {"steps": result.steps, "planned_steps": result.planned_steps,
                        "stopped_by_time_budget": result.stopped_by_time_budget, **last}}


def finetune_selected(ctx: Context, run_dir: str, task: str, init_dir: str, spec: FinetuneSpec, seed: int,
                      train_examples: int | None = None) -> tuple[FinetuneResult, dict]:
    """Fine-tune one model for `task` from `init_dir` ("" = no pre-training:
    the pre-trained model's architecture, fresh weights) with `spec`, once per
    learning rate (a list is a grid); the model that does best on the
    validation split is kept in `run_dir`. `seed` draws the head, the
    special-token rows, dropout and the order of batches (and, with
    `train_examples`, which training examples are used). Returns the kept
    run's result and the metrics the stage records: the chosen rate and, with
    a grid, every rate's validation score."""
    from gpt_keras import saving
    from pipelines import trainer

    start_time = time.time()
    task_dir, vocab_dir = ctx.artifact(f"records/{task}", "task_dir"), ctx.artifact("vocab", "vocab_dir")
    rates = spec.learning_rates
    trials = {}
    for lr in rates:
        trial_dir = run_dir if len(rates) == 1 else f"{run_dir}_lr{lr:g}"
        start = saving.load_backbone(init_dir) if init_dir else saving.read_config(ctx.artifact("pretrain", "model_dir"))
        trials[lr] = (trial_dir, trainer.finetune(spec.model_copy(update={"learning_rate": lr}), start, task_dir,
                                                  vocab_dir, trial_dir, os.path.join(trial_dir, "logs"), seed=seed,
                                                  train_examples=train_examples))
    # Regression keeps its lowest validation loss: its scores are negated.
    best = max(rates, key=lambda lr: trials[lr][1].validation_score)
    for lr, (trial_dir, _) in trials.items():
        if trial_dir != run_dir:
            if lr == best:
                os.replace(trial_dir, run_dir)
            else:
                shutil.rmtree(trial_dir)
    result = trials[best][1]
    metrics = {"best_" + result.monitor: result.best, "trainable_parameters": result.trainable_parameters,
               "train_examples": result.train_examples, "seconds": round(time.time() - start_time, 1),
               "seed": seed, "learning_rate": best}
    if len(rates) > 1:
        metrics["validation_by_learning_rate"] = {f"{lr:g}": abs(r.validation_score) for lr, (_, r) in trials.items()}
    return result, metrics


def run_finetune(ctx: Context, out: str, task: str, seed: int, suffix: str) -> dict:
    """One task, from the pre-trained model and (the paper's ablation) from
    scratch, with `seed`; the models are `<task>/<variant><suffix>`."""
    cfg = ctx.config
    variants = {"pretrained": ctx.artifact("pretrain", "model_dir")}
    if cfg.finetune.ablation_without_pretraining:
        variants["scratch"] = ""
    outputs, metrics, histories = {}, {}, {}
    for variant, init_dir in variants.items():
        run_dir = os.path.join(out, variant)
        result, metrics[f"{task}/{variant}{suffix}"] = finetune_selected(ctx, run_dir, task, init_dir, cfg.finetune,
                                                                          seed)
        histories[variant] = result.history
        outputs[f"{task}/{variant}{suffix}"] = run_dir
    report.plot_curves(histories, ["task_loss", "accuracy", "lm_loss"], os.path.join(out, "curves.png"),
                       f"Fine-tuning {task}: with vs without pre-training (seed {seed})")
    return {"outputs": {"models": outputs, "task_dir": ctx.artifact(f"records/{task}", "task_dir"),
                        "trainable_parameters": _trained(metrics)},
            "metrics": metrics}


def run_transfer(ctx: Context, out: str, task: str, variant: str, seed: int, suffix: str) -> dict:
    """One more model fine-tuned with `seed`, as the analysis section asks
    (`ResolvedConfig.analysis_variants`): another transfer mode, no
    auxiliary LM loss, fewer transferred blocks, or fewer labelled examples
    (from the pre-trained model or from scratch)."""
    changes = dict(ctx.resolved.analysis_variants[variant])
    examples = changes.pop("train_examples", None)
    init_dir = "" if changes.pop("init", "pretrained") == "scratch" else ctx.artifact("pretrain", "model_dir")
    optim = ctx.config.finetune.model_copy(update=changes)
    model_dir = os.path.join(out, "model")
    _, summary = finetune_selected(ctx, model_dir, task, init_dir, optim, seed, examples)
    metrics = {f"{task}/{variant}{suffix}": summary}
    return {"outputs": {"models": {key: model_dir for key in metrics}, "trainable_parameters": _trained(metrics)},
            "metrics": metrics}


def _trained(metrics: dict[str, dict]) -> dict[str, int]:
    """Model key -> the parameters its fine-tuning changed, counted while it
    trained: a saved LoRA model is merged, so its reloaded copy would count
    as a fully fine-tuned one."""
    return {key: result["trainable_parameters"] for key, result in metrics.items()}


# ---- evaluate --------------------------------------------------------------

def run_evaluate(ctx: Context, out: str) -> dict:
    """Held-out LM perplexity, and every fine-tuned and zero-shot model's
    scores on each task's test split, in metrics.json. Each fine-tuned
    variant's row also holds its score per seed with their mean and spread,
    and (but the pre-trained one's) its paired comparison with the
    pre-trained model; each model's answers are in predictions/<task>.json
    (docs/seeds.md)."""
    results, fingerprint = _lm_results(ctx)
    for task in ctx.config.preprocess.tasks:
        if _zero_shot_stage(ctx.config):
            results.update(ctx.artifact(f"zeroshot/{task.name}", "metrics"))
        results.update(_task_results(ctx, task.name, fingerprint, os.path.join(out, "predictions")))
    report.write_json(os.path.join(out, "metrics.json"), results)
    outputs = {"metrics": os.path.join(out, "metrics.json"), "predictions": os.path.join(out, "predictions")}
    if ctx.config.analysis.figure2:
        outputs["figure2"] = report.figure2(results, [t.name for t in ctx.config.preprocess.tasks],
                                            ctx.resolved.n_layer, os.path.join(out, "figure2"))
    if ctx.config.analysis.data_efficiency:
        outputs["data_efficiency"] = report.data_efficiency(results, os.path.join(out, "data_efficiency.png"))
    return {"outputs": outputs, "metrics": results}


def _lm_results(ctx: Context) -> tuple[dict, str]:
    """({"lm": held-out loss and perplexity of the pre-trained LM}, its vocabulary's fingerprint)."""
    from gpt_keras import data as gk_data
    from gpt_keras import saving
    from gpt_keras.model import GPTLMModel

    backbone, tokenizer = saving.load_model(ctx.artifact("pretrain", "model_dir"))
    lm = GPTLMModel(backbone)
    lm.compile()
    held_out = gk_data.pretrain_dataset(ctx.artifact("corpus", "corpus_dir"), "validation",
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
            for key, model_dir in ctx.artifact(stage, "models").items():
                models.setdefault(key.removesuffix(suffix), {})[seed] = model_dir
                trained[key.removesuffix(suffix)] = _trained_count(ctx, stage, key, model_dir)
    return models, trained


def _trained_count(ctx: Context, stage: str, key: str, model_dir: str) -> int:
    """The parameters the fine-tuning of `key` changed, as its stage recorded
    them. A finetune stage run before it recorded them trained every weight
    when `finetune.transfer` is full: then the saved model's count is exact."""
    from gpt_keras import saving
    from gpt_keras.transfer import trainable_parameters

    recorded = ctx.artifacts.get(stage, {}).get("trainable_parameters")
    if recorded is None and group_of(stage) == "finetune" and ctx.config.finetune.transfer == "full":
        return trainable_parameters(saving.load_task_model(model_dir))
    return (recorded if recorded is not None else ctx.artifact(stage, "trainable_parameters"))[key]


def _task_results(ctx: Context, task: str, fingerprint: str, predictions_dir: str) -> dict[str, dict]:
    """One row per fine-tuned variant of `task` (`_over_seeds`), with its
    comparison with the pre-trained model; writes every model's answers,
    per seed, to `predictions_dir`/<task>.json."""
    from gpt_keras import data as gk_data
    from gpt_keras.metrics import predictions

    task_dir = ctx.artifact(finetune_stage(task, seed_runs(ctx.config)[0][1]), "task_dir")
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


# ---- export ----------------------------------------------------------------

def run_export(ctx: Context, out: str) -> dict:
    from gpt_keras import saving
    from gpt_keras.export import export_task_model

    task, (_, suffix) = ctx.config.export_task, seed_runs(ctx.config)[0]
    model_dir = ctx.artifact(finetune_stage(task, suffix), "models")[f"{task}/pretrained{suffix}"]
    base_dir = ctx.config.export.base_dir or os.path.join(ctx.work_dir, "serving")
    model, tokenizer = saving.load_model(model_dir)  # the directory carries tokenizer and label names
    path = export_task_model(model, tokenizer, base_dir, task)
    report.write_json(os.path.join(out, "pushed.json"), {"model_name": task, "path": str(path)})
    return {"outputs": {"saved_model": str(path), "base_dir": base_dir, "model_name": task}, "metrics": {}}


# ---- the plan --------------------------------------------------------------

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
    # and a config without seeds keeps the fingerprints it had before the key existed.
    runs, finetune_reads = seed_runs(config), config.finetune.model_dump(exclude={"seeds"})
    pretrain_reads = ["import"] if imported and not config.pretrain.enabled else ["vocab", "corpus"] + [
        s.name for s in imported]
    stages = [
        *imported,
        Stage("vocab", [s.name for s in imported], run_vocabulary, {**source, **tokens}),
        Stage("corpus", ["vocab"], run_packed_corpus,
              {"corpus": corpus, "n_ctx": pp.n_ctx, "val_fraction": pp.val_fraction, "seed": seed,
               "num_shards": pp.num_shards, **tokens}),
        *[Stage(f"records/{t.name}", ["vocab"], functools.partial(run_task_records, task=t),
                {"task": t.model_dump(), "n_ctx": pp.n_ctx, "seed": seed, "num_shards": pp.num_shards, **tokens})
          for t in pp.tasks],
        Stage("pretrain", pretrain_reads, run_pretrain,
              {"model": config.model.model_dump(), "pretrain": config.pretrain.model_dump(), "seed": seed}),
        *[Stage(finetune_stage(t, suffix), ["pretrain", f"records/{t}"],
                functools.partial(run_finetune, task=t, seed=k, suffix=suffix),
                {"finetune": finetune_reads, "seed": k}) for t in tasks for k, suffix in runs],
    ]
    analysis = config.analysis
    variants = resolved.analysis_variants
    for t in tasks:  # the analysis section's extra fine-tuned models and zero/few-shot scoring
        stages += [Stage(transfer_stage(t, name, suffix), ["pretrain", f"records/{t}"],
                         functools.partial(run_transfer, task=t, variant=name, seed=k, suffix=suffix),
                         {"finetune": finetune_reads, "variant": changes, "seed": k})
                   for name, changes in variants.items() for k, suffix in runs]
        if _zero_shot_stage(config):
            prompt = analysis.prompts.get(t)
            stages.append(Stage(f"zeroshot/{t}", ["pretrain", f"records/{t}"],
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


def _zero_shot_stage(config: ExperimentConfig) -> bool:
    a = config.analysis
    return bool(a.zero_shot or a.few_shot or a.figure2)


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
