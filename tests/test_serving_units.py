"""Unit tests of the local server's parts: batching, configs, version
policies, JSON codec, metrics. The socket-level suite is test_serving.py."""
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.server import codec
from serving.server.batching import Batcher
from serving.server.config import (BatchingParameters, ConfigError, parse_batching_parameters, read_batching_parameters,
                            read_metrics_path, read_model_config)
from serving.server.errors import ServingError
from serving.server.manager import select_versions
from serving.server.metrics import Metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _double(calls):
    def run(inputs):
        calls.append(len(inputs["x"]))
        if np.any(inputs["x"] < 0):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative input")
        return {"y": inputs["x"] * 2}
    return run


def test_batcher_merges_concurrent_requests_and_splits_results():
    calls = []
    batcher = Batcher(_double(calls), BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000,
                                                         num_batch_threads=1))
    results = {}

    def client(i):
        results[i] = batcher({"x": np.full([2], i, np.float32)})["y"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert all(results[i].tolist() == [2 * i, 2 * i] for i in range(4))
    assert sum(calls) == 8 and len(calls) < 4  # merged into fewer model calls


def test_batcher_splits_large_requests_and_pads_to_allowed_sizes():
    calls = []
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1,
                                allowed_batch_sizes=[2, 4])
    batcher = Batcher(_double(calls), params)
    out = batcher({"x": np.arange(7, dtype=np.float32)})["y"]
    single = batcher({"x": np.ones([1], np.float32)})["y"]
    batcher.close()
    assert out.tolist() == [2.0 * i for i in range(7)] and single.tolist() == [2.0]
    assert calls == [4, 4, 2]  # 7 rows -> 4 + 3 (padded to 4); 1 row padded to 2


