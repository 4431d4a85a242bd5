"""The export stage: the first seed's pre-trained fine-tuned model of the
export task as a versioned SavedModel for serving."""
from __future__ import annotations

import os

from pipelines import report
from pipelines.stages.context import Context, finetune_stage, seed_runs
from pipelines.stages.outputs import ExportOutput, FinetuneOutput, StageResult


def run_export(ctx: Context, out: str) -> StageResult:
    from gpt_keras import saving
    from gpt_keras.export import export_task_model

    task, (_, suffix) = ctx.config.export_task, seed_runs(ctx.config)[0]
    model_dir = ctx.output(finetune_stage(task, suffix), FinetuneOutput).models[f"{task}/pretrained{suffix}"]
    base_dir = ctx.config.export.base_dir or os.path.join(ctx.work_dir, "serving")
    model, tokenizer = saving.load_model(model_dir)  # the directory carries tokenizer and label names
    path = export_task_model(model, tokenizer, base_dir, task)
    report.write_json(os.path.join(out, "pushed.json"), {"model_name": task, "path": str(path)})
    return StageResult(ExportOutput(str(path), base_dir, task), {})
