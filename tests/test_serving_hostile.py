"""Adversarial suite for the local server (issue 15, "Server"), over real
sockets on 127.0.0.1: malformed input, unbounded allocations, the batching
queue, metric label cardinality, concurrency and deadlines, warm-up of every
signature, and HTTP hygiene. Each test names the item it covers.

The servers run in this process (`ModelServer` on ephemeral ports), so that a
test can hold their admission slots or watch their threads and memory.
"""
import json
import logging
import os
import socket
import threading
import time
import uuid

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

import gpt_keras as gk
from gpt_keras import export
from gpt_keras.tokenizer import count_words, train_bpe
from helpers import tiny_config
from serving.clients import GrpcClient, RestClient
from serving.server.batching import Batcher
from serving.server.config import BatchingParameters, model_config_from_flags, read_model_config
from serving.server.errors import ServingError
from serving.server.limits import Admission, Deadline, Limits
from serving.server.model_server import ModelServer

CORPUS = ["a great movie with a good plot", "an awful film with bad acting and a dull story",
          "the plot was thin but the actors were good"] * 10
MAX_ROWS = 8
MAX_NEW_TOKENS = 4


def export_tiny_models(base: str) -> str:
    """A tiny classifier (`sentiment`) and LM (`writer`) under `base`; returns
    a ModelServerConfig file serving both."""
    tok = train_bpe(count_words(CORPUS), num_merges=100)
    config = tiny_config(vocab_size=tok.n_vocab)
    keras.utils.set_random_seed(7)
    task = gk.GPTTaskModel(gk.GPTBackbone(**config.to_dict()), "classification", num_labels=2)
    export.export_task_model(task, tok, base, "sentiment", label_names=["neg", "pos"])
    keras.utils.set_random_seed(8)
    export.export_lm(gk.GPTLMModel(gk.GPTBackbone(**config.to_dict())), tok, base, "writer",
                     max_new_tokens=MAX_NEW_TOKENS)
    path = os.path.join(base, "models.config")
    with open(path, "w") as f:
        f.write(f'model_config_list {{ config {{ name: "sentiment" base_path: "{base}/sentiment" }} '
                f'config {{ name: "writer" base_path: "{base}/writer" }} }}')
    return path


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    return read_model_config(export_tiny_models(str(tmp_path_factory.mktemp("hostile"))))


LIMITS = dict(max_request_rows=MAX_ROWS, max_new_tokens=MAX_NEW_TOKENS, max_concurrent_requests=2,
              request_timeout_seconds=1.0, rest_max_connections=6, rest_idle_timeout_seconds=1.0,
              grpc_max_concurrent_rpcs=3)


@pytest.fixture(scope="module")
def server(model_config):
    """Batching off; small limits."""
    with ModelServer(model_config, grpc_port=0, rest_port=0, poll_seconds=0, limits=Limits(**LIMITS)) as srv:
        srv.rest = RestClient(f"http://127.0.0.1:{srv.rest_port}", timeout=30)
        srv.grpc = GrpcClient(f"127.0.0.1:{srv.grpc_port}", timeout=30)
        yield srv
        srv.grpc.close()


@pytest.fixture(scope="module")
def batching_server(model_config):
    """Batching on with a queue of 2 x 2 = 4 rows, fewer than MAX_ROWS."""
    batching = BatchingParameters(max_batch_size=2, max_enqueued_batches=2, batch_timeout_micros=0)
    with ModelServer(model_config, grpc_port=-1, rest_port=0, poll_seconds=0, limits=Limits(**LIMITS),
                     batching=batching) as srv:
        srv.rest = RestClient(f"http://127.0.0.1:{srv.rest_port}", timeout=30)
        yield srv


def post(srv, path: str, body: bytes | str) -> tuple[int, dict]:
    status, data = srv.rest.raw("POST", path, body.encode("utf-8", "surrogatepass") if isinstance(body, str)
                                else body)
    return status, json.loads(data)