def test_a_bad_request_fails_alone_in_a_batch():
    calls = []
    batcher = Batcher(_double(calls), BatchingParameters(max_batch_size=16, batch_timeout_micros=300_000,
                                                         num_batch_threads=1))
    outcome = {}

    def client(i, value):
        try:
            outcome[i] = batcher({"x": np.array([value], np.float32)})["y"].tolist()
        except ServingError as err:
            outcome[i] = err.code

    threads = [threading.Thread(target=client, args=(i, -1.0 if i == 1 else float(i))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert outcome == {0: [0.0], 1: grpc.StatusCode.INVALID_ARGUMENT, 2: [4.0]}


def test_full_queue_is_unavailable():
    release = threading.Event()

    def slow(inputs):
        release.wait(5)
        return {"y": inputs["x"]}

    batcher = Batcher(slow, BatchingParameters(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1,
                                               num_batch_threads=1))
    threads = [threading.Thread(target=batcher, args=({"x": np.ones([1])},)) for _ in range(2)]
    for t in threads:  # the first runs (blocked), the second waits in the queue, which is then full
        t.start()
        time.sleep(0.3)
    with pytest.raises(ServingError) as err:
        batcher({"x": np.ones([1])})
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    release.set()
    for t in threads:
        t.join()
    batcher.close()


def test_shipped_configs_parse():
    config = read_model_config(os.path.join(ROOT, "serving", "models.config"))
    names = [m.name for m in config.model_config_list.config]
    assert names == ["sentiment", "gpt"] and dict(config.model_config_list.config[0].version_labels) == {
        "stable": 1, "canary": 2}
    params = read_batching_parameters(os.path.join(ROOT, "serving", "batching.config"))
    assert (params.max_batch_size, params.batch_timeout_micros, params.num_batch_threads) == (32, 2000, 1)
    assert read_metrics_path(os.path.join(ROOT, "serving", "monitoring.config")) == "/monitoring/prometheus/metrics"


def test_bad_configs_are_rejected(tmp_path):
    for text in ("model_config_list { config { name: 'a' } }",  # no base_path
                 "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
                 "model_config_list { config { nme: 'a' } }"):
        (tmp_path / "m.config").write_text(text)
        with pytest.raises(ConfigError):
            read_model_config(str(tmp_path / "m.config"))
    for text in ("max_batch_size { value: 0 }", "max_batch_sizes { value: 8 }", "max_batch_size { value: 8 } ???",
                 "max_batch_size { value: 8 } allowed_batch_sizes: 4"):
        with pytest.raises(ConfigError):
            parse_batching_parameters(text)
    params = parse_batching_parameters("max_batch_size { value: 8 }  # comment\nallowed_batch_sizes: 4\n"
                                       "allowed_batch_sizes: 8\npad_variable_length_inputs: true")
    assert params.allowed_batch_sizes == [4, 8]


@pytest.mark.parametrize("policy,expected", [
    ("", {5}), ("latest { num_versions: 2 }", {3, 5}), ("all {}", {1, 3, 5}),
    ("specific { versions: 1 versions: 4 }", {1})])
def test_version_policies(policy, expected):
    config = text_format.Parse(f"model_version_policy {{ {policy} }}" if policy else "",
                               model_server_config_pb2.ModelConfig())
    assert select_versions(config.model_version_policy, [1, 3, 5]) == expected


def test_json_codec_row_and_columnar():
    specs = {"text": tf.TensorSpec([None], tf.string), "n": tf.TensorSpec([None], tf.int32)}
    rows = codec.parse_instances([{"text": "a", "n": 1}, {"text": {"b64": "Yg=="}, "n": 2}], specs, 8)
    assert rows["text"].tolist() == [b"a", b"b"] and rows["n"].dtype == np.int32
    cols = codec.parse_columnar({"text": ["a"], "n": [3]}, specs, 8)
    assert cols["n"].tolist() == [3]
    for bad in ([], [{"text": "a"}], [{"text": 1, "n": 1}], [{"text": "a", "n": 1.5}], "x", [{"text": "a", "n": True}]):
        with pytest.raises(ServingError) as err:
            codec.parse_instances(bad, specs, 8)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    outputs = {"label": np.array([b"pos", b"neg"], object), "p": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32),
               "raw_bytes": np.array([b"\xff", b"a"], object)}
    formatted = codec.format_rows(outputs)
    assert formatted[0]["label"] == "pos" and formatted[1]["raw_bytes"] == {"b64": "YQ=="}
    assert codec.format_columns({"p": outputs["p"]}) == outputs["p"].tolist()


def test_examples_merge_context_like_tf_serving():
    serialized = codec.parse_examples({"context": {"text": "ctx", "k": 1}, "examples": [{"text": "own"}, {}]}, 8)
    parsed = tf.io.parse_example(serialized, {"text": tf.io.FixedLenFeature([], tf.string),
                                              "k": tf.io.FixedLenFeature([], tf.int64)})
    assert parsed["text"].numpy().tolist() == [b"own", b"ctx"] and parsed["k"].numpy().tolist() == [1, 1]


def test_metrics_render_prometheus_text():
    metrics = Metrics()
    metrics.request_count.labels("m", "OK").inc()
    metrics.request_latency.labels("m", "predict", "REST").observe(1500.0)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1.0' in text
    # prometheus_client writes labels sorted by name
    assert ':tensorflow:serving:request_latency_count{API="predict",entrypoint="REST",model_name="m"} 1.0' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text


def test_tensorflow_thread_flags():
    """TF Serving's --tensorflow_{intra,inter}_op_parallelism: 0 keeps TF's
    default; values are applied before TensorFlow runs an op; negatives fail."""
    import subprocess
    import sys

    from serving.server.cli import build_parser, set_tensorflow_threads

    args = build_parser().parse_args([])
    assert (args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism) == (0, 0)
    set_tensorflow_threads(0, 0)  # a no-op, also after TensorFlow has started
    with pytest.raises(ValueError, match=">= 0"):
        set_tensorflow_threads(-1, 0)
    code = ("from serving.server.cli import set_tensorflow_threads; set_tensorflow_threads(1, 2); "
            "import tensorflow as tf; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.stdout.split() == ["1", "2"], out.stderr[-2000:]
