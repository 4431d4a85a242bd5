"""Conformance suite: TF Serving's REST and gRPC APIs over real sockets.

The same client tests run against the local server (`python -m serving.server`,
a subprocess on ephemeral ports) and against the real `tensorflow_model_server`
when it is on PATH (skipped otherwise). Both get the same model config file
with explicit version policies, the same batching file and poll interval.
Served results are compared with the Python model on the same text.
"""
import base64
import concurrent.futures
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf

import gpt_keras as gk
from gpt_keras import export
from gpt_keras.generate import generate
from gpt_keras.preprocessor import pad
from gpt_keras.tokenizer import count_words, train_bpe
from helpers import tiny_config
from serving.clients import GrpcClient
from serving.clients import RestClient, RestError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = ["a great movie with a good plot", "an awful film with bad acting and a dull story",
          "the actors were good but the plot was thin", "what a wonderful story, I loved it!"] * 10
TEXTS = ["a great movie", "an awful film", "the plot was thin", "Ünïcode café 😀"]
LONG = " ".join(["the plot was thin and the acting was bad"] * 30)  # > n_ctx tokens, < the string limit
LABELS = {1: ["neg", "pos"], 2: ["negative", "positive"]}
MAX_STRING_BYTES = 16 << 10
MAX_REQUEST_BYTES = 1 << 20
LOAD_REQUESTS = int(os.environ.get("SERVING_LOAD_REQUESTS", "2000"))  # ~6 s on 2 cores


@dataclasses.dataclass
class Artifacts:
    base: str
    config: str
    batching: str
    tok: object
    models: dict  # "sentiment/1", "sentiment/2", "scores", "writer"


@dataclasses.dataclass
class Server:
    kind: str
    rest: RestClient
    grpc: GrpcClient
    rest_url: str
    log: str

    @property
    def local(self) -> bool:
        return self.kind == "local"


MODEL_CONFIG = """
model_config_list {{
  config {{ name: "sentiment" base_path: "{base}/sentiment" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "hot" base_path: "{base}/hot" model_platform: "tensorflow"
           model_version_policy {{ latest {{ num_versions: 1 }} }} }}
  config {{ name: "scores" base_path: "{base}/scores" model_platform: "tensorflow"
           model_version_policy {{ latest {{ num_versions: 1 }} }} }}
  config {{ name: "writer" base_path: "{base}/writer" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 }} }} }}
}}
"""


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> tuple[str, str]:
    """(base dir, model config path): written before any export, so that a
    server can start while the models are being exported."""
    base = str(tmp_path_factory.mktemp("models"))
    config_path = os.path.join(base, "models.config")
    with open(config_path, "w") as f:
        f.write(MODEL_CONFIG.format(base=base))
    return base, config_path


@pytest.fixture(scope="module")
def artifacts(model_base) -> Artifacts:
    base, config_path = model_base
    tok = train_bpe(count_words(CORPUS), num_merges=200)
    config = tiny_config(vocab_size=tok.n_vocab)
    models = {}
    for version in (1, 2):
        keras.utils.set_random_seed(10 + version)
        models[f"sentiment/{version}"] = model = gk.GPTTaskModel(gk.GPTBackbone(**config.to_dict()),
                                                                 "classification", num_labels=2)
        export.export_task_model(model, tok, base, "sentiment", label_names=LABELS[version])
    keras.utils.set_random_seed(3)
    models["scores"] = gk.GPTTaskModel(gk.GPTBackbone(**config.to_dict()), "regression")
    export.export_task_model(models["scores"], tok, base, "scores")
    keras.utils.set_random_seed(4)
    models["writer"] = gk.GPTLMModel(gk.GPTBackbone(**config.to_dict()))
    export.export_lm(models["writer"], tok, base, "writer", max_new_tokens=4)
    copy_version(os.path.join(base, "sentiment", "1"), os.path.join(base, "hot"), 1)
    return Artifacts(base, config_path, os.path.join(ROOT, "serving", "batching.config"), tok, models)


