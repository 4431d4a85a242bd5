"""Training throughput: gpt_keras `GPTLMModel` vs HF PyTorch `OpenAIGPTLMHeadModel`.

One optimisation step (forward, backward, clipped update) at the same shapes:
ours through `train_on_batch` with `OpenAIAdam`, compiled with and without
XLA (`jit_compile`); HF with `torch.optim.AdamW` and the same gradient
clipping (global norm 1.0). The systems alternate within each round, so
machine noise hits them alike; each takes at least `--min-seconds` per round.
Each system runs in its own worker process (`--in-process` to share one).
The table shows the median over rounds and the ratio ours / HF.

    python bench/bench_train.py --preset gpt1 --seq 128 --batch 8 --rounds 5

Needs the `[parity]` extra (torch, transformers). Both frameworks use every
core: torch threads are set to the core count; TF uses all cores by default.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _keras_step(config, ids: np.ndarray, jit_compile: bool) -> Callable[[], float]:
    import gpt_keras as gk
    from gpt_keras.optim import OpenAIAdam

    model = gk.GPTLMModel(gk.GPTBackbone(**config.to_dict()))
    model.compile(optimizer=OpenAIAdam(learning_rate=6.25e-5), jit_compile=jit_compile)
    batch = {"token_ids": ids, "padding_mask": np.ones_like(ids)}

    def step() -> float:
        return float(model.train_on_batch(batch, return_dict=True)["loss"])  # float() waits for the result
    return step


def _hf_step(config, ids: np.ndarray) -> Callable[[], float]:
    import torch
    import transformers

    hf_config = transformers.OpenAIGPTConfig(
        vocab_size=config.total_vocab_size, n_positions=config.n_ctx, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, embd_pdrop=config.embd_pdrop,
        attn_pdrop=config.attn_pdrop, resid_pdrop=config.resid_pdrop,
        layer_norm_epsilon=config.layer_norm_epsilon)
    if config.n_inner != 4 * config.n_embd:  # HF fixes the MLP width
        print(f"# warning: HF uses MLP width {4 * config.n_embd}, the preset {config.n_inner}: shapes differ")
    model = transformers.OpenAIGPTLMHeadModel(hf_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01)
    input_ids = torch.tensor(ids, dtype=torch.long)
    mask = torch.ones_like(input_ids)

    def step() -> float:
        loss = model(input_ids, attention_mask=mask, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


SYSTEMS = ("keras_xla", "keras_graph", "hf_torch")


def _timed_round(step: Callable[[], float], min_seconds: float) -> tuple[float, int]:
    """(seconds per step, steps) running whole steps for at least `min_seconds`."""
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / steps, steps


def _build(name: str, args: argparse.Namespace) -> Callable[[], float]:
    """Seed, set threads, and build one system's training step."""
    import keras
    import torch

    import gpt_keras as gk

    torch.set_num_threads(args.torch_threads)
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    config = gk.GPTConfig.from_preset(args.preset)
    if args.seq > config.n_ctx:
        raise SystemExit(f"--seq {args.seq} exceeds the preset's n_ctx={config.n_ctx}")
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, args.seq)).astype("int32")
    if name == "hf_torch":
        return _hf_step(config, ids)
    return _keras_step(config, ids, jit_compile=name == "keras_xla")


def _warm(name: str, args: argparse.Namespace) -> tuple[Callable[[], float], str]:
    t0 = time.perf_counter()
    step = _build(name, args)
    loss = float("nan")
    for _ in range(args.warmup):  # the first step compiles (tf.function / XLA)
        loss = step()
    return step, (f"# {name}: built + {args.warmup} warmup step(s) in {time.perf_counter() - t0:.1f} s, "
                  f"loss {loss:.3f}")


def _worker(name: str, args: argparse.Namespace, conn) -> None:
    """One system in its own process: its thread pools and memory stay its own."""
    step, message = _warm(name, args)
    conn.send(message)
    while conn.recv() == "round":
        conn.send(_timed_round(step, args.min_seconds))
    conn.close()


