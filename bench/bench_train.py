"""Training throughput: gpt_keras `GPTLMModel` against keras-hub and HF PyTorch, fp32 and bf16.

One optimisation step (forward, backward, clipped update) at the same shapes:
  keras_xla, keras_graph   ours in float32 (`OpenAIAdam`), with and without XLA
  keras_bf16, keras_bf16_xla  ours under `mixed_bfloat16`, without and with XLA
  keras_hub                a naive keras-hub model of the same shape in float32
                           (`GPT2Backbone` + tied head, `GPT2CausalLM`, Adam,
                           Keras's default compile), pre-LN as GPT-2
  hf_torch, hf_torch_bf16  HF `OpenAIGPTLMHeadModel` with `AdamW` and the same
                           clipping, in float32 and under bf16 autocast
and a matmul-rate probe (`matmul_*`): the model's matmul shapes (the four
projections at batch x seq rows, the tied LM head), forward only, through
TF's oneDNN kernels and through XLA, in float32 and bfloat16.

The systems alternate within each round, so machine noise hits them alike;
each takes at least `--min-seconds` per round. Each training system runs in
its own worker process (`--in-process` to share one); the probes run in the
parent between them. The table shows the median over rounds, each row's
ratio to our float32 step (`keras_xla`) and to keras-hub, and a roofline:
the model FLOPs per second (6 x matmul parameters x tokens/s plus the
attention products) against the matmul rates measured in the same run.

    python bench/bench_train.py --preset gpt1 --seq 128 --batch 8 --rounds 5

Needs the `[parity]` extra (torch, transformers) and keras-hub. Both
frameworks use every core: torch threads are set to the core count; TF uses
all cores by default.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import ISAS, Worker, check_systems_under_limit, cpu_flags, limit_isa  # noqa: E402  (bench/, next to this file)


def _keras_step(config, ids: np.ndarray, jit_compile: bool, dtype_policy: str = "float32") -> Callable[[], float]:
    import gpt_keras as gk
    from gpt_keras import precision
    from gpt_keras.optim import OpenAIAdam

    with precision.dtype_policy(dtype_policy):  # as `gpt_keras.train` builds its models
        model = gk.GPTLMModel(gk.GPTBackbone(**config.to_dict()))
    model.compile(optimizer=OpenAIAdam(learning_rate=6.25e-5), jit_compile=jit_compile, auto_scale_loss=False)
    batch = {"token_ids": ids, "padding_mask": np.ones_like(ids)}

    def step() -> float:
        return float(model.train_on_batch(batch, return_dict=True)["loss"])  # float() waits for the result
    return step


def _keras_hub_step(config, ids: np.ndarray) -> Callable[[], float]:
    """What a keras-hub user writes: GPT2CausalLM on a backbone of our shape, Adam, default compile."""
    import keras
    import keras_hub

    if config.n_inner != 4 * config.n_embd:
        print(f"# warning: keras-hub GPT-2 takes intermediate_dim {config.n_inner}; HF differs")
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config.total_vocab_size, num_layers=config.n_layer, num_heads=config.n_head,
        hidden_dim=config.n_embd, intermediate_dim=config.n_inner, dropout=config.resid_pdrop,
        max_sequence_length=config.n_ctx)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=keras.optimizers.Adam(6.25e-5, global_clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1])}
    y = ids[:, 1:]

    def step() -> float:
        return float(model.train_on_batch(x, y, return_dict=True)["loss"])
    return step


def _hf_step(config, ids: np.ndarray, bf16: bool = False) -> Callable[[], float]:
    import torch
    import transformers

    hf_config = transformers.OpenAIGPTConfig(
        vocab_size=config.total_vocab_size, n_positions=config.n_ctx, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, embd_pdrop=config.embd_pdrop,
        attn_pdrop=config.attn_pdrop, resid_pdrop=config.resid_pdrop,
        layer_norm_epsilon=config.layer_norm_epsilon)
    if config.n_inner != 4 * config.n_embd:  # HF fixes the MLP width
        print(f"# warning: HF uses MLP width {4 * config.n_embd}, the preset {config.n_inner}: shapes differ")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the GPU check runs this on a GPU
    model = transformers.OpenAIGPTLMHeadModel(hf_config).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01)
    input_ids = torch.tensor(ids, dtype=torch.long, device=device)
    mask = torch.ones_like(input_ids)

    def step() -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids, attention_mask=mask, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())
    return step


# name: (dtype policy, XLA) of our step
KERAS = {"keras_xla": ("float32", True), "keras_graph": ("float32", False),
         "keras_bf16": ("mixed_bfloat16", False), "keras_bf16_xla": ("mixed_bfloat16", True)}
PROBES = {"matmul_fp32": ("float32", False), "matmul_bf16": ("bfloat16", False),
          "matmul_fp32_xla": ("float32", True), "matmul_bf16_xla": ("bfloat16", True)}
SYSTEMS = (*KERAS, "keras_hub", "hf_torch", "hf_torch_bf16", *PROBES)
BASELINE, PEER = "keras_xla", "keras_hub"


def _matmul_shapes(config, tokens: int) -> list[tuple[int, int, int]]:
    """(rows, inner, cols) of one block's projections and the tied LM head."""
    d, f = config.n_embd, config.n_inner
    return [(tokens, d, 3 * d), (tokens, d, d), (tokens, d, f), (tokens, f, d), (tokens, d, config.total_vocab_size)]