def copy_version(src: str, model_dir: str, version: int) -> None:
    """Copies a version directory atomically (a polling server never sees half of it)."""
    tmp = os.path.join(model_dir, f".incoming-{version}")
    shutil.copytree(src, tmp)
    os.rename(tmp, os.path.join(model_dir, str(version)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(kind: str, config: str, work: str) -> tuple[subprocess.Popen, int, int, str]:
    log = os.path.join(work, f"{kind}.log")
    common = [f"--model_config_file={config}", "--enable_batching",
              f"--batching_parameters_file={os.path.join(ROOT, 'serving', 'batching.config')}",
              "--file_system_poll_wait_seconds=1",
              f"--monitoring_config_file={os.path.join(ROOT, 'serving', 'monitoring.config')}"]
    if kind == "local":
        port_file = os.path.join(work, "ports.json")
        grpc_port = rest_port = 0  # the server picks free ports and writes them to port_file
        cmd = [sys.executable, "-m", "serving.server", "--port=0", "--rest_api_port=0", f"--port_file={port_file}",
               f"--max_string_bytes={MAX_STRING_BYTES}", f"--max_request_bytes={MAX_REQUEST_BYTES}"] + common
    else:
        binary = shutil.which("tensorflow_model_server")
        if binary is None:
            pytest.skip("tensorflow_model_server is not on PATH")
        grpc_port, rest_port = _free_port(), _free_port()
        cmd = [binary, f"--port={grpc_port}", f"--rest_api_port={rest_port}"] + common
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    return proc, grpc_port, rest_port, log


def _ports(kind: str, proc, work: str, log: str, grpc_port: int, rest_port: int) -> tuple[int, int]:
    if kind == "local":
        port_file = os.path.join(work, "ports.json")
        deadline = time.monotonic() + 180
        while not os.path.exists(port_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"local server did not start:\n{open(log).read()[-3000:]}")
            time.sleep(0.2)
        with open(port_file) as f:
            ports = json.load(f)
        grpc_port, rest_port = ports["grpc_port"], ports["rest_api_port"]
    return grpc_port, rest_port


def _wait_available(rest: RestClient, names, proc, log: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"models {sorted(pending)} not AVAILABLE:\n{open(log).read()[-3000:]}")
        for name in list(pending):
            try:
                if any(s["state"] == "AVAILABLE" for s in rest.status(name)["model_version_status"]):
                    pending.discard(name)
            except (RestError, OSError):
                pass
        time.sleep(0.3)


@pytest.fixture(scope="module", params=["local", "tensorflow_model_server"])
def server(request, model_base, tmp_path_factory):
    work = str(tmp_path_factory.mktemp(request.param))
    proc, grpc_port, rest_port, log = _start(request.param, model_base[1], work)
    grpc_client = None
    try:
        # Export while the server starts up; it picks the versions up by polling.
        request.getfixturevalue("artifacts")
        grpc_port, rest_port = _ports(request.param, proc, work, log, grpc_port, rest_port)
        rest_url = f"http://127.0.0.1:{rest_port}"
        rest, grpc_client = RestClient(rest_url, timeout=60), GrpcClient(f"127.0.0.1:{grpc_port}", timeout=60)
        _wait_available(rest, ["sentiment", "hot", "scores", "writer"], proc, log)
        yield Server(request.param, rest, grpc_client, rest_url, log)
    finally:
        if grpc_client is not None:
            grpc_client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def python_probabilities(model, tok, texts):
    c = model.backbone.config
    ids = tf.ragged.constant([tok.encode(t) for t in texts], tf.int32, ragged_rank=1)
    built = gk.build_inputs("classification", {"text": ids}, c.n_ctx, (c.start_id, c.delimiter_id, c.classify_id))
    logits = model(pad(built["token_ids"]), training=False)
    return tf.nn.softmax(logits).numpy(), built["truncated"].numpy()


def python_scores(model, tok, pairs):
    c = model.backbone.config
    fields = {k: tf.ragged.constant([tok.encode(p[i]) for p in pairs], tf.int32, ragged_rank=1)
              for i, k in enumerate(("text_a", "text_b"))}
    built = gk.build_inputs("regression", fields, c.n_ctx, (c.start_id, c.delimiter_id, c.classify_id))
    return model(pad(built["token_ids"]), training=False).numpy()


@pytest.fixture(scope="module")
def expected(artifacts):
    """Python-model results for TEXTS (+ LONG) per sentiment version."""
    texts = TEXTS + [LONG]
    return {v: python_probabilities(artifacts.models[f"sentiment/{v}"], artifacts.tok, texts) for v in (1, 2)}


def close(a, b):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ status / metadata


def test_model_status_rest_and_grpc(server):
    status = server.rest.status("sentiment")["model_version_status"]
    assert {(s["version"], s["state"]) for s in status} == {("1", "AVAILABLE"), ("2", "AVAILABLE")}
    assert all(s["status"]["error_code"] == "OK" for s in status)
    assert [s["version"] for s in server.rest.status("sentiment", version=1)["model_version_status"]] == ["1"]
    rows = server.grpc.status("sentiment")
    assert {(r["version"], r["state"]) for r in rows} == {(1, "AVAILABLE"), (2, "AVAILABLE")}
    assert [r["version"] for r in server.grpc.status("sentiment", version=2)] == [2]
    if server.local:  # TF Serving's GetModelStatus may not resolve labels (it can list every version)
        assert [s["version"] for s in server.rest.status("sentiment", label="canary")["model_version_status"]] == ["2"]
        assert [r["version"] for r in server.grpc.status("sentiment", label="stable")] == [1]


def test_metadata_rest_and_grpc(server):
    meta = server.rest.metadata("sentiment", version=1)
    assert meta["model_spec"]["name"] == "sentiment" and meta["model_spec"]["version"] == "1"
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert defs["serving_default"]["inputs"]["text"]["dtype"] == "DT_STRING"
    assert defs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert defs["classify"]["method_name"] == "tensorflow/serving/classify"
    assert set(defs["classify"]["outputs"]) == {"classes", "scores"}
    assert server.rest.metadata("sentiment")["model_spec"]["version"] == "2"  # latest by default
    version, signature_map = server.grpc.metadata("sentiment", label="stable")
    assert version == 1 and list(signature_map.signature_def["classify"].inputs) == ["inputs"]
    assert set(signature_map.signature_def["serving_default"].outputs) >= {"probabilities", "label"}


# ------------------------------------------------------------------ predict / classify / regress


def test_predict_rest_row_and_columnar_formats(server, expected):
    probabilities, _ = expected[2]
    rows = server.rest.predict("sentiment", instances=[{"text": t} for t in TEXTS])["predictions"]
    assert len(rows) == len(TEXTS)
    close([r["probabilities"] for r in rows], probabilities[:len(TEXTS)])
    assert [r["label"] for r in rows] == [LABELS[2][i] for i in probabilities[:len(TEXTS)].argmax(-1)]
    assert rows[0]["label_names"] == LABELS[2] and rows[0]["truncated"] is False
    bare = server.rest.predict("sentiment", instances=TEXTS)["predictions"]  # one input: bare values
    close([r["probabilities"] for r in bare], probabilities[:len(TEXTS)])
    columns = server.rest.predict("sentiment", inputs={"text": TEXTS})["outputs"]
    close(columns["probabilities"], probabilities[:len(TEXTS)])
    assert columns["label"] == [r["label"] for r in rows]
    b64 = [{"b64": base64.b64encode(t.encode()).decode()} for t in TEXTS]
    close(server.rest.predict("sentiment", inputs=b64)["outputs"]["probabilities"], probabilities[:len(TEXTS)])


def test_predict_grpc(server, expected):
    probabilities, _ = expected[2]
    response = server.grpc.predict_raw("sentiment", {"text": TEXTS}, output_filter=["probabilities", "label"])
    assert response.model_spec.version.value == 2 and response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"probabilities", "label"}
    close(tf.make_ndarray(response.outputs["probabilities"]), probabilities[:len(TEXTS)])


def test_classify_rest_and_grpc(server, expected):
    probabilities, _ = expected[1]
    results = server.rest.classify("sentiment", [{"text": t} for t in TEXTS], version=1)
    assert [[label for label, _ in r] for r in results] == [LABELS[1]] * len(TEXTS)
    close([[score for _, score in r] for r in results], probabilities[:len(TEXTS)])
    results = server.grpc.classify("sentiment", [{"text": t} for t in TEXTS], version=1)
    close([[score for _, score in r] for r in results], probabilities[:len(TEXTS)])
    with_context = server.grpc.classify("sentiment", [{}], context={"text": TEXTS[0]}, version=1)
    close([[s for _, s in with_context[0]]], probabilities[:1])


def test_regress_rest_and_grpc(server, artifacts):
    pairs = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3])]
    want = python_scores(artifacts.models["scores"], artifacts.tok, pairs)
    examples = [{"text_a": a, "text_b": b} for a, b in pairs]
    close(server.rest.regress("scores", examples), want)
    close(server.grpc.regress("scores", examples), want)
    close([r["score"] for r in server.rest.predict("scores", instances=examples)["predictions"]], want)