class _Remote:
    """A system running in a worker process, driven one round at a time."""

    def __init__(self, name: str, args: argparse.Namespace):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(name, args, child), daemon=True)
        self.process.start()
        print(self.conn.recv(), flush=True)

    def round(self) -> tuple[float, int]:
        self.conn.send("round")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join()


class _Local:
    def __init__(self, name: str, args: argparse.Namespace):
        self.step, message = _warm(name, args)
        self.min_seconds = args.min_seconds
        print(message, flush=True)

    def round(self) -> tuple[float, int]:
        return _timed_round(self.step, self.min_seconds)

    def close(self) -> None:
        pass


def run(args: argparse.Namespace) -> dict:
    """Build the systems, warm them up, time alternating rounds; returns the results.

    By default each system lives in its own process (started one after the
    other, then driven in turn), so that one framework's idle thread pools
    and memory cannot slow the other; only one of them computes at a time.
    """
    systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown --systems {unknown}; choose from {list(SYSTEMS)}")
    load_before = os.getloadavg()[0]
    runners = {name: (_Local if args.in_process else _Remote)(name, args) for name in systems}
    per_step = {name: [] for name in systems}
    try:
        for r in range(args.rounds):
            order = systems[r % len(systems):] + systems[:r % len(systems)]  # rotate who goes first
            for name in order:
                per_step[name].append(runners[name].round()[0])
            print(f"# round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {args.batch * args.seq / per_step[n][-1]:.0f} tok/s" for n in systems), flush=True)
    finally:
        for runner in runners.values():
            runner.close()

    import keras
    import tensorflow as tf
    import torch
    import transformers

    tokens = args.batch * args.seq
    results = {name: {"median_s_per_step": statistics.median(t),
                      "tokens_per_s": tokens / statistics.median(t),
                      "min_tokens_per_s": tokens / max(t), "max_tokens_per_s": tokens / min(t)}
               for name, t in per_step.items()}
    return {"preset": args.preset, "seq": args.seq, "batch": args.batch, "rounds": args.rounds,
            "cores": os.cpu_count(), "torch_threads": args.torch_threads, "in_process": args.in_process,
            "results": results, "load_average_1min": [load_before, os.getloadavg()[0]],
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()}}


def print_table(report: dict) -> None:
    results = report["results"]
    print(f"\nTraining step, preset {report['preset']}, batch {report['batch']} x seq {report['seq']}, "
          f"{report['rounds']} rounds, {report['cores']} cores (torch threads {report['torch_threads']}), "
          f"{'one process' if report['in_process'] else 'one process per system'}")
    print(f"{'system':<12} {'tokens/s':>10} {'ms/step':>10} {'min..max tokens/s':>20}")
    for name, r in results.items():
        print(f"{name:<12} {r['tokens_per_s']:>10.1f} {1000 * r['median_s_per_step']:>10.0f} "
              f"{r['min_tokens_per_s']:>9.1f}..{r['max_tokens_per_s']:<9.1f}")
    if "hf_torch" in results:
        for name in results:
            if name != "hf_torch":
                ratio = results[name]["tokens_per_s"] / results["hf_torch"]["tokens_per_s"]
                print(f"ratio {name} / hf_torch: {ratio:.2f}x")
    before, after = report["load_average_1min"]
    print(f"1-min load average before/after: {before:.2f}/{after:.2f} (other work on the machine skews results)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="gpt1", help="gpt_keras preset (gpt1, demo, tiny)")
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum time per system per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per system (compilation)")
    parser.add_argument("--systems", default="keras_xla,keras_graph,hf_torch",
                        help="comma-separated subset of keras_xla, keras_graph, hf_torch")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads (default: the core count, as TF uses)")
    parser.add_argument("--in-process", action="store_true",
                        help="run all systems in this process instead of one process each")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.seq, args.batch, args.rounds) < 1 or args.warmup < 1:
        parser.error("--seq, --batch, --rounds and --warmup must be >= 1")
    report = run(args)
    print_table(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
