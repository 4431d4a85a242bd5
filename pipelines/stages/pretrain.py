"""The pretrain stage, through `pipelines.trainer.pretrain`."""
from __future__ import annotations

import os

from pipelines import report
from pipelines.stages.context import Context
from pipelines.stages.outputs import CorpusOutput, ImportOutput, PretrainOutput, StageResult, VocabOutput
from pipelines.stages.preprocess import load_vocabulary


def _checkpoint_dir(ctx: Context, stage: str) -> str:
    # Outside the atomic artifact so that a killed run resumes from it; keyed by
    # the stage fingerprint so that a changed config never resumes stale state.
    return os.path.join(ctx.work_dir, ".checkpoints", f"{stage}-{ctx.fingerprints[stage]}")


def run_pretrain(ctx: Context, out: str) -> StageResult:
    """Pre-training from scratch, or continued from `model.init_from`; with
    `pretrain.enabled: false` the imported checkpoint as it is."""
    from gpt_keras import saving
    from pipelines import trainer

    cfg = ctx.config
    init_dir = ctx.output("import", ImportOutput).model_dir if cfg.model.init_from else ""
    if not cfg.pretrain.enabled:
        return StageResult(PretrainOutput(init_dir), {"steps": 0})
    model_dir, snapshot_dir, curves = (os.path.join(out, name) for name in ("model", "snapshots", "curves.png"))
    start = saving.load_backbone(init_dir) if init_dir else ctx.resolved.gpt_config(load_vocabulary(ctx).n_vocab)
    result = trainer.pretrain(cfg.pretrain, start, ctx.output("corpus", CorpusOutput).corpus_dir,
                              ctx.output("vocab", VocabOutput).vocab_dir, model_dir, os.path.join(out, "logs"),
                              seed=cfg.seed, checkpoint_dir=_checkpoint_dir(ctx, "pretrain"),
                              snapshot_dir=snapshot_dir)
    report.plot_curves({"pretrain": result.history}, ["lm_loss", "perplexity"], curves, "Pre-training (L1)")
    last = {k: v[-1] for k, v in result.history.items() if v}
    return StageResult(PretrainOutput(model_dir, curves, snapshot_dir),
                       {"steps": result.steps, "planned_steps": result.planned_steps,
                        "stopped_by_time_budget": result.stopped_by_time_budget, **last})