def test_generate_rest_and_grpc(server, artifacts):
    tok, backbone = artifacts.tok, artifacts.models["writer"].backbone
    prompts = ["a great movie", "the plot"]
    want = [tok.decode(ids) for ids in generate(backbone, [tok.encode(p) for p in prompts], 4, jit_compile=False)]
    rows = server.rest.predict("writer", instances=[{"prompt": p, "max_new_tokens": 4} for p in prompts])
    assert [r["text"] for r in rows["predictions"]] == want
    settings = {"prompt": prompts, "max_new_tokens": [4, 4], "temperature": [0.0, 0.0], "top_k": [0, 0],
                "top_p": [1.0, 1.0], "seed": [1, 2]}
    out = server.grpc.predict("writer", settings, signature_name="generate", dtypes={"seed": tf.int64})
    assert [t.decode() for t in out["text"]] == want


def test_scoring_signatures_rest_and_grpc(server, artifacts):
    """A served LM scores text as gpt_keras.scoring does, so zero-shot solvers can run against it."""
    from gpt_keras.scoring import LMScorer

    scorer = LMScorer(artifacts.models["writer"], artifacts.tok)
    texts = ["a great movie", "the plot was thin"]
    want = [s.total for s in scorer.score_texts(texts)]
    rows = server.rest.predict("writer", instances=[{"text": t} for t in texts], signature_name="score")
    close([r["logprob_sum"] for r in rows["predictions"]], want)
    contexts, continuations = ["a great", "the plot was"], [" movie", " thin"]
    want = [s.mean for s in scorer.score_continuations(contexts, continuations)]
    out = server.grpc.predict("writer", {"context": contexts, "continuation": continuations},
                              signature_name="score_continuation")
    close(out["logprob_mean"], want)
    assert list(out["num_tokens"]) == [len(artifacts.tok.encode(c)) for c in continuations]


