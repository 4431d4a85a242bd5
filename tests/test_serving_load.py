"""Load test: good requests under a hostile mix (issue 15), over loopback.

The server runs as `python -m serving.server` (batching on) in a subprocess,
so that its memory is its own: peak RSS is the kernel's high-water mark
(VmHWM). Clients send good requests (REST and gRPC classification, REST
generation) interleaved with every class of hostile request of
test_serving_hostile.py, plus stalled and reset connections. Checks: no good
request fails, every hostile one gets its 4xx / gRPC error (never 5xx), and
the server's peak memory stays within a bound of its memory after loading.

    python tests/test_serving_load.py [--requests 600] [--clients 8]

prints: requests sent, good requests that failed, hostile requests answered
wrongly, peak server RSS, p50/p99 latency of good requests.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [p for p in (ROOT, TESTS) if p not in sys.path]

import grpc  # noqa: E402
import pytest  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402

from serving.clients import GrpcClient, RestClient  # noqa: E402
from test_serving_hostile import export_tiny_models  # noqa: E402

MAX_ROWS = 8
MAX_NEW_TOKENS = 4
MEMORY_BOUND = 200 << 20  # peak RSS over the RSS after loading; 20M declared strings alone cost > 300 MB


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def start_server(config: str, work: str) -> tuple[subprocess.Popen, int, int]:
    port_file = os.path.join(work, "ports.json")
    cmd = [sys.executable, "-m", "serving.server", f"--model_config_file={config}", "--port=0", "--rest_api_port=0",
           f"--port_file={port_file}", "--enable_batching", "--file_system_poll_wait_seconds=0",
           f"--batching_parameters_file={os.path.join(ROOT, 'serving', 'batching.config')}",
           f"--max_request_rows={MAX_ROWS}", f"--max_new_tokens={MAX_NEW_TOKENS}", "--log_level=WARNING"]
    log = open(os.path.join(work, "server.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 180
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {open(log.name).read()[-2000:]}")
        time.sleep(0.2)
    with open(port_file) as f:
        ports = json.load(f)
    return proc, ports["grpc_port"], ports["rest_api_port"]


class Mix:
    """One request per call of `run(i)`: good or hostile by `i`."""

    def __init__(self, grpc_port: int, rest_port: int):
        self.rest_port = rest_port
        self.rest = RestClient(f"http://127.0.0.1:{rest_port}", timeout=60)
        self.grpc = GrpcClient(f"127.0.0.1:{grpc_port}", timeout=60)
        huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a"], tensor_shape=(
            tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=20_000_000)])))
        self.huge_request = predict_pb2.PredictRequest()
        self.huge_request.model_spec.name = "sentiment"
        self.huge_request.inputs["text"].CopyFrom(huge)
        self.hostile = [self._deep, self._digits, self._surrogate, self._version, self._rows, self._declared,
                        self._unknown_rest, self._unknown_grpc, self._method, self._reset, self._stall,
                        self._too_long, self._oversize, self._control]

    # ---------------------------------------------------------------- good

    def good(self, i: int) -> None:
        kind = i % 3
        if kind == 0:
            rows = self.rest.predict("sentiment", instances=["a great movie"])["predictions"]
            assert rows[0]["label"] in ("neg", "pos")
        elif kind == 1:
            out = self.grpc.predict("sentiment", {"text": ["the plot was thin"]})
            assert out["probabilities"].shape == (1, 2)
        else:
            rows = self.rest.predict("writer", instances=[{"prompt": "a great", "max_new_tokens": 2}])
            assert isinstance(rows["predictions"][0]["text"], str)

    # ------------------------------------------------------------- hostile

    def _post(self, path: str, body: str, want: int = 400) -> bool:
        status, _ = self.rest.raw("POST", path, body.encode("utf-8", "surrogatepass"))
        return status == want

    def _deep(self):
        return self._post("/v1/models/sentiment:predict", '{"instances": ' + "[" * 5000 + "]" * 5000 + "}")

    def _digits(self):
        return self._post("/v1/models/sentiment:predict", '{"instances": [' + "9" * 5000 + "]}")

    def _surrogate(self):
        return self._post("/v1/models/sentiment:predict", '{"instances": ["\\ud800"]}')

    def _version(self):
        return self.rest.raw("GET", "/v1/models/sentiment/versions/" + "7" * 5000)[0] == 400

    def _rows(self):
        return self._post("/v1/models/writer:predict", json.dumps({"instances": [{"prompt": "a",
                                                                                   "max_new_tokens": 1}] * 1000}))

    def _too_long(self):
        return self._post("/v1/models/writer:predict", json.dumps(
            {"instances": [{"prompt": "a", "max_new_tokens": 10 ** 6}]}))

    def _declared(self):
        try:
            self.grpc.prediction.Predict(self.huge_request, timeout=60)
        except grpc.RpcError as err:
            return err.code() == grpc.StatusCode.INVALID_ARGUMENT
        return False

    def _unknown_rest(self):
        return self._post(f"/v1/models/x{uuid.uuid4().hex}:predict", '{"instances": ["a"]}', want=404)

    def _unknown_grpc(self):
        try:
            self.grpc.predict(f"x{uuid.uuid4().hex}", {"text": ["a"]})
        except grpc.RpcError as err:
            return err.code() == grpc.StatusCode.NOT_FOUND
        return False

    def _method(self):
        return self.rest.raw("DELETE", "/v1/models/sentiment")[0] == 405

    def _oversize(self):
        body = '{"instances": ["' + "a" * (5 << 20) + '"]}'
        try:
            return self._post("/v1/models/sentiment:predict", body, want=413)
        except OSError:  # the server may close before reading it all; it answered 413 first
            return True

    def _control(self):
        with socket.create_connection(("127.0.0.1", self.rest_port), timeout=30) as sock:
            sock.sendall(b"GET /v1/models/\x1b[2J\x00 HTTP/1.1\r\nConnection: close\r\n\r\n")
            return sock.recv(64).split()[1].startswith(b"4")

    def _reset(self):  # disconnect before the answer
        sock = socket.create_connection(("127.0.0.1", self.rest_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(b"GET /monitoring/prometheus/metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.close()
        return True

    def _stall(self):  # a connection that sends half a request and waits
        with socket.create_connection(("127.0.0.1", self.rest_port), timeout=30) as sock:
            sock.sendall(b"POST /v1/models/sentiment:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.5)
        return True

    def run(self, i: int) -> tuple[str, float | None, str | None]:
        """(kind, latency of a good request, failure)."""
        if i % 2:  # every other request is hostile
            attack = self.hostile[(i // 2) % len(self.hostile)]
            try:
                ok = attack()
            except Exception as err:  # noqa: BLE001 - reported
                return "hostile", None, f"{attack.__name__}: {err!r}"
            return "hostile", None, None if ok else f"{attack.__name__}: wrong answer"
        started = time.monotonic()
        try:
            self.good(i // 2)
        except Exception as err:  # noqa: BLE001 - reported
            return "good", None, f"good {i}: {err!r}"
        return "good", time.monotonic() - started, None


def run_load(requests: int, clients: int) -> dict:
    """Exports tiny models, starts a server, sends the mix; returns the figures."""
    with tempfile.TemporaryDirectory() as work:
        config = export_tiny_models(os.path.join(work, "models"))
        proc, grpc_port, rest_port = start_server(config, work)
        try:
            mix = Mix(grpc_port, rest_port)
            for name in ("sentiment", "writer"):  # loaded and warmed up once the port file exists
                assert mix.rest.status(name)["model_version_status"][0]["state"] == "AVAILABLE"
            loaded_rss = _proc_status(proc.pid, "VmRSS")
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(mix.run, range(requests)))
            elapsed = time.monotonic() - started
            peak_rss = _proc_status(proc.pid, "VmHWM")
            alive = proc.poll() is None
            mix.grpc.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    latencies = sorted(t for kind, t, _ in results if kind == "good" and t is not None)
    return {
        "requests": requests, "clients": clients, "seconds": round(elapsed, 1),
        "good": sum(kind == "good" for kind, _, _ in results),
        "good_failed": [f for kind, _, f in results if kind == "good" and f],
        "hostile": sum(kind == "hostile" for kind, _, _ in results),
        "hostile_wrong": [f for kind, _, f in results if kind == "hostile" and f],
        "loaded_rss_mib": loaded_rss / 2**20, "peak_rss_mib": peak_rss / 2**20, "server_alive": alive,
        "p50_ms": 1e3 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
    }


def report(figures: dict) -> str:
    return (f"requests sent: {figures['requests']} ({figures['good']} good, {figures['hostile']} hostile) from "
            f"{figures['clients']} clients in {figures['seconds']} s\n"
            f"good requests that failed: {len(figures['good_failed'])}\n"
            f"hostile requests answered wrongly: {len(figures['hostile_wrong'])}\n"
            f"server RSS: {figures['loaded_rss_mib']:.0f} MiB after loading, peak {figures['peak_rss_mib']:.0f} MiB\n"
            f"good-request latency under the hostile mix: p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms")


@pytest.mark.slow  # ~45 s on 2 cores, mostly exporting and starting the server
def test_good_requests_survive_a_hostile_mix():
    figures = run_load(int(os.environ.get("SERVING_HOSTILE_REQUESTS", "600")), clients=8)
    print(report(figures))
    assert figures["server_alive"]
    assert not figures["good_failed"], figures["good_failed"][:5]
    assert not figures["hostile_wrong"], figures["hostile_wrong"][:5]
    assert (figures["peak_rss_mib"] - figures["loaded_rss_mib"]) * 2**20 < MEMORY_BOUND, report(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    figures = run_load(args.requests, args.clients)
    print(report(figures))
    for failure in figures["good_failed"][:10] + figures["hostile_wrong"][:10]:
        print("  ", failure)
    sys.exit(1 if figures["good_failed"] or figures["hostile_wrong"] else 0)


if __name__ == "__main__":
    main()
