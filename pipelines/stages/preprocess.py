"""The preprocess stages: the checkpoint's import, the vocabulary, the packed
corpus and each task's records, through `pipelines.preprocess` (Beam)."""
from __future__ import annotations

import dataclasses
import importlib.util
import os

from pipelines import report
from pipelines.config.data import InputSpec, TaskSpec
from pipelines.config.validation import ConfigError
from pipelines.stages.context import Context
from pipelines.stages.outputs import (CorpusOutput, ImportOutput, RecordsOutput, StageOutput, StageResult,
                                       VocabOutput)


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

    pp = ctx.config.preprocess  # its keys named like an option (max_bad_fraction, num_shards, ...) are that option
    return PreprocessOptions.from_sections(pp, pp.corpus, mode=ctx.resolved.tokenizer_mode,
                                           split_salt=str(ctx.config.seed))


def _resolved(spec: InputSpec) -> InputSpec:
    """The spec with `pkg://` paths resolved; format, where and clean_html reach the reader."""
    return spec if spec.format == "tfds" else dataclasses.replace(spec, paths=_inputs(spec))


def _counts(summary: dict) -> dict:
    return {k: summary[k] for k in ("input", "written", "rejected", "tokens", "records") if k in summary}


def _written(out: str, outputs: StageOutput, summary: dict) -> StageResult:
    report.write_json(os.path.join(out, "summary.json"), summary)
    return StageResult(outputs, _counts(summary))


def run_import(ctx: Context, out: str) -> StageResult:
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
    return _written(out, ImportOutput(model_dir), summary)


def run_vocabulary(ctx: Context, out: str) -> StageResult:
    """The BPE vocabulary: learned from the corpus, copied from `preprocess.vocab_dir`,
    or the checkpoint's (`model.init_from`, through the import stage)."""
    from pipelines.preprocess import run_vocab

    pp = ctx.config.preprocess
    vocab_dir = os.path.join(out, "vocab")
    reuse = ctx.output("import", ImportOutput).model_dir if ctx.config.model.init_from else pp.vocab_dir
    if reuse:
        from gpt_keras.tokenizer import GPTTokenizer
        GPTTokenizer.load(reuse, mode=ctx.resolved.tokenizer_mode).save(vocab_dir, format="original")
        summary = {"reused": reuse}
    else:
        summary = run_vocab(_resolved(pp.corpus.input), vocab_dir, ctx.config.num_merges, ctx.beam_args,
                            options=_options(ctx))
    return _written(out, VocabOutput(vocab_dir), summary)


def run_packed_corpus(ctx: Context, out: str) -> StageResult:
    """The pre-training corpus, tokenized and packed into n_ctx-token rows."""
    from pipelines.preprocess import run_corpus

    pp = ctx.config.preprocess
    vocab_dir = ctx.output("vocab", VocabOutput).vocab_dir
    corpus_dir = os.path.join(out, "corpus")
    summary = run_corpus(_resolved(pp.corpus.input), corpus_dir, vocab_dir, pp.n_ctx, pp.val_fraction,
                         ctx.beam_args, options=_options(ctx))
    return _written(out, CorpusOutput(corpus_dir), summary)


def run_task_records(ctx: Context, out: str, task: TaskSpec) -> StageResult:
    """One task's records, through the paper's input transform for its family, in
    the splits the data gives or drawn by a hash (`TaskSpec`)."""
    from gpt_keras import schema
    from pipelines.preprocess.task import run_task

    pp = ctx.config.preprocess
    vocab_dir = ctx.output("vocab", VocabOutput).vocab_dir
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
    return _written(out, RecordsOutput(task_dir), summary)


def load_vocabulary(ctx: Context):
    """The vocabulary stage's tokenizer."""
    from gpt_keras.tokenizer import GPTTokenizer
    return GPTTokenizer.load(ctx.output("vocab", VocabOutput).vocab_dir, mode=ctx.resolved.tokenizer_mode)