def test_overlong_text_is_truncated_like_training(server, expected):
    probabilities, truncated = expected[2]
    row = server.rest.predict("sentiment", instances=[{"text": LONG}])["predictions"][0]
    assert row["truncated"] is True and truncated[-1]
    close(row["probabilities"], probabilities[-1])


# ------------------------------------------------------------------ versions, labels, hot loading


def test_version_and_label_addressing(server, expected):
    for version in (1, 2):
        for kwargs in ({"version": version}, {"label": "stable" if version == 1 else "canary"}):
            rows = server.rest.predict("sentiment", instances=TEXTS[:2], **kwargs)["predictions"]
            assert rows[0]["label_names"] == LABELS[version]
            close([r["probabilities"] for r in rows], expected[version][0][:2])
            response = server.grpc.predict_raw("sentiment", {"text": TEXTS[:2]}, **kwargs)
            assert response.model_spec.version.value == version
    assert server.rest.predict("sentiment", instances=TEXTS[:1])["predictions"][0]["label_names"] == LABELS[2]


def test_hot_loading_of_a_new_version(server, artifacts):
    hot = os.path.join(artifacts.base, "hot")
    old = max(int(v) for v in os.listdir(hot) if v.isdigit())
    copy_version(os.path.join(artifacts.base, "sentiment", "2"), hot, old + 1)
    deadline = time.monotonic() + 60
    while True:
        states = {s["version"]: s["state"] for s in server.rest.status("hot")["model_version_status"]}
        if states.get(str(old + 1)) == "AVAILABLE" and states.get(str(old)) in (None, "END"):
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.3)
    assert server.grpc.predict_raw("hot", {"text": TEXTS[:1]}).model_spec.version.value == old + 1
    assert server.rest.predict("hot", instances=TEXTS[:1])["predictions"][0]["label_names"] == LABELS[2]


