"""REST front end with TF Serving's URLs, JSON shapes and error shapes.

    GET  /v1/models/NAME[/versions/N | /labels/L]            model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    row or columnar format
    POST /v1/models/NAME[/versions/N | /labels/L]:classify   tf.Example JSON
    POST /v1/models/NAME[/versions/N | /labels/L]:regress
    GET  /monitoring/prometheus/metrics                       Prometheus text

Errors: `{"error": "..."}` with TF Serving's HTTP status of the error code
(400 invalid argument / failed precondition, 404 not found, 503 unavailable),
and 413 for a body over `max_request_bytes` (HTTP's own code for it).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import codec
from serving.core import ModelSpec, ServingCore
from serving.errors import ServingError, invalid

log = logging.getLogger("serving.access")

_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
_POST = re.compile(_MODEL + r":(?P<verb>predict|classify|regress)$")
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?$")
_DRAIN_LIMIT = 64 << 20  # an oversized body up to this size is read and dropped (keeps the connection sane)


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _spec(match: re.Match, signature_name: str = "") -> ModelSpec:
    version = match.group("version")
    return ModelSpec(match.group("name"), int(version) if version is not None else None, match.group("label"),
                     signature_name)


class RestApi:
    """Turns (method, path, body) into (HTTP status, JSON or text body)."""

    def __init__(self, core: ServingCore, metrics_path: str):
        self.core = core
        self.metrics_path = metrics_path

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        path = path.split("?", 1)[0]
        if method == "GET" and path == self.metrics_path:
            return 200, self.core.metrics.render()
        try:
            if method == "GET" and (match := _GET.match(path)):
                spec = _spec(match)
                return 200, self.metadata(spec) if match.group("metadata") else self.status(spec)
            if method == "POST" and (match := _POST.match(path)):
                return 200, self.post(match, body)
            if path.startswith("/v1/"):
                raise invalid(f"Malformed request: {method} {path}")
            return 404, {"error": f"Not found: {method} {path}"}
        except ServingError as err:
            return err.http_status, {"error": err.message}

    def status(self, spec: ModelSpec) -> dict:
        rows = self.core.manager.status(spec.name, spec.version, spec.label)
        return {"model_version_status": [
            {"version": str(r.version), "state": r.state,
             "status": {"error_code": r.error_code, "error_message": r.error_message}} for r in rows]}

    def metadata(self, spec: ModelSpec) -> dict:
        servable = self.core.servable(spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": _proto_json(signature_map)}}

    def post(self, match: re.Match, body: bytes) -> dict:
        verb = match.group("verb")
        with self.core.track(match.group("name"), verb, "REST"):
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise invalid(f"JSON Parse error: {err}") from None
            if not isinstance(request, dict):
                raise invalid("JSON Value: the request body must be a JSON object")
            signature_name = request.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise invalid("'signature_name' must be a string")
            spec = _spec(match, signature_name)
            if verb == "predict":
                return self.predict(spec, request)
            unknown = sorted(set(request) - {"signature_name", "context", "examples"})
            if unknown:
                raise invalid(f"unknown key(s) {unknown} in a {verb} request; expected 'examples' (+ 'context')")
            examples = codec.parse_examples(request)
            if verb == "classify":
                _, _, classes, scores = self.core.classify(spec, examples)
                return {"results": _classify_results(classes, scores, len(examples))}
            _, _, values = self.core.regress(spec, examples)
            return {"results": [float(v) for v in values]}

    def predict(self, spec: ModelSpec, request: dict) -> dict:
        unknown = sorted(set(request) - {"signature_name", "instances", "inputs"})
        if unknown:
            raise invalid(f"unknown key(s) {unknown}; a predict request has 'instances' or 'inputs' "
                          "(+ 'signature_name')")
        if ("instances" in request) == ("inputs" in request):
            raise invalid("Missing 'inputs' or 'instances' key" if "inputs" not in request else
                          "Request has both 'instances' and 'inputs'; use one format")
        specs = self.core.signature_input_specs(spec)
        if "instances" in request:
            inputs = codec.parse_instances(request["instances"], specs)
            _, _, outputs = self.core.predict(spec, inputs)
            return {"predictions": codec.format_rows(outputs)}
        inputs = codec.parse_columnar(request["inputs"], specs)
        _, _, outputs = self.core.predict(spec, inputs)
        return {"outputs": codec.format_columns(outputs)}


def _classify_results(classes, scores, batch: int) -> list:
    results = []
    for i in range(batch):
        labels = [] if classes is None else [c.decode("utf-8", "replace") for c in classes[i]]
        values = [] if scores is None else [float(s) for s in scores[i]]
        if classes is None:
            results.append([[str(k), v] for k, v in enumerate(values)])
        elif scores is None:
            results.append([[label] for label in labels])
        else:
            results.append([[label, v] for label, v in zip(labels, values)])
    return results


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "gpt_keras-serving"
    timeout = 300  # seconds an idle keep-alive connection holds its thread
    api: RestApi
    max_request_bytes: int

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without TCP_NODELAY, Nagle's
        # algorithm + the client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, payload: Any, started: float) -> None:
        if isinstance(payload, str):
            data, ctype = payload.encode("utf-8"), "text/plain; version=0.0.4"
        else:
            data, ctype = json.dumps(payload).encode("utf-8"), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.api.core.metrics.http_responses.inc(str(status))
        log.info("REST %s %s %d %.1fms %dB", self.command, self.path, status, (time.monotonic() - started) * 1e3,
                 len(data))

    def _body(self) -> bytes | None:
        """The request body, or None after replying with an error."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._reply(411, {"error": "chunked bodies are not supported; send Content-Length"}, self._started)
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._reply(400, {"error": "invalid Content-Length"}, self._started)
            return None
        if length > self.max_request_bytes:
            remaining = length if length <= _DRAIN_LIMIT else 0
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                remaining = remaining - len(chunk) if chunk else 0
            self.close_connection = True
            self._reply(413, {"error": f"request body of {self.headers.get('Content-Length')} bytes exceeds the "
                                       f"server's limit of {self.max_request_bytes} bytes (--max_request_bytes)"},
                        self._started)
            return None
        return self.rfile.read(length)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._started = time.monotonic()
        self._reply(*self.api.handle("GET", self.path, b""), self._started)

    def do_POST(self) -> None:  # noqa: N802
        self._started = time.monotonic()
        body = self._body()
        if body is not None:
            try:
                status, payload = self.api.handle("POST", self.path, body)
            except Exception as err:  # noqa: BLE001 - a bug must not kill the connection silently
                logging.getLogger(__name__).exception("internal error")
                status, payload = 500, {"error": f"internal error: {err}"}
            self._reply(status, payload, self._started)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - routed to `logging` in _reply
        pass


class RestServer(ThreadingHTTPServer):
    """Threaded HTTP server (one thread per connection)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: bursts of new connections are not refused

    def __init__(self, api: RestApi, host: str, port: int, max_request_bytes: int):
        handler = type("Handler", (_Handler,), {"api": api, "max_request_bytes": max_request_bytes})
        super().__init__((host, port), handler)

    @property
    def port(self) -> int:
        return self.server_address[1]
