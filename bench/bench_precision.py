"""Does bf16 mixed precision pre-train as well as float32? On the demo's real data.

Three pre-training runs through the pipeline's own trainer (`pipelines.trainer.pretrain`)
on a demo work directory's corpus records, with the config's model and pre-training
section, cut to `--steps`:
  fp32 seed 0, fp32 seed 1 (the noise floor: another init, dropout and data order),
  and `--policy` (default mixed_bfloat16) seed 0.
The held-out LM loss is recorded every `--steps / --points` steps. bf16 "tracks" fp32
when its mean distance to fp32 seed 0 over those points is within the mean distance
between the two fp32 seeds. The runs alternate nothing (each is minutes long); their
wall times are printed for what they are.

    python pipelines/run.py --stages preprocess         # the demo's corpus records
    python bench/bench_precision.py --work_dir runs/demo --steps 400
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_flags  # noqa: E402  (bench/, next to this file)
from pipelines.config.loading import load_config  # noqa: E402
from pipelines.resolve import resolve  # noqa: E402
from pipelines.stages.outputs import CorpusOutput, T, VocabOutput  # noqa: E402
from pipelines import trainer  # noqa: E402


STAGE_RECORD = "stage.json"  # what `pipelines.manifest` writes in each finished stage's directory


def _recorded(work_dir: str, stage: str, kind: type[T]) -> T:
    """The outputs a finished stage recorded, as its record type."""
    with open(os.path.join(work_dir, stage, STAGE_RECORD), encoding="utf-8") as f:
        return kind.from_dict(json.load(f)["outputs"])


def pretrain_curve(args: argparse.Namespace, policy: str, seed: int) -> dict:
    """One pre-training run; returns its held-out loss curve and wall time."""
    from gpt_keras.tokenizer import GPTTokenizer

    config = load_config(args.config, args.set)
    vocab_dir = _recorded(args.work_dir, "vocab", VocabOutput).vocab_dir
    corpus_dir = _recorded(args.work_dir, "corpus", CorpusOutput).corpus_dir
    optim = config.pretrain.model_copy(update={
        "max_steps": args.steps, "steps_per_checkpoint": max(1, args.steps // args.points),
        "dtype_policy": policy, "snapshots": 0})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = trainer.pretrain(optim, resolve(config).gpt_config(GPTTokenizer.load(vocab_dir).n_vocab), corpus_dir,
                                  vocab_dir, os.path.join(tmp, "model"), os.path.join(tmp, "logs"), seed=seed)
        seconds = time.perf_counter() - start
    return {"policy": policy, "seed": seed, "val_loss": result.history["val_lm_loss"], "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "demo"),
                        help="a pipeline work directory whose vocab and corpus stages are done")
    parser.add_argument("--config", default="demo", help="pipeline config (its model and pretrain sections)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--steps", type=int, default=400, help="pre-training steps per run")
    parser.add_argument("--points", type=int, default=8, help="held-out evaluations per run")
    parser.add_argument("--policy", default="mixed_bfloat16", help="the mixed policy compared with float32")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for stage in ("vocab", "corpus"):
        if not os.path.exists(os.path.join(args.work_dir, stage, STAGE_RECORD)):
            raise SystemExit(f"{args.work_dir} has no finished {stage} stage: run "
                             f"`python pipelines/run.py --work_dir {args.work_dir} --stages preprocess` first")

    load_before = os.getloadavg()[0]
    runs = [pretrain_curve(args, "float32", 0), pretrain_curve(args, "float32", 1), pretrain_curve(args, args.policy, 0)]
    fp32_a, fp32_b, mixed = (np.array(r["val_loss"]) for r in runs)
    spread, distance = float(np.abs(fp32_a - fp32_b).mean()), float(np.abs(mixed - fp32_a).mean())
    report = {"steps": args.steps, "runs": runs, "seed_spread": spread, "mixed_distance": distance,
              "tracks": distance <= spread, "cpu": cpu_flags(),
              "load_average_1min": [load_before, os.getloadavg()[0]]}

    print(f"\nHeld-out LM loss, {args.config} config, {args.steps} steps ({args.work_dir}); "
          f"CPU: {cpu_flags()}")
    step = max(1, args.steps // args.points)
    print("step    " + "".join(f"{r['policy'][:14]:>16s}/s{r['seed']}" for r in runs))
    for i in range(len(fp32_a)):
        print(f"{(i + 1) * step:<8d}" + "".join(f"{np.array(r['val_loss'])[i]:>19.4f}" for r in runs))
    print("seconds " + "".join(f"{r['seconds']:>19.1f}" for r in runs))
    print(f"mean |fp32 s0 - fp32 s1| = {spread:.4f} (the seed spread); mean |{args.policy} s0 - fp32 s0| = "
          f"{distance:.4f}: {'within' if report['tracks'] else 'OUTSIDE'} the spread "
          f"(ratio {distance / spread if spread else float('inf'):.2f})")
    print(f"1-min load average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
