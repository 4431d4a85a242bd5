"""The pipeline's command line: raw text -> evaluated, exported model.

    python pipelines/run.py                       # the demo config, DirectRunner
    python pipelines/run.py --config gpt1 --set pretrain.batch_size=32
    python pipelines/run.py --stages finetune,evaluate --force
    python pipelines/run.py --runner=DataflowRunner --project=P --region=R \\
        --temp_location=gs://B/tmp --setup_file=./setup.py   # Beam options pass through

Stages: a finished stage is skipped on re-run while the config it reads and
the stages it reads are unchanged; adding a task runs only that task's
records and fine-tuning, then evaluate, and export if it serves that task.
--stages takes a group (left column), a stage (e.g. corpus,
finetune/rt_polarity) or `records` (every task's records):
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines import report  # noqa: E402
from pipelines.config.loading import load_config  # noqa: E402
from pipelines.config.validation import ConfigError  # noqa: E402
from pipelines.manifest import Manifest, fingerprint  # noqa: E402
from pipelines.resolve import resolve  # noqa: E402
from pipelines.plan import STAGE_NAMES, STAGE_TABLE, Stage, plan, select  # noqa: E402
from pipelines.stages.context import Context  # noqa: E402
from pipelines.stages.outputs import ExportOutput  # noqa: E402
from pipelines.stages.preprocess import load_vocabulary  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python pipelines/run.py", description=__doc__ + STAGE_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other --flags are Apache Beam pipeline options for the preprocess stage "
               "(default runner: the in-process DirectRunner, offline).")
    parser.add_argument("--config", default="demo", help="shipped config name (demo, gpt1) or a YAML/JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted path, e.g. pretrain.learning_rate=1e-4 (repeatable)")
    parser.add_argument("--stages", default=",".join(STAGE_NAMES),
                        help=f"comma-separated groups {STAGE_NAMES} or stage names (see above) to run (default: all)")
    parser.add_argument("--force", action="store_true", help="re-run the selected stages even if up to date")
    parser.add_argument("--work_dir", help="override the config's work_dir")
    return parser


def run(argv: list[str] | None = None) -> dict:
    """Parse arguments, validate the config, run the stages; returns the manifest entries."""
    args, beam_args = build_parser().parse_known_args(argv)
    stray = [a for a in beam_args if not a.startswith("--")]
    if stray:
        raise ConfigError(f"unexpected arguments {stray}; Beam options must look like --name=value")
    overrides = list(args.set) + ([f"work_dir={args.work_dir}"] if args.work_dir else [])
    config = load_config(args.config, overrides)
    resolved = resolve(config)  # with model.init_from: the checkpoint, read and checked once
    stages = plan(config, resolved)
    selected = select(stages, args.stages)

    manifest = Manifest(config.work_dir)
    ctx = Context(config=config, resolved=resolved, beam_args=beam_args, work_dir=config.work_dir, fingerprints={},
                  artifacts={k: e.get("outputs", {}) for k, e in manifest.entries.items() if e.get("status") == "complete"})
    print(f"gpt_keras pipeline {config.name!r}: work_dir={os.path.abspath(config.work_dir)} stages={selected}")
    for stage in stages:
        ctx.fingerprints[stage.name] = fp = fingerprint(stage.config, [ctx.fingerprints[u] for u in stage.upstream])
        if stage.name in selected:
            _run_stage(stage, ctx, manifest, fp, args.force)
        if stage.name == "vocab" and "vocab" in ctx.artifacts:
            # Fail before packing or training if the model cannot take this vocabulary.
            resolved.gpt_config(load_vocabulary(ctx).n_vocab)
    print_summary(manifest, stages)
    return manifest.entries


def _run_stage(stage: Stage, ctx: Context, manifest: Manifest, fp: str, force: bool) -> None:
    if not force and manifest.is_fresh(stage.name, fp):
        print(f"[{stage.name}] up to date (fingerprint {fp}); skipped. Use --force to re-run.")
        return
    print(f"[{stage.name}] running (fingerprint {fp}) ...")
    start = time.time()
    inputs = {u: ctx.artifacts.get(u, {}) for u in stage.upstream}
    with manifest.stage(stage.name, fp, stage.config, inputs) as (out_dir, entry):
        result = stage.run(ctx, out_dir)
        entry.update(outputs=result.outputs.to_dict(), metrics=result.metrics)
    ctx.artifacts[stage.name] = manifest.entries[stage.name]["outputs"]
    print(f"[{stage.name}] done in {time.time() - start:.0f}s")


def print_summary(manifest: Manifest, stages: list[Stage]) -> None:
    """Times per stage, perplexity, task scores with/without pre-training (spread over seeds,
    paired comparisons), and how to serve."""
    entries = manifest.entries
    rows = [["group", "stage", "status", "seconds"]]
    rows += [[s.group, s.name, entries[s.name]["status"], entries[s.name].get("seconds", "")]
             for s in stages if s.name in entries]
    print("\n" + report.format_table(rows))
    ran = [entries[s.name].get("seconds") or 0 for s in stages if s.name in entries]
    # Each stage's time as recorded when it ran (a skipped stage keeps its earlier time).
    print(f"Stage time in all: {sum(ran):.0f} s ({sum(ran) / 60:.1f} min), as each stage recorded it")
    selection = report.selection_table({k: v for s in stages if s.name in entries and s.group in ("finetune", "analysis")
                                        for k, v in entries[s.name].get("metrics", {}).items()})
    if selection:
        print("\nRecipe chosen on the validation split (validation score per setting, * kept):\n" + selection)
    metrics = entries.get("evaluate", {}).get("metrics", {})
    if metrics.get("lm"):
        print(f"\nHeld-out LM perplexity: {metrics['lm']['validation_perplexity']:.2f}")
    scores = {k: v for k, v in metrics.items() if k != "lm"}
    for title, table in (("", report.scores_table(scores)), ("Over fine-tuning seeds:\n", report.seeds_table(scores)),
                         ("Against the pre-trained model, paired by seed and example:\n",
                          report.comparison_table(scores)),
                         ("Data efficiency: test accuracy by labelled training examples (pre-trained minus scratch, "
                          "paired):\n", report.data_efficiency_table(scores))):
        if table:
            print(f"\n{title}{table}")
    if entries.get("export", {}).get("outputs"):  # a failed export records none
        push = ExportOutput.from_dict(entries["export"]["outputs"])
        print(f"\nModel: {push.saved_model}")
        print(f"Serve it: python -m serving.server --model_base_path={os.path.join(push.base_dir, push.model_name)} "
              f"--model_name={push.model_name}")
        print(f"Query it: python -m serving.clients --model_name={push.model_name} predict 'a gripping, funny film'")


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
