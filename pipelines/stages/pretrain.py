"""The pretrain stage, through `pipelines.trainer.pretrain`."""
from __future__ import annotations

import os

from pipelines import report
from pipelines.stages.context import Context
from pipelines.stages.preprocess import load_vocabulary


def _checkpoint_dir(ctx: Context, stage: str) -> str:
    # Outside the atomic artifact so that a killed run resumes from it; keyed by
    # the stage fingerprint so that a changed config never resumes stale state.
    return os.path.join(ctx.work_dir, ".checkpoints", f"{stage}-{ctx.fingerprints[stage]}")


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
