"""The zeroshot stages (group analysis): a task solved by the pre-trained LM
alone, zero- and few-shot (`zeroshot/<task>`), scored on the same test split
as the fine-tuned models. Settings: the config's `analysis` section.

The task records hold token ids (`[_start_] text [_classify_]`, or one
`[_start_] context [_delimiter_] answer [_classify_]` per choice); the text is
decoded back from them, so the zero-shot prompts read exactly the words the
fine-tuned models saw. Label offsets / thresholds (`analysis.calibrate`) are
fitted on the validation split, never on the test split.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from pipelines import report
from pipelines.stages.context import Context, records_stage
from pipelines.stages.outputs import PretrainOutput, RecordsOutput, StageResult, ZeroShotOutput

ZERO_SHOT_FAMILIES = ("classification", "multiple_choice")


def read_task_rows(task_dir: str, split: str, tokenizer: Any, family: str) -> tuple[list, np.ndarray]:
    """(rows, labels) of a records split: rows are texts (classification) or
    (context, [answers]) pairs (multiple choice)."""
    from gpt_keras import data as gk_data  # pylint: disable=g-import-not-at-top

    specials = {tokenizer.start_id, tokenizer.classify_id}
    rows, labels = [], []
    for x, y in gk_data.task_dataset(task_dir, split, 256):
        ids, mask = x["token_ids"].numpy(), x["padding_mask"].numpy().astype(bool)
        for row_ids, row_mask in zip(ids, mask):
            seqs = [[t for t in seq[m] if t not in specials] for seq, m in zip(row_ids, row_mask)]
            if family == "multiple_choice":
                parts = [seq.index(tokenizer.delimiter_id) for seq in seqs]
                rows.append((tokenizer.decode(seqs[0][:parts[0]]),
                             [tokenizer.decode(seq[p + 1:]) for seq, p in zip(seqs, parts)]))
            else:
                rows.append(tokenizer.decode(seqs[0]))
        labels.append(y.numpy())
    return rows, np.concatenate(labels) if labels else np.zeros([0], np.int32)


def _solver(family: str, scorer: Any, prompt: Any, words: list, demos: list, k: int):
    from gpt_keras.zeroshot import LabelWordClassifier, MultipleChoiceSolver  # pylint: disable=g-import-not-at-top

    if family == "multiple_choice":
        return MultipleChoiceSolver(scorer, demonstrations=demos, k=k)
    return LabelWordClassifier(scorer, words, template=prompt.template, demonstrations=demos, k=k)


def _predict(solver: Any, family: str, rows: list):
    if family == "multiple_choice":
        return solver.predict([c for c, _ in rows], [a for _, a in rows])
    return solver.predict(rows)


def _max_k(tokenizer: Any, family: str, demos: list, queries: list, n_ctx: int) -> int:
    """The largest k whose demonstrations of average length fit with a median query."""
    def length(row):
        return len(tokenizer.encode(row if isinstance(row, str) else row[0] + " " + row[1][0])) + 3

    per_demo = float(np.mean([length(r) for r, _ in demos[:500]]))
    query = float(np.median([length(r) for r in queries[:500]]))
    return max(1, int((n_ctx - query) // per_demo))


def run_zeroshot(ctx: Context, out: str, task: str) -> StageResult:
    """Zero-shot and few-shot scores of one task on its test split; with
    `analysis.figure2`, also the zero-shot score of every pre-training
    snapshot (the paper's Figure 2, right)."""
    from gpt_keras import data as gk_data  # pylint: disable=g-import-not-at-top
    from gpt_keras import saving  # pylint: disable=g-import-not-at-top

    spec = ctx.config.analysis
    task_dir = ctx.output(records_stage(task), RecordsOutput).task_dir
    metadata = gk_data.load_metadata(task_dir)
    family = metadata.family
    if family not in ZERO_SHOT_FAMILIES:
        note = {"note": f"no zero-shot solver for the {family} family"}
        report.write_json(os.path.join(out, "metrics.json"), note)
        return StageResult(ZeroShotOutput({}), note)
    pretrained = ctx.output("pretrain", PretrainOutput)
    backbone, tokenizer = saving.load_model(pretrained.model_dir)
    splits = {split: read_task_rows(task_dir, split, tokenizer, family)
              for split in ("train", "validation", "test" if "test" in metadata.splits else "validation")}
    demos = list(zip(splits["train"][0], splits["train"][1].tolist()))
    ks = ([0] if spec.zero_shot else []) + [
        _max_k(tokenizer, family, demos, splits["test" if "test" in splits else "validation"][0],
               backbone.config.n_ctx) if k == "max" else int(k) for k in spec.few_shot]
    results, words = {}, None
    for k in dict.fromkeys(ks):  # unique, in order
        name = f"{task}/zero_shot" if k == 0 else f"{task}/few_shot_k{k}"
        results[name] = _score(ctx, backbone, tokenizer, metadata, splits, demos, task, k, words)
        words = results[name].get("label_words")  # chosen once per LM, on validation
        print(f"[zeroshot/{task}] k={k}: accuracy {results[name]['accuracy']:.4f} "
              f"(demonstrations used: {results[name]['mean_demonstrations']:.2f} on average)")
    if spec.figure2:
        results[f"{task}/zero_shot_by_step"] = curve = {}
        snapshots = pretrained.snapshots or ""
        for name in sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else []:
            snapshot, _ = saving.load_model(os.path.join(snapshots, name))
            step = int(name.split("_")[-1])
            curve[step] = _score(ctx, snapshot, tokenizer, metadata, splits, demos, task, 0)
            print(f"[zeroshot/{task}] pre-training step {step}: zero-shot accuracy {curve[step]['accuracy']:.4f}")
        if not curve:
            print(f"[zeroshot/{task}] no pre-training snapshots (set pretrain.snapshots and re-run pretrain)")
    report.write_json(os.path.join(out, "metrics.json"), results)
    return StageResult(ZeroShotOutput(results), results)


def _score(ctx: Context, backbone: Any, tokenizer: Any, metadata: Any, splits: dict, demos: list, task: str,
           k: int, words: list | None = None) -> dict:
    """Test metrics of the LM `backbone` solving the task with k demonstrations;
    `words`: label words already chosen for this LM (default: the prompt's,
    or the label names). Candidate words are chosen on the validation split."""
    from gpt_keras.metrics import task_metrics  # pylint: disable=g-import-not-at-top
    from gpt_keras.scoring import LMScorer  # pylint: disable=g-import-not-at-top
    from pipelines.config.experiment import PromptSpec  # pylint: disable=g-import-not-at-top

    spec, family = ctx.config.analysis, metadata.family
    split = "test" if "test" in splits else "validation"
    (test, test_labels), (val, val_labels) = splits[split], splits["validation"]
    scorer = LMScorer(backbone, tokenizer, batch_size=32)
    prompt = spec.prompts.get(task, PromptSpec())
    solver = _solver(family, scorer, prompt, words or prompt.label_words or metadata.label_names or [], demos, k)
    if spec.calibrate and hasattr(solver, "calibrate"):
        solver.calibrate(val, val_labels)
    result = _predict(solver, family, test)
    chosen = {}
    if family != "multiple_choice":
        chosen = {"label_words": solver.label_words}
        if solver.word_selection:
            chosen["label_word_selection"] = {"split": "validation", "combinations": solver.word_selection}
            print(f"[zeroshot/{task}] label words chosen on validation: {' / '.join(solver.label_words)} "
                  f"(accuracy {max(r['accuracy'] for r in solver.word_selection):.4f}; "
                  f"{len(solver.word_selection)} combinations compared)")
    return {"split": split, "examples": int(len(test_labels)), "k": k, "trainable_parameters": 0,
            "mean_demonstrations": float(result.demonstrations.mean()), **chosen,
            **task_metrics(family, test_labels, result.scores, len(metadata.label_names or []) or None)}
