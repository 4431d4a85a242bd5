"""Greedy generation speed: gpt_keras vs keras-hub `GPT2CausalLM` vs HF `OpenAIGPTLMHeadModel`.

The `gpt1` shape (12 layers, 768 wide, 12 heads, MLP 3072, 512 positions),
random weights, a 32-token prompt then 128 new tokens, at batch 1 and 8:

* ours: `gpt_keras.generate.generate` (KV cache), with XLA (`ours_xla`) and
  without (`ours_graph`);
* keras-hub: `GPT2CausalLM.generate` with the greedy sampler, `preprocessor=None`
  (ids + padding mask in), a `GPT2Backbone` of the same size (vocabulary 40478),
  compiled as Keras picks by default (`keras_hub`) and with XLA (`keras_hub_xla`);
* HF: `OpenAIGPTLMHeadModel.generate(do_sample=False)`. It has no KV cache (its
  forward takes no `past_key_values`): every step re-runs the whole prefix.
  128 tokens at batch 8 take ~10 minutes on 2 cores, so at batch > 1 it
  generates `--hf_batch_tokens` tokens (default 16), marked `*`: that
  overstates its 128-token speed, since later steps cost more. It is timed
  in the first `--hf_rounds` rounds only (default 1; 128 tokens at batch 1
  take 1-4 minutes).

Systems alternate within each round (the order rotates); the median over
rounds is reported. Each framework runs in its own worker process.

Batch 1 is bound by reading every weight once per token, so the memory
bandwidth is measured in the same run (the best of a NumPy and a TF reduction
over 1 GiB, before and after the rounds; the higher value is used, which is
the conservative choice) and the fraction of `bandwidth / weight bytes`
reached is reported. A second, tighter ceiling is measured too: the same
weight matrices multiplied in sequence by one row in an XLA loop and nothing
else (`weight_stream_ceiling`), i.e. what any fp32 decoder could reach with
XLA's CPU matrix-vector code on this machine. `--bf16` adds gpt_keras with
bfloat16 weights (and compute), with its effect on the logits.

    python bench/bench_generate.py --rounds 3
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
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

VOCAB = 40478  # BPE ids drawn for prompts (the gpt1 vocabulary without specials)
WORKERS = {"gpt_keras": ("ours_xla", "ours_graph"), "keras_hub": ("keras_hub", "keras_hub_xla"), "hf": ("hf",)}
BF16 = ("ours_bf16_xla", "ours_bf16_graph")


def _prompts(batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(1, VOCAB, (batch, length)).astype("int32")


# ------------------------------------------------------------------ systems
# Each builder returns {name: run(batch, warm=False) -> number of new tokens generated}.

def _build_gpt_keras(args: argparse.Namespace, state: dict) -> dict[str, Callable[[int], int]]:
    import keras
    import tensorflow as tf

    import gpt_keras as gk
    from gpt_keras.generate import generate

    keras.utils.set_random_seed(0)
    backbone = gk.GPTBackbone.from_preset("gpt1")
    state["weight_bytes"] = {"float32": _weight_bytes(backbone)}

    def runner(model, jit):
        def run(batch, warm=False):
            out = generate(model, _prompts(batch, args.prompt_len).tolist(), args.new_tokens, jit_compile=jit)
            return sum(len(row) for row in out)
        return run

    systems = {"ours_xla": runner(backbone, True), "ours_graph": runner(backbone, False)}
    # Built (and compiled) once; timed before and after the rounds.
    ceilings = {dtype: weight_stream_ceiling(backbone, storage=dtype) for dtype in ("float32", "bfloat16")}
    state["probes"] = {"ceiling": lambda: {dtype: probe() for dtype, probe in ceilings.items()}}
    if args.bf16:
        keras.config.set_dtype_policy("bfloat16")
        try:
            half = gk.GPTBackbone.from_preset("gpt1")
        finally:
            keras.config.set_dtype_policy("float32")
        for target, source in zip(half.weights, backbone.weights):
            target.assign(tf.cast(source, target.dtype))
        state["weight_bytes"]["bfloat16"] = _weight_bytes(half)
        state["bf16_effect"] = _bf16_effect(backbone, half, args)
        systems.update({"ours_bf16_xla": runner(half, True), "ours_bf16_graph": runner(half, False)})
    return systems


def weight_stream_ceiling(backbone, steps: int = 64, repeats: int = 3,
                          storage: str = "float32") -> Callable[[], float]:
    """A probe returning the tokens/s of a loop that only multiplies one row
    by every weight matrix of the model (4 per block, then the tied head), each
    product feeding the next: the matrix-vector floor of a batch-1 decode step, without attention,
    LayerNorm, GELU, the cache or sampling. `storage="bfloat16"` keeps the
    matrices in bf16 and widens them to fp32 for each product (weight-only
    reduced precision): half the bytes to read."""
    import tensorflow as tf

    from gpt_keras.generate import lm_head

    kernels = [w for block in backbone.blocks
               for w in (block.attn.c_attn.kernel, block.attn.c_proj.kernel, block.c_fc.kernel, block.c_proj.kernel)]
    kernels.append(tf.Variable(lm_head(backbone)))
    if storage != "float32":
        kernels = [tf.Variable(tf.cast(w, storage)) for w in kernels]
    width = backbone.config.n_embd

    @tf.function(jit_compile=True)
    def loop(x):
        def body(i, h):
            for w in kernels:
                y = tf.matmul(h, tf.cast(w, tf.float32))
                h = y if y.shape[-1] in (width, backbone.config.n_inner) else y[:, :width]
            return i + 1, h[:, :width] * 1e-3
        return tf.while_loop(lambda i, h: i < steps, body, (0, x))[1]

    x = tf.ones([1, width])
    loop(x).numpy()  # compile
    return lambda: steps / min(_seconds(lambda: loop(x).numpy()) for _ in range(repeats))


def _weight_bytes(model) -> int:
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))


def _bf16_effect(fp32, bf16, args: argparse.Namespace) -> dict:
    """Logits of the bf16 copy vs fp32 on the same ids, and where greedy outputs first differ."""
    from gpt_keras.generate import generate, lm_head, lm_logits

    ids = _prompts(8, 64)
    inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    a = lm_logits(lm_head(fp32), fp32(inputs)[:, -1]).numpy()
    b = lm_logits(lm_head(bf16), bf16(inputs)[:, -1]).numpy()
    prompts = _prompts(8, args.prompt_len).tolist()
    greedy32, greedy16 = (generate(m, prompts, args.new_tokens) for m in (fp32, bf16))
    first_diff = [next((i for i, (x, y) in enumerate(zip(r, s)) if x != y), len(r)) for r, s in zip(greedy32, greedy16)]
    return {"max_abs_logit_diff": float(np.abs(a - b).max()), "logit_std": float(a.std()),
            "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).mean()),
            "greedy_first_difference_per_row": first_diff}


def _build_keras_hub(args: argparse.Namespace, state: dict) -> dict[str, Callable[[int], int]]:
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=12, num_heads=12, hidden_dim=768,
                                             intermediate_dim=3072, max_sequence_length=512)
    state["weight_bytes"] = {"float32": _weight_bytes(backbone)}
    total = args.prompt_len + args.new_tokens

    def runner(jit_compile):
        lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        kwargs = {} if jit_compile == "auto" else {"jit_compile": jit_compile}
        lm.compile(sampler="greedy", **kwargs)
        state.setdefault("keras_hub_jit_compile", {})[str(jit_compile)] = bool(lm.jit_compile)

        def run(batch, warm=False):
            # Without a preprocessor the inputs are padded to the final length;
            # the mask marks the prompt and generation fills the rest.
            ids = np.zeros((batch, total), "int32")
            ids[:, :args.prompt_len] = _prompts(batch, args.prompt_len)
            mask = np.zeros((batch, total), bool)
            mask[:, :args.prompt_len] = True
            out = lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)
            return int(np.asarray(out["padding_mask"]).sum()) - batch * args.prompt_len
        return run

    return {"keras_hub": runner("auto"), "keras_hub_xla": runner(True)}


def _build_hf(args: argparse.Namespace, state: dict) -> dict[str, Callable[[int], int]]:
    import inspect

    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig()).eval()
    state["hf_has_kv_cache"] = "past_key_values" in inspect.signature(model.forward).parameters
    state["weight_bytes"] = {"float32": int(sum(p.numel() * p.element_size() for p in model.parameters()))}

    def run(batch, warm=False):
        n = args.new_tokens if batch == 1 or not args.hf_batch_tokens else args.hf_batch_tokens
        n = 2 if warm else n  # nothing to compile: a short call warms torch up
        ids = torch.tensor(_prompts(batch, args.prompt_len), dtype=torch.long)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0)
        return int(out.shape[0] * (out.shape[1] - args.prompt_len))
    return {"hf": run}


BUILDERS = {"gpt_keras": _build_gpt_keras, "keras_hub": _build_keras_hub, "hf": _build_hf}


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> dict[str, float]:
    """Read bandwidth (GB/s): the best of NumPy sums (1 thread, all cores) and a
    TF reduction over a `gib` GiB float32 array (larger than any cache)."""
    import tensorflow as tf

    data = np.random.default_rng(0).random(int(gib * 2**28), dtype=np.float32)
    chunks = np.array_split(data, os.cpu_count() or 1)
    tensor = tf.constant(data)
    tf_sum = tf.function(tf.reduce_sum)
    probes = {"numpy_sum_1_thread": data.sum, "tf_reduce_sum": lambda: tf_sum(tensor).numpy()}
    with ThreadPoolExecutor(len(chunks)) as pool:  # NumPy releases the GIL in reductions
        probes["numpy_sum_all_cores"] = lambda: list(pool.map(np.sum, chunks))
        result = {}
        for name, probe in probes.items():
            probe()
            best = min(_seconds(probe) for _ in range(repeats))
            result[name] = data.nbytes / best / 1e9
    return result


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------ workers

def _worker(kind: str, args: argparse.Namespace, conn) -> None:
    """One framework in its own process; answers ('run', system, batch) requests."""
    state: dict = {}
    systems = {name: fn for name, fn in BUILDERS[kind](args, state).items() if name in args.systems}
    for name, run in systems.items():  # warm up: tracing / XLA compilation
        for batch in args.batches:
            start = time.perf_counter()
            run(batch, warm=True)
            state.setdefault("warmup_s", {})[f"{name}@{batch}"] = round(time.perf_counter() - start, 1)
    probes = state.pop("probes", {})
    conn.send(state)
    while True:
        request = conn.recv()
        if request[0] == "stop":
            break
        if request[0] == "bandwidth":
            conn.send(memory_bandwidth())
            continue
        if request[0] == "probe":
            conn.send(probes[request[1]]() if request[1] in probes else None)
            continue
        _, name, batch = request
        start = time.perf_counter()
        tokens = systems[name](batch)
        conn.send((time.perf_counter() - start, tokens))
    conn.close()


class _Worker:
    def __init__(self, kind: str, args: argparse.Namespace):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(kind, args, child), daemon=True)
        self.process.start()
        self.state = self.conn.recv()
        print(f"# {kind}: ready, warm-up seconds {self.state.get('warmup_s')}", flush=True)

    def ask(self, *request):
        self.conn.send(request)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(("stop",))
        self.process.join()


# ------------------------------------------------------------------ driver

def run(args: argparse.Namespace) -> dict:
    """Start the workers, time alternating rounds, return the report."""
    owner = {name: kind for kind, names in WORKERS.items() for name in names}
    owner.update({name: "gpt_keras" for name in BF16})
    systems = [s for s in args.systems if s in owner]
    load_before = os.getloadavg()[0]
    workers = {kind: _Worker(kind, args) for kind in WORKERS if any(owner[s] == kind for s in systems)}
    meter = workers.get("gpt_keras") or next(iter(workers.values()))
    bandwidth = [meter.ask("bandwidth")]
    ceiling = [meter.ask("probe", "ceiling")]
    timings = {(s, b): [] for s in systems for b in args.batches}
    try:
        for r in range(args.rounds):
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            for batch in args.batches:
                for name in order:
                    if name == "hf" and r >= args.hf_rounds:
                        continue
                    seconds, tokens = workers[owner[name]].ask("run", name, batch)
                    timings[name, batch].append((tokens / seconds, tokens))
            print(f"# round {r + 1}/{args.rounds}: " + ", ".join(
                f"{s}@{b} {timings[s, b][-1][0]:.1f}" for s in systems for b in args.batches
                if len(timings[s, b]) > r) + " tok/s", flush=True)
        bandwidth.append(meter.ask("bandwidth"))
        ceiling.append(meter.ask("probe", "ceiling"))
    finally:
        for worker in workers.values():
            worker.close()
    import keras
    import keras_hub
    import tensorflow as tf
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__, "keras_hub": keras_hub.__version__,
                "python": platform.python_version()}
    try:
        import torch
        import transformers
        versions.update(torch=torch.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    results = {f"{s}@{b}": {"tokens_per_s": statistics.median(t for t, _ in v),
                            "min": min(t for t, _ in v), "max": max(t for t, _ in v), "new_tokens": v[0][1],
                            "rounds": len(v)}
               for (s, b), v in timings.items()}
    return {"prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "batches": args.batches,
            "rounds": args.rounds, "systems": systems, "cores": os.cpu_count(), "results": results,
            "bandwidth_gb_s": bandwidth, "weight_stream_ceiling_tok_s": [c for c in ceiling if c],
            "workers": {k: w.state for k, w in workers.items()},
            "load_average_1min": [load_before, os.getloadavg()[0]], "versions": versions}


def print_report(report: dict) -> None:
    res, workers = report["results"], report["workers"]
    bw = max(max(probe.values()) for probe in report["bandwidth_gb_s"])
    weights = workers.get("gpt_keras", {}).get("weight_bytes", {"float32": 466_056_192})
    print(f"\nGreedy generation, gpt1 shape, random weights: {report['prompt_len']}-token prompt + "
          f"{report['new_tokens']} new tokens; median of {report['rounds']} rounds; {report['cores']} cores")
    for i, probe in enumerate(report["bandwidth_gb_s"]):
        print(f"memory bandwidth ({'before' if i == 0 else 'after'} the rounds): "
              + ", ".join(f"{k} {v:.1f}" for k, v in probe.items()) + " GB/s")
    bound = {dtype: bw * 1e9 / n for dtype, n in weights.items()}
    print(f"batch-1 bound = {bw:.1f} GB/s / weight bytes: "
          + ", ".join(f"{dtype} {n / 1e6:.0f} MB -> {bound[dtype]:.1f} tok/s" for dtype, n in weights.items()))
    print(f"\n{'batch':>5} {'system':<16} {'n':>2} {'tokens/s':>9} {'min..max':>13} {'ms/token':>9} "
          f"{'vs keras-hub':>12} {'vs HF':>7} {'of bound':>9}")
    for batch in report["batches"]:
        kh = [res[f"{s}@{batch}"]["tokens_per_s"] for s in ("keras_hub", "keras_hub_xla") if f"{s}@{batch}" in res]
        hf = res.get(f"hf@{batch}")
        for name in report["systems"]:
            r = res[f"{name}@{batch}"]
            tps = r["tokens_per_s"]
            star = "*" if name == "hf" and r["new_tokens"] != batch * report["new_tokens"] else ""
            vs_kh = f"{tps / max(kh):.2f}x" if kh else "-"
            vs_hf = f"{tps / hf['tokens_per_s']:.2f}x" if hf else "-"
            dtype = "bfloat16" if "bf16" in name else "float32"
            of_bound = f"{tps / bound[dtype]:.2f}" if batch == 1 and dtype in bound else "-"
            print(f"{batch:>5} {name + star:<16} {r['rounds']:>2} {tps:>9.1f} {r['min']:>6.1f}..{r['max']:<6.1f} "
                  f"{1000 * batch / tps:>9.1f} {vs_kh:>12} {vs_hf:>7} {of_bound:>9}")
    print("n: timed rounds; vs keras-hub: against the faster of keras_hub / keras_hub_xla; of bound: batch 1 only")
    if "hf" in workers:
        counts = {b: res[f"hf@{b}"]["new_tokens"] // b for b in report["batches"] if f"hf@{b}" in res}
        print(f"* HF new tokens per row, by batch: {counts} (--hf_batch_tokens); "
              f"HF OpenAIGPT has a KV cache: {workers['hf']['hf_has_kv_cache']}")
    if "keras_hub" in workers:
        print(f"keras-hub jit_compile (requested -> used): {workers['keras_hub'].get('keras_hub_jit_compile')}")
    if "bf16_effect" in workers.get("gpt_keras", {}):
        print(f"bf16 weights vs fp32, same weights: {workers['gpt_keras']['bf16_effect']}")
    if "ours_xla@1" in res and "keras_hub@1" in res:
        ours = res["ours_xla@1"]["tokens_per_s"]
        kh1 = max(res[f"{s}@1"]["tokens_per_s"] for s in ("keras_hub", "keras_hub_xla") if f"{s}@1" in res)
        print(f"targets at batch 1 (fp32): >= 2x keras-hub: {ours / kh1:.2f}x; "
              f">= 0.5 of the bandwidth bound: {ours / bound['float32']:.2f}")
        if report["weight_stream_ceiling_tok_s"]:
            top = {dtype: max(c[dtype] for c in report["weight_stream_ceiling_tok_s"]) for dtype in ("float32", "bfloat16")}
            print(f"weight-stream ceiling (the matrix-vector products alone, XLA): fp32 {top['float32']:.1f} tok/s = "
                  f"{top['float32'] / kh1:.2f}x keras-hub, {top['float32'] / bound['float32']:.2f} of the bound; "
                  f"ours reaches {ours / top['float32']:.2f} of it. With bf16-stored weights widened per product: "
                  f"{top['bfloat16']:.1f} tok/s ({top['bfloat16'] / top['float32']:.2f}x fp32)")
    before, after = report["load_average_1min"]
    print(f"1-min load average before/after: {before:.2f}/{after:.2f} (other work on the machine skews results)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (the median is reported)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prompt_len", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--systems", default="ours_xla,ours_graph,keras_hub,keras_hub_xla,hf",
                        help=f"comma-separated subset of {sum(WORKERS.values(), ())} (+ {BF16} with --bf16)")
    parser.add_argument("--hf_batch_tokens", type=int, default=16,
                        help="new tokens for HF at batch > 1 (no KV cache: slow); 0 = --new_tokens")
    parser.add_argument("--hf_rounds", type=int, default=1, help="rounds in which HF is timed (it is slow)")
    parser.add_argument("--bf16", action="store_true", help="also time gpt_keras with bfloat16 weights")
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.systems = [s for s in args.systems.split(",") if s] + (list(BF16) if args.bf16 else [])
    known = set(sum(WORKERS.values(), ())) | set(BF16)
    if set(args.systems) - known:
        parser.error(f"unknown --systems {sorted(set(args.systems) - known)}")
    if min([args.rounds, args.prompt_len, args.new_tokens, *args.batches]) < 1:
        parser.error("--rounds, --batches, --prompt_len and --new_tokens must be >= 1")
    if args.prompt_len + args.new_tokens > 512:
        parser.error("--prompt_len + --new_tokens must be <= 512 (n_ctx)")
    report = run(args)
    print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