def raw_http(srv, request: bytes, timeout: float = 10.0) -> bytes:
    """Sends raw bytes on a fresh connection; returns everything until the server closes."""
    with socket.create_connection(("127.0.0.1", srv.rest_port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def assert_still_serves(srv) -> None:
    rows = srv.rest.predict("sentiment", instances=["a great movie"])["predictions"]
    assert rows[0]["label"] in ("neg", "pos")


# ------------------------------------------------------------------ 1. malformed input is 400


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_item1_deeply_nested_json_is_400(server, depth):
    status, body = post(server, "/v1/models/sentiment:predict", '{"instances": ' + "[" * depth + "]" * depth + "}")
    assert status == 400 and "nested" in body["error"]
    assert_still_serves(server)


@pytest.mark.parametrize("body", [
    '{"instances": [' + "9" * 5000 + "]}",  # over Python's 4,300-digit conversion limit
    '{"signature_name": "serving_default", "instances": [{"prompt": "a", "max_new_tokens": ' + "9" * 1000 + "}]}",
], ids=["5000-digit-json-int", "1000-digit-int-input"])
def test_item1_huge_integers_are_400(server, body):
    model = "writer" if "prompt" in body else "sentiment"
    status, reply = post(server, f"/v1/models/{model}:predict", body)
    assert status == 400 and reply["error"]


def test_item1_huge_integer_feature_in_classify_is_400(server):
    status, reply = post(server, "/v1/models/sentiment:classify",
                         '{"signature_name": "classify", "examples": [{"text": "a", "n": ' + "9" * 100 + "}]}")
    assert status == 400 and "int64" in reply["error"]


@pytest.mark.parametrize("path,body", [
    ("/v1/models/sentiment:predict", '{"instances": ["\\ud800"]}'),
    ("/v1/models/sentiment:predict", '{"inputs": {"text": ["ok", "\\udfff x"]}}'),
    ("/v1/models/sentiment:classify", '{"signature_name": "classify", "examples": [{"text": "\\ud800"}]}'),
], ids=["instances", "columnar", "examples"])
def test_item1_lone_surrogates_are_400(server, path, body):
    status, reply = post(server, path, body)
    assert status == 400 and "surrogate" in reply["error"]


def test_item1_version_of_5000_digits_is_400_for_post_and_get(server):
    version = "7" * 5000
    status, reply = post(server, f"/v1/models/sentiment/versions/{version}:predict", '{"instances": ["a"]}')
    assert status == 400 and "version" in reply["error"]
    for suffix in ("", "/metadata"):  # GET used to drop the connection
        status, data = server.rest.raw("GET", f"/v1/models/sentiment/versions/{version}{suffix}")
        assert status == 400 and "version" in json.loads(data)["error"]
    assert_still_serves(server)


# ------------------------------------------------------------------ 2. bounded allocations


@pytest.mark.parametrize("payload", [
    {"instances": ["a"] * (MAX_ROWS + 1)},
    {"inputs": {"text": ["a"] * (MAX_ROWS + 1)}},
], ids=["instances", "columnar"])
def test_item2_rows_per_request_are_capped(server, payload):
    status, reply = post(server, "/v1/models/sentiment:predict", json.dumps(payload))
    assert status == 400 and "--max_request_rows" in reply["error"]
    status, reply = post(server, "/v1/models/sentiment:predict", json.dumps({"instances": ["a"] * MAX_ROWS}))
    assert status == 200 and len(reply["predictions"]) == MAX_ROWS


def test_item2_classify_rows_are_capped_rest_and_grpc(server):
    examples = [{"text": "a"}] * (MAX_ROWS + 1)
    status, reply = post(server, "/v1/models/sentiment:classify",
                         json.dumps({"signature_name": "classify", "examples": examples}))
    assert status == 400 and "--max_request_rows" in reply["error"]
    with pytest.raises(grpc.RpcError) as err:
        server.grpc.classify("sentiment", examples)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_request_rows" in err.value.details()


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize("dims", [[20_000_000], [1, 20_000_000]])
def test_item2_grpc_tensor_declaring_millions_of_strings_is_refused_unread(server, dims):
    """A few bytes declaring 20M strings (TF broadcasts the last value)."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a"],
                                   tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                       dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]))
    assert len(proto.SerializeToString()) < 20
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment"
    request.inputs["text"].CopyFrom(proto)
    before, started = _rss_bytes(), time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        server.grpc.prediction.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_request_rows" in err.value.details() or "elements" in err.value.details()
    assert time.monotonic() - started < 1.0
    assert _rss_bytes() - before < 50 << 20  # materialising 20M strings costs > 160 MB


def test_item2_generation_length_is_capped(server):
    row = {"prompt": "a great", "max_new_tokens": MAX_NEW_TOKENS + 1}
    status, reply = post(server, "/v1/models/writer:predict", json.dumps({"instances": [row]}))
    assert status == 400 and "--max_new_tokens" in reply["error"]
    row["max_new_tokens"] = MAX_NEW_TOKENS
    status, reply = post(server, "/v1/models/writer:predict", json.dumps({"instances": [row]}))
    assert status == 200 and isinstance(reply["predictions"][0]["text"], str)


# ------------------------------------------------------------------ 3. larger than the batching queue


def test_item3_request_larger_than_the_whole_queue_is_400_not_503(batching_server):
    rows = ["a"] * 5  # queue holds 4 rows; within max_request_rows
    status, reply = post(batching_server, "/v1/models/sentiment:predict", json.dumps({"instances": rows}))
    assert status == 400 and "max_enqueued_batches" in reply["error"]
    status, reply = post(batching_server, "/v1/models/sentiment:predict", json.dumps({"instances": rows[:4]}))
    assert status == 200 and len(reply["predictions"]) == 4


# ------------------------------------------------------------------ 4. bounded metric labels


def test_item4_unknown_model_names_create_no_metric_series(server):
    before = server.rest.metrics()
    names = [f"nope-{uuid.uuid4().hex}" for _ in range(20)]
    for name in names:
        assert server.rest.raw("POST", f"/v1/models/{name}:predict", b'{"instances": ["a"]}')[0] == 404
        with pytest.raises(grpc.RpcError):
            server.grpc.predict(name, {"text": ["a"]})
    server.rest.predict("sentiment", instances=["a"])
    after = server.rest.metrics()
    assert not any(name in after for name in names)
    series = lambda text: {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}
    added = series(after) - series(before)
    assert all('model_name="sentiment"' in s or "code=" in s for s in added), sorted(added)[:5]
    assert ':tensorflow:serving:request_count{model_name="sentiment",status="OK"}' in after


# ------------------------------------------------------------------ 5. concurrency and deadlines


def test_item5_rest_connections_are_capped_and_idle_ones_closed(server):
    server.rest.close()  # its keep-alive connection would hold one of the slots
    time.sleep(0.2)
    threads_before = threading.active_count()
    stalled = [socket.create_connection(("127.0.0.1", server.rest_port)) for _ in range(LIMITS["rest_max_connections"])]
    try:
        time.sleep(0.3)
        status, reply = status_and_json(raw_http(server, b"GET /v1/models/sentiment HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 503 and "--rest_max_connections" in reply["error"]
        assert threading.active_count() - threads_before <= LIMITS["rest_max_connections"]
        for sock in stalled:  # the idle timeout (1 s) closes them
            sock.settimeout(10)
            assert sock.recv(1) == b""
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(0.3)
    assert_still_serves(server)


def test_item5_requests_wait_for_a_slot_until_their_deadline(server):
    admission = server.core.admission
    held = [admission.slot(Deadline(5)) for _ in range(LIMITS["max_concurrent_requests"])]
    for slot in held:
        slot.__enter__()
    try:
        started = time.monotonic()
        status, reply = post(server, "/v1/models/sentiment:predict", '{"instances": ["a"]}')
        assert status == 504 and "--max_concurrent_requests" in reply["error"]
        assert 0.9 <= time.monotonic() - started < 5
        with pytest.raises(grpc.RpcError) as err:
            server.grpc.predict("sentiment", {"text": ["a"]})
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert_still_serves(server)


def test_item5_grpc_limits_in_flight_calls(server):
    admission = server.core.admission
    held = [admission.slot(Deadline(5)) for _ in range(LIMITS["max_concurrent_requests"])]
    for slot in held:
        slot.__enter__()
    codes = []

    def call():
        try:
            server.grpc.predict("sentiment", {"text": ["a"]})
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.append(err.code())

    try:
        threads = [threading.Thread(target=call) for _ in range(LIMITS["grpc_max_concurrent_rpcs"] + 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


def test_item5_queued_batch_task_is_withdrawn_at_its_deadline():
    release = threading.Event()

    def slow(inputs):
        release.wait(5)
        return {"y": inputs["x"]}

    batcher = Batcher(slow, BatchingParameters(max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1))
    first = threading.Thread(target=batcher, args=({"x": np.ones([1])},))
    first.start()
    time.sleep(0.2)
    with pytest.raises(ServingError) as err:
        batcher({"x": np.ones([1])}, Deadline(0.3))
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    release.set()
    first.join()
    assert batcher({"x": np.ones([1])}, Deadline(5))["y"].tolist() == [1.0]
    batcher.close()


def test_item5_admission_unit():
    admission = Admission(1)
    with admission.slot(Deadline(1)):
        with pytest.raises(ServingError) as err:
            with admission.slot(Deadline(0.1)):
                pass
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with admission.slot(Deadline(0.1)):
        pass


# ------------------------------------------------------------------ 6. warm-up of every signature


def test_item6_every_signature_is_warmed_up_on_load(model_config, monkeypatch, tmp_path):
    from serving.server import servable as servable_module

    warmed = []
    original = servable_module.Signature.run

    def spy(self, inputs, deadline=None):
        warmed.append(self.key)
        return original(self, inputs, deadline)

    monkeypatch.setattr(servable_module.Signature, "run", spy)
    writer = [m for m in model_config.model_config_list.config if m.name == "writer"][0]
    with ModelServer(model_config_from_flags("writer", writer.base_path), grpc_port=-1, rest_port=-1,
                     poll_seconds=0) as srv:
        assert srv.core.manager.get("writer") is not None
    assert {"serving_default", "generate"} <= set(warmed)  # the export's warm-up file has serving_default only


# ------------------------------------------------------------------ 8. hygiene


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "FOO"])
def test_item8_other_methods_get_json_405(server, method):
    status, reply = status_and_json(raw_http(server, f"{method} /v1/models/sentiment HTTP/1.1\r\nHost: x\r\n"
                                                      "Content-Length: 0\r\n\r\n".encode()))
    assert status == 405 and method in reply["error"]


def test_item8_malformed_request_line_gets_json(server):
    status, reply = status_and_json(raw_http(server, b"GET /a b c d\r\n\r\n"))
    assert status == 400 and reply["error"]


@pytest.mark.parametrize("request_line,status", [
    (b"GET /a b c d", 400),                                  # not a version: no path is parsed
    (b"GET /v1/models/sentiment HTTP/2.0", 400),             # a version this socket does not speak
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello on the plain port
    (b"GET /" + b"x" * 70_000 + b" HTTP/1.1", 414),          # over http.server's 64 KiB line limit
    (b"GET  HTTP/1.1", 400),                                 # no path: HTTP/0.9, whose answer has no status line
], ids=["no_version", "http2", "tls_hello", "overlong", "http09"])
def test_item8_bad_request_lines_get_json_one_log_line_and_no_traceback(server, capfd, caplog, request_line,
                                                                       status):
    caplog.set_level(logging.INFO, logger="serving.access")
    got, reply = status_and_json(raw_http(server, request_line + b"\r\nHost: x\r\n\r\n"))
    time.sleep(0.2)  # the access log line is written after the answer
    assert got == status and reply["error"]
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if r.name == "serving.access" and f" {status} " in r.getMessage()]) == 1
    assert_still_serves(server)


def test_item8_grpc_unknown_dtype_is_invalid_argument_without_traceback(server, capfd, caplog):
    caplog.set_level(logging.INFO, logger="serving.access")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "sentiment"
    request.inputs["text"].CopyFrom(tensor_pb2.TensorProto(
        dtype=9999, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(
            size=1)])))
    with pytest.raises(grpc.RpcError) as err:
        server.grpc.prediction.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "9999" in err.value.details() and "string" in err.value.details()
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_item8_control_characters_in_urls_are_escaped_in_the_log(server, caplog):
    caplog.set_level(logging.INFO, logger="serving.access")
    raw_http(server, b"GET /v1/models/\x1b[31mred\x07 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    messages = [r.getMessage() for r in caplog.records if r.name == "serving.access"]
    assert any("\\x1b[31mred\\x07" in m for m in messages), messages
    assert not any("\x1b" in m or "\x07" in m for m in messages)


def test_item8_early_disconnects_leave_no_traceback(server, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="serving.access")
    for _ in range(20):  # ask for the metrics page and reset the connection before the answer
        sock = socket.create_connection(("127.0.0.1", server.rest_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(b"GET /monitoring/prometheus/metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
        sock.close()
    time.sleep(0.5)
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert_still_serves(server)


def test_item8_closed_batcher_runs_the_request_instead_of_503():
    batcher = Batcher(lambda inputs: {"y": inputs["x"] * 2}, BatchingParameters(num_batch_threads=1))
    batcher.close()  # a version swap closed it while a request was on its way
    assert batcher({"x": np.ones([2])})["y"].tolist() == [2.0, 2.0]


def test_item8_rest_resolves_the_model_version_once(server, monkeypatch):
    calls = []
    original = server.core.manager.get

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(server.core.manager, "get", counting)
    server.rest.predict("sentiment", instances=["a"])
    server.rest.classify("sentiment", [{"text": "a"}])
    assert len(calls) == 2  # one lookup per request