def _matmul_probe(config, tokens: int, dtype: str, jit_compile: bool) -> Callable[[], float]:
    """One pass over the model's matmul shapes (`matmul_flops` FLOPs)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shapes = _matmul_shapes(config, tokens)
    pairs = [(tf.constant(rng.standard_normal((m, k)), dtype), tf.constant(rng.standard_normal((k, n)), dtype))
             for m, k, n in shapes]

    @tf.function(jit_compile=jit_compile)
    def run():
        # Summing one element of each product keeps every matmul live without adding work.
        return tf.add_n([tf.cast(tf.matmul(a, b)[0, 0], tf.float32) for a, b in pairs])

    return lambda: float(run())


def matmul_flops(config, tokens: int) -> float:
    """FLOPs of one probe pass."""
    return float(sum(2 * m * k * n for m, k, n in _matmul_shapes(config, tokens)))


def model_flops_per_token(config, seq: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters (blocks + tied head) plus the attention
    products (QK^T and AV, full square as computed: 4 x seq x n_embd per layer forward, x3)."""
    d = config.n_embd
    matmul_params = config.n_layer * (4 * d * d + 2 * d * config.n_inner) + d * config.total_vocab_size
    return 6.0 * matmul_params + 12.0 * config.n_layer * seq * d


def _timed_round(step: Callable[[], float], min_seconds: float) -> tuple[float, int]:
    """(seconds per step, steps) running whole steps for at least `min_seconds`."""
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / steps, steps


def _config(args: argparse.Namespace):
    import gpt_keras as gk

    overrides = {"n_layer": args.layers} if args.layers else {}
    config = gk.GPTConfig.from_preset(args.preset, **overrides)
    if args.seq > config.n_ctx:
        raise SystemExit(f"--seq {args.seq} exceeds the preset's n_ctx={config.n_ctx}")
    return config


def _build(name: str, args: argparse.Namespace) -> Callable[[], float]:
    """Seed, set threads, and build one system's training step (or probe pass)."""
    import keras
    import torch

    torch.set_num_threads(args.torch_threads)
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    config = _config(args)
    if name in PROBES:
        return _matmul_probe(config, args.batch * args.seq, *PROBES[name])
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (args.batch, args.seq)).astype("int32")
    if name.startswith("hf_torch"):
        return _hf_step(config, ids, bf16=name == "hf_torch_bf16")
    if name == "keras_hub":
        return _keras_hub_step(config, ids)
    policy, jit_compile = KERAS[name]
    return _keras_step(config, ids, jit_compile=jit_compile, dtype_policy=policy)


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
        self.worker = Worker(name, _worker, name, args)
        print(self.worker.recv(), flush=True)

    def round(self) -> tuple[float, int]:
        return self.worker.ask("round")

    def close(self) -> None:
        self.worker.close("stop")


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
    check_systems_under_limit(systems)
    load_before = os.getloadavg()[0]
    runners = {name: (_Local if args.in_process or name in PROBES else _Remote)(name, args) for name in systems}
    per_step = {name: [] for name in systems}
    try:
        for r in range(args.rounds):
            order = systems[r % len(systems):] + systems[:r % len(systems)]  # rotate who goes first
            for name in order:
                per_step[name].append(runners[name].round()[0])
            print(f"# round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {args.batch * args.seq / per_step[n][-1]:.0f} tok/s" for n in systems
                if n not in PROBES), flush=True)
    finally:
        for runner in runners.values():
            runner.close()

    import keras
    import keras_hub
    import tensorflow as tf
    import torch
    import transformers

    tokens = args.batch * args.seq
    config = _config(args)
    results, matmul = {}, {}
    for name, t in per_step.items():
        if name in PROBES:
            flops = matmul_flops(config, tokens)
            matmul[name] = {"gflops": flops / statistics.median(t) / 1e9,
                            "min_gflops": flops / max(t) / 1e9, "max_gflops": flops / min(t) / 1e9}
        else:
            results[name] = {"median_s_per_step": statistics.median(t),
                             "tokens_per_s": tokens / statistics.median(t),
                             "min_tokens_per_s": tokens / max(t), "max_tokens_per_s": tokens / min(t)}
    return {"preset": args.preset, "n_layer": config.n_layer, "seq": args.seq, "batch": args.batch,
            "rounds": args.rounds, "cores": os.cpu_count(), "torch_threads": args.torch_threads,
            "in_process": args.in_process, "results": results, "matmul": matmul,
            "model_flops_per_token": model_flops_per_token(config, args.seq), "cpu": cpu_flags(),
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "keras_hub": keras_hub.__version__, "python": platform.python_version()}}


