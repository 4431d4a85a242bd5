"""The pipeline's stages, TFX-style: preprocess -> pretrain -> finetune -> evaluate -> export.

Each stage is a function `(ctx, out_dir) -> entry updates` that reads the
artifacts of the stages before it (through `ctx.artifact(...)`) and writes
only into `out_dir`; `pipelines.manifest` makes that atomic and records it.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import time
from typing import Any, Callable

from pipelines import report
from pipelines.config import ExperimentConfig, InputSpec


@dataclasses.dataclass
class Context:
    """What a stage sees: the config, Beam arguments, and finished artifacts."""
    config: ExperimentConfig
    beam_args: list[str]
    artifacts: dict[str, dict]  # stage -> its manifest entry "outputs"
    work_dir: str
    fingerprints: dict[str, str]

    def artifact(self, stage: str, key: str) -> Any:
        try:
            return self.artifacts[stage][key]
        except KeyError:
            raise RuntimeError(f"stage output {stage}.{key} is missing: run the {stage!r} stage first "
                               f"(python pipelines/run.py --stages {stage})") from None


@dataclasses.dataclass
class Stage:
    name: str
    upstream: list[str]
    run: Callable[[Context, str], dict]
    config_of: Callable[[ExperimentConfig], Any]


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


def run_preprocess(ctx: Context, out: str) -> dict:
    from pipelines.preprocess import PreprocessOptions, run_corpus, run_task, run_vocab

    pp, corpus = ctx.config.preprocess, ctx.config.preprocess.corpus
    # One options object for the whole stage; each input's format, where and clean_html travel in its InputSpec.
    options = PreprocessOptions(mode=pp.tokenizer_mode, max_bad_fraction=pp.max_bad_fraction,
                                split_salt=str(ctx.config.seed), text_field=corpus.text_field)

    def inputs(spec: InputSpec) -> InputSpec:  # pkg:// resolved; format, where and clean_html reach the reader
        return spec if spec.format == "tfds" else dataclasses.replace(spec, paths=_inputs(spec))

    vocab_dir = os.path.join(out, "vocab")
    if pp.vocab_dir:
        from gpt_keras.tokenizer import GPTTokenizer
        GPTTokenizer.load(pp.vocab_dir, mode=pp.tokenizer_mode).save(vocab_dir, format="original")
        summaries = {"vocab": {"reused": pp.vocab_dir}}
    else:
        summaries = {"vocab": run_vocab(inputs(corpus.input), vocab_dir, pp.num_merges, ctx.beam_args,
                                        options=options)}
    corpus_dir = os.path.join(out, "corpus")
    summaries["corpus"] = run_corpus(inputs(corpus.input), corpus_dir, vocab_dir, pp.n_ctx, pp.val_fraction,
                                     ctx.beam_args, options=options)
    task_dirs = {}
    for task in pp.tasks:
        task_dirs[task.name] = os.path.join(out, "tasks", task.name)
        fractions = {"train": 1.0 - task.val_fraction - task.test_fraction, "validation": task.val_fraction}
        if task.test_fraction:
            fractions["test"] = task.test_fraction
        summaries[task.name] = run_task(
            inputs(task.input), task.family, {**task.fields, "label": task.label_field}, task_dirs[task.name],
            vocab_dir, pp.n_ctx, task.label_names or None, ctx.beam_args, options=options,
            num_choices=task.num_choices or None, split_fractions=fractions)
    report.write_json(os.path.join(out, "summary.json"), summaries)
    return {"outputs": {"vocab_dir": vocab_dir, "corpus_dir": corpus_dir, "task_dirs": task_dirs},
            "metrics": {name: _counts(s) for name, s in summaries.items()}}


def _counts(summary: dict) -> dict:
    return {k: summary[k] for k in ("input", "written", "rejected", "tokens", "records") if k in summary}


# ---- pretrain / finetune (through the TFX-style trainer) ----------------------

def _checkpoint_dir(ctx: Context, stage: str) -> str:
    # Outside the atomic artifact so that a killed run resumes from it; keyed by
    # the stage fingerprint so that a changed config never resumes stale state.
    return os.path.join(ctx.work_dir, ".checkpoints", f"{stage}-{ctx.fingerprints[stage]}")


def run_pretrain(ctx: Context, out: str) -> dict:
    from pipelines.trainer import FnArgs, run_fn

    cfg = ctx.config
    corpus_dir = ctx.artifact("preprocess", "corpus_dir")
    model_dir = os.path.join(out, "model")
    result = run_fn(FnArgs(
        train_files=[corpus_dir], eval_files=[corpus_dir], serving_model_dir=model_dir,
        model_run_dir=os.path.join(out, "logs"), custom_config={
            "mode": "pretrain", "seed": cfg.seed, "vocab_dir": ctx.artifact("preprocess", "vocab_dir"),
            "model": dataclasses.asdict(cfg.model), "optim": dataclasses.asdict(cfg.pretrain),
            "checkpoint_dir": _checkpoint_dir(ctx, "pretrain")}))
    history = result["history"]
    report.plot_curves({"pretrain": history}, ["lm_loss", "perplexity"], os.path.join(out, "curves.png"),
                       "Pre-training (L1)")
    last = {k: v[-1] for k, v in history.items() if v}
    return {"outputs": {"model_dir": model_dir, "curves": os.path.join(out, "curves.png")},
            "metrics": {"steps": result["steps"], **last}}


def run_finetune(ctx: Context, out: str) -> dict:
    from gpt_keras.convert import load_pretrained
    from pipelines.trainer import FnArgs, run_fn

    cfg = ctx.config
    pretrained_dir = ctx.artifact("pretrain", "model_dir")
    backbone_config = load_pretrained(pretrained_dir)[0].config.to_dict()
    variants = {"pretrained": pretrained_dir}
    if cfg.finetune.ablation_without_pretraining:
        variants["scratch"] = ""
    outputs, metrics = {}, {}
    for task, task_dir in ctx.artifact("preprocess", "task_dirs").items():
        histories = {}
        for variant, init_dir in variants.items():
            run_dir = os.path.join(out, task, variant)
            start = time.time()
            result = run_fn(FnArgs(
                train_files=[task_dir], eval_files=[task_dir], serving_model_dir=run_dir,
                model_run_dir=os.path.join(run_dir, "logs"), custom_config={
                    "mode": "finetune", "seed": cfg.seed, "vocab_dir": ctx.artifact("preprocess", "vocab_dir"),
                    "init_model_dir": init_dir, "backbone_config": backbone_config,
                    "optim": dataclasses.asdict(cfg.finetune)}))
            histories[variant] = result["history"]
            outputs[f"{task}/{variant}"] = run_dir
            metrics[f"{task}/{variant}"] = {k: v for k, v in result.items() if k.startswith("best_")}
            metrics[f"{task}/{variant}"]["seconds"] = round(time.time() - start, 1)
        report.plot_curves(histories, ["task_loss", "accuracy", "lm_loss"], os.path.join(out, f"{task}_curves.png"),
                           f"Fine-tuning {task}: with vs without pre-training")
    return {"outputs": {"models": outputs, "task_dirs": ctx.artifact("preprocess", "task_dirs")},
            "metrics": metrics}


# ---- evaluate --------------------------------------------------------------

def run_evaluate(ctx: Context, out: str) -> dict:
    import keras
    import numpy as np

    from gpt_keras import data as gk_data
    from gpt_keras.convert import load_pretrained
    from gpt_keras.metrics import task_metrics
    from gpt_keras.model import GPTLMModel

    batch = ctx.config.finetune.batch_size
    backbone, tokenizer = load_pretrained(ctx.artifact("pretrain", "model_dir"))
    lm = GPTLMModel(backbone)
    lm.compile()
    corpus_dir = ctx.artifact("preprocess", "corpus_dir")
    held_out = gk_data.pretrain_dataset(corpus_dir, "validation", batch, expected_fingerprint=tokenizer.fingerprint,
                                        config=backbone.config)
    lm_logs = lm.evaluate(held_out, verbose=0, return_dict=True)
    results = {"lm": {"validation_lm_loss": lm_logs["lm_loss"], "validation_perplexity": math.exp(lm_logs["lm_loss"])}}
    for key, model_dir in ctx.artifact("finetune", "models").items():
        task = key.split("/")[0]
        task_dir = ctx.artifact("finetune", "task_dirs")[task]
        metadata = gk_data.load_metadata(task_dir)
        split = "test" if "test" in metadata.splits else "validation"
        model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
        data = gk_data.task_dataset(task_dir, split, batch, expected_fingerprint=tokenizer.fingerprint,
                                    config=model.backbone.config)
        labels, outputs = [], []
        for x, y in data:
            outputs.append(np.asarray(model(x, training=False)))
            labels.append(y.numpy())
        results[key] = {"split": split, "examples": int(sum(len(y) for y in labels)),
                        **task_metrics(metadata.family, np.concatenate(labels), np.concatenate(outputs),
                                       len(metadata.label_names or []) or None)}
    report.write_json(os.path.join(out, "metrics.json"), results)
    return {"outputs": {"metrics": os.path.join(out, "metrics.json")}, "metrics": results}


# ---- export ----------------------------------------------------------------

def run_export(ctx: Context, out: str) -> dict:
    import keras

    from gpt_keras import data as gk_data
    from gpt_keras.export import export_task_model
    from gpt_keras.tokenizer import GPTTokenizer

    spec = ctx.config.export
    models = ctx.artifact("finetune", "models")
    task = spec.model_name or next(iter(ctx.artifact("finetune", "task_dirs")))
    key = f"{task}/pretrained"
    if key not in models:
        raise RuntimeError(f"export.model_name {task!r} is not a fine-tuned task; have {sorted(models)}")
    base_dir = spec.base_dir or os.path.join(ctx.work_dir, "serving")
    metadata = gk_data.load_metadata(ctx.artifact("finetune", "task_dirs")[task])
    model = keras.models.load_model(os.path.join(models[key], "model.keras"))
    tokenizer = GPTTokenizer.load(models[key], mode=metadata.vocab.mode)
    path = export_task_model(model, tokenizer, base_dir, task, label_names=metadata.label_names)
    report.write_json(os.path.join(out, "pushed.json"), {"model_name": task, "path": str(path)})
    return {"outputs": {"saved_model": str(path), "base_dir": base_dir, "model_name": task}, "metrics": {}}


STAGES = [
    Stage("preprocess", [], run_preprocess, lambda c: {"preprocess": dataclasses.asdict(c.preprocess),
                                                       "seed": c.seed}),
    Stage("pretrain", ["preprocess"], run_pretrain, lambda c: {"model": dataclasses.asdict(c.model),
                                                              "pretrain": dataclasses.asdict(c.pretrain),
                                                              "seed": c.seed}),
    Stage("finetune", ["preprocess", "pretrain"], run_finetune,
          lambda c: {"finetune": dataclasses.asdict(c.finetune), "seed": c.seed}),
    Stage("evaluate", ["preprocess", "pretrain", "finetune"], run_evaluate, lambda c: {}),
    Stage("export", ["finetune"], run_export, lambda c: {"export": dataclasses.asdict(c.export)}),
]
STAGE_NAMES = [s.name for s in STAGES]