# ------------------------------------------------------------------ bad input

BAD_REST = [  # (name, path, body, allowed HTTP statuses)
    ("malformed json", "/v1/models/sentiment:predict", b'{"instances": [', {400}),
    ("not an object", "/v1/models/sentiment:predict", b'[1, 2]', {400}),
    ("wrong top-level key", "/v1/models/sentiment:predict", b'{"instance": ["a"]}', {400}),
    ("wrong input key", "/v1/models/sentiment:predict", b'{"instances": [{"txt": "a"}]}', {400}),
    ("wrong type", "/v1/models/sentiment:predict", b'{"instances": [{"text": 5}]}', {400}),
    ("wrong nesting", "/v1/models/sentiment:predict", b'{"inputs": {"text": [["a", "b"], ["c"]]}}', {400}),
    ("empty instances", "/v1/models/sentiment:predict", b'{"instances": []}', {400}),
    ("both formats", "/v1/models/sentiment:predict", b'{"instances": ["a"], "inputs": ["a"]}', {400}),
    ("unknown model", "/v1/models/nope:predict", b'{"instances": ["a"]}', {404}),
    ("unknown version", "/v1/models/sentiment/versions/9:predict", b'{"instances": ["a"]}', {404}),
    ("unknown label", "/v1/models/sentiment/labels/beta:predict", b'{"instances": ["a"]}', {400, 404}),
    ("unknown signature", "/v1/models/sentiment:predict", b'{"signature_name": "x", "instances": ["a"]}', {400, 404}),
    ("classify on predict signature", "/v1/models/sentiment:classify",
     b'{"signature_name": "serving_default", "examples": [{"text": "a"}]}', {400}),
    ("classify missing feature", "/v1/models/sentiment:classify",
     b'{"signature_name": "classify", "examples": [{"txt": "a"}]}', {400}),
    ("unknown model status", "/v1/models/nope", None, {404}),
]


@pytest.mark.parametrize("name,path,body,statuses", BAD_REST, ids=[c[0] for c in BAD_REST])
def test_bad_rest_requests_get_tf_serving_errors(server, name, path, body, statuses):
    status, data = server.rest.raw("POST" if body is not None else "GET", path, body)
    assert status in statuses, (status, data)
    assert isinstance(json.loads(data).get("error"), str)