def print_table(report: dict) -> None:
    results = report["results"]
    print(f"\nTraining step, preset {report['preset']} ({report['n_layer']} layers), batch {report['batch']} x "
          f"seq {report['seq']}, {report['rounds']} rounds, {report['cores']} cores (torch threads "
          f"{report['torch_threads']}), {'one process' if report['in_process'] else 'one process per system'}")
    print(f"CPU: {report['cpu']}")
    peers = [p for p in (BASELINE, PEER) if p in results]
    print(f"{'system':<15} {'tokens/s':>9} {'ms/step':>8} {'min..max tokens/s':>19}"
          + "".join(f" {'/ ' + p:>14}" for p in peers) + f" {'GFLOP/s':>8}")
    for name, r in results.items():
        ratios = "".join(f" {r['tokens_per_s'] / results[p]['tokens_per_s']:>13.2f}x" for p in peers)
        print(f"{name:<15} {r['tokens_per_s']:>9.1f} {1000 * r['median_s_per_step']:>8.0f} "
              f"{r['min_tokens_per_s']:>9.1f}..{r['max_tokens_per_s']:<9.1f}{ratios} "
              f"{r['tokens_per_s'] * report['model_flops_per_token'] / 1e9:>8.0f}")
    if report["matmul"]:
        print(f"\nMatmul probe (model shapes, forward): {'GFLOP/s':>8} {'min..max':>13}")
        for name, m in report["matmul"].items():
            print(f"{name:<36} {m['gflops']:>8.0f} {m['min_gflops']:>6.0f}..{m['max_gflops']:<6.0f}")
        print(f"Roofline: model FLOPs/token {report['model_flops_per_token'] / 1e9:.3f} GFLOP "
              "(6 x matmul params + attention); each step's GFLOP/s above against the matmul rate:")
        for name, r in results.items():
            rate = r["tokens_per_s"] * report["model_flops_per_token"] / 1e9
            probe = _probe_for(name, report["matmul"])
            if probe:
                print(f"  {name:<15} {rate:>6.0f} GFLOP/s = {rate / report['matmul'][probe]['gflops']:.2f} of {probe}")
    before, after = report["load_average_1min"]
    print(f"1-min load average before/after: {before:.2f}/{after:.2f} (shared machine: other work skews "
          "absolute figures; the ratios come from alternating rounds)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


def _probe_for(name: str, matmul: dict) -> str | None:
    """The probe measuring the kernels a system's matmuls use (the fastest bf16 one for bf16 rows)."""
    if "bf16" in name:
        candidates = [p for p in ("matmul_bf16", "matmul_bf16_xla") if p in matmul]
        return max(candidates, key=lambda p: matmul[p]["gflops"], default=None)
    probe = "matmul_fp32_xla" if name == "keras_xla" else "matmul_fp32"
    return probe if probe in matmul else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="gpt1", help="gpt_keras preset (gpt1, demo, tiny)")
    parser.add_argument("--seq", type=int, default=128, help="sequence length")
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum time per system per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per system (compilation)")
    parser.add_argument("--layers", type=int, default=0, help="override the preset's n_layer (0: keep)")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {', '.join(SYSTEMS)}")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads (default: the core count, as TF uses)")
    parser.add_argument("--in-process", action="store_true",
                        help="run all systems in this process instead of one process each")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--isa", choices=ISAS, default=None,
                        help="limit oneDNN, XLA, torch and MKL to this instruction set (measure an AVX2 CPU on a newer one)")
    args = parser.parse_args(argv)
    limit_isa(args.isa)
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