def test_local_limits_on_body_and_text(server):
    if not server.local:
        pytest.skip("--max_request_bytes/--max_string_bytes are local-server bounds")
    huge = json.dumps({"instances": ["word " * (MAX_REQUEST_BYTES // 5 + 10)]}).encode()
    status, data = server.rest.raw("POST", "/v1/models/sentiment:predict", huge)
    assert status == 413 and "max_request_bytes" in json.loads(data)["error"]
    long_text = json.dumps({"instances": ["x" * (MAX_STRING_BYTES + 1)]}).encode()
    status, data = server.rest.raw("POST", "/v1/models/sentiment:predict", long_text)
    assert status == 400 and "max_string_bytes" in json.loads(data)["error"]
    with pytest.raises(grpc.RpcError) as err:
        server.grpc.predict("sentiment", {"text": ["word " * (MAX_REQUEST_BYTES // 5 + 10)]})
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


BAD_GRPC = [  # (name, kwargs of predict_raw, allowed codes)
    ("unknown model", dict(name="nope", inputs={"text": ["a"]}), {grpc.StatusCode.NOT_FOUND}),
    ("unknown version", dict(name="sentiment", inputs={"text": ["a"]}, version=9), {grpc.StatusCode.NOT_FOUND}),
    ("wrong input key", dict(name="sentiment", inputs={"txt": ["a"]}), {grpc.StatusCode.INVALID_ARGUMENT}),
    ("wrong dtype", dict(name="sentiment", inputs={"text": [1.5]}), {grpc.StatusCode.INVALID_ARGUMENT}),
    ("wrong rank", dict(name="sentiment", inputs={"text": [["a"]]}), {grpc.StatusCode.INVALID_ARGUMENT}),
    ("unknown signature", dict(name="sentiment", inputs={"text": ["a"]}, signature_name="x"),
     {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT}),
]


@pytest.mark.parametrize("name,kwargs,codes", BAD_GRPC, ids=[c[0] for c in BAD_GRPC])
def test_bad_grpc_requests_get_status_codes(server, name, kwargs, codes):
    with pytest.raises(grpc.RpcError) as err:
        server.grpc.predict_raw(**kwargs)
    assert err.value.code() in codes, err.value


def test_server_keeps_serving_after_errors(server, expected):
    for _, path, body, _ in BAD_REST:
        server.rest.raw("POST" if body is not None else "GET", path, body)
    rows = server.rest.predict("sentiment", instances=TEXTS)["predictions"]
    close([r["probabilities"] for r in rows], expected[2][0][:len(TEXTS)])
    with pytest.raises(grpc.RpcError):
        server.grpc.status("nope")
    assert server.grpc.status("sentiment", version=2)[0]["state"] == "AVAILABLE"


def test_prometheus_metrics(server):
    server.rest.predict("sentiment", instances=TEXTS[:1])
    text = server.rest.metrics()
    assert ":tensorflow:serving:request_count" in text
    if server.local:
        assert ':tensorflow:serving:request_count{model_name="sentiment",status="OK"}' in text
        assert ":tensorflow:serving:request_latency_bucket" in text
        assert ":tensorflow:serving:batching_session:processed_batch_size_bucket" in text


# ------------------------------------------------------------------ load


def _load_test(server, expected, total: int, clients: int = 16) -> None:
    probabilities = expected[2][0]

    def one(i: int):
        text_id = i % len(TEXTS)
        kind = i % 8
        if kind == 5:  # bad REST: malformed JSON
            status, _ = server.rest.raw("POST", "/v1/models/sentiment:predict", b'{"instances": [')
            return None if status == 400 else f"{i}: malformed JSON got {status}"
        if kind == 6:  # bad REST: wrong type
            status, _ = server.rest.raw("POST", "/v1/models/sentiment:predict", b'{"instances": [3]}')
            return None if status == 400 else f"{i}: wrong type got {status}"
        if kind == 7:  # bad gRPC: unknown model
            try:
                server.grpc.predict("nope", {"text": ["a"]})
            except grpc.RpcError as err:
                return None if err.code() == grpc.StatusCode.NOT_FOUND else f"{i}: {err.code()}"
            return f"{i}: unknown model succeeded"
        try:
            if kind % 2:
                got = server.grpc.predict("sentiment", {"text": [TEXTS[text_id]]})["probabilities"][0]
            else:
                got = server.rest.predict("sentiment", instances=[TEXTS[text_id]])["predictions"][0]["probabilities"]
            close(got, probabilities[text_id])
        except Exception as err:  # noqa: BLE001 - collected and reported
            return f"{i}: good request failed: {err!r}"
        return None

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        failures = [f for f in pool.map(one, range(total)) if f]
    elapsed = time.monotonic() - start
    assert not failures, failures[:5]
    assert elapsed < 300, elapsed
    print(f"{server.kind}: {total} requests from {clients} clients in {elapsed:.1f}s ({total / elapsed:.0f}/s)")


def test_bounded_load_with_bad_requests_mixed_in(server, expected):
    _load_test(server, expected, LOAD_REQUESTS)


@pytest.mark.slow
def test_long_load_10000_requests_32_clients(server, expected):
    _load_test(server, expected, 10000, clients=32)


# ------------------------------------------------------------------ CLI


def test_client_cli(server):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "serving.clients", "--rest", server.rest_url, "--model_name",
                          "sentiment", "--label", "stable", "predict", TEXTS[0]], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["label_names"] == LABELS[1]
    out = subprocess.run([sys.executable, "-m", "serving.clients", "--rest", server.rest_url, "--model_name", "nope",
                          "status"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 1 and json.loads(out.stderr)["http_status"] == 404
