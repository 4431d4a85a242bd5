"""REST front end with TF Serving's URLs, JSON shapes and error shapes.

    GET  /v1/models/NAME[/versions/N | /labels/L]            model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    row or columnar format
    POST /v1/models/NAME[/versions/N | /labels/L]:classify   tf.Example JSON
    POST /v1/models/NAME[/versions/N | /labels/L]:regress
    GET  /monitoring/prometheus/metrics                       Prometheus text

Errors: `{"error": "..."}` with TF Serving's HTTP status of the error code
(400 invalid argument / failed precondition, 404 not found, 503 unavailable,
504 deadline exceeded), and 413 for a body over `max_request_bytes` (HTTP's
own code for it). Any malformed request is a 400, never a 500. The HTTP
transport is serving/http_server.py.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.server import codec
from serving.server.core import ModelSpec, ServingCore
from serving.server.errors import ServingError, invalid
from serving.server.limits import Deadline

log = logging.getLogger(__name__)

_MODEL = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
_POST = re.compile(_MODEL + r":(?P<verb>predict|classify|regress)$")
_GET = re.compile(_MODEL + r"(?P<metadata>/metadata)?$")
_INT64_MAX = (1 << 63) - 1


def _proto_json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _version(text: str | None) -> int | None:
    """The URL's version as an int64 (checked before int(): Python refuses
    to convert more than 4,300 digits)."""
    if text is None:
        return None
    if len(text.lstrip("-")) > 19 or abs(int(text)) > _INT64_MAX:
        raise invalid(f"Failed to convert version: {text[:40]}{'...' if len(text) > 40 else ''} is not an int64")
    return int(text)


def _spec(match: re.Match, signature_name: str = "") -> ModelSpec:
    return ModelSpec(match.group("name"), _version(match.group("version")), match.group("label"), signature_name)


class RestApi:
    """Turns (method, path, body) into (HTTP status, JSON or text body)."""

    def __init__(self, core: ServingCore, metrics_path: str):
        self.core = core
        self.metrics_path = metrics_path

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON-able payload or metrics text); never raises."""
        try:
            return self._route(method, path.split("?", 1)[0], body)
        except ServingError as err:
            return err.http_status, {"error": err.message}
        except RecursionError:  # belt and braces: decoders recurse, depth is checked first
            return 400, {"error": "JSON Value: nested too deeply"}
        except Exception as err:  # noqa: BLE001 - a bug: answer, log, keep serving
            log.exception("internal error on %s %s", method, path[:200])
            return 500, {"error": f"internal error: {type(err).__name__}"}

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == self.metrics_path:
            return 200, self.core.metrics.render()
        if method == "GET" and (match := _GET.match(path)):
            spec = _spec(match)
            return 200, self.metadata(spec) if match.group("metadata") else self.status(spec)
        if method == "POST" and (match := _POST.match(path)):
            return 200, self.post(match, body)
        if path.startswith("/v1/"):
            raise invalid(f"Malformed request: {method} {path[:200]}")
        return 404, {"error": f"Not found: {method} {path[:200]}"}

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
        with self.core.track(match.group("name"), verb, "REST") as deadline:
            request = codec.parse_json(body)
            signature_name = request.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise invalid("'signature_name' must be a string")
            spec = _spec(match, signature_name)
            servable = self.core.servable(spec)  # resolved once: checked and run on the same version
            if verb == "predict":
                return self.predict(servable, spec, request, deadline)
            unknown = sorted(set(request) - {"signature_name", "context", "examples"})
            if unknown:
                raise invalid(f"unknown key(s) {unknown} in a {verb} request; expected 'examples' (+ 'context')")
            examples = codec.parse_examples(request, self.core.limits.max_request_rows)
            if verb == "classify":
                _, classes, scores = self.core.classify_on(servable, signature_name, examples, deadline)
                return {"results": _classify_results(classes, scores, len(examples))}
            _, values = self.core.regress_on(servable, signature_name, examples, deadline)
            return {"results": [float(v) for v in values]}

    def predict(self, servable, spec: ModelSpec, request: dict, deadline: Deadline) -> dict:
        unknown = sorted(set(request) - {"signature_name", "instances", "inputs"})
        if unknown:
            raise invalid(f"unknown key(s) {unknown}; a predict request has 'instances' or 'inputs' "
                          "(+ 'signature_name')")
        if ("instances" in request) == ("inputs" in request):
            raise invalid("Missing 'inputs' or 'instances' key" if "inputs" not in request else
                          "Request has both 'instances' and 'inputs'; use one format")
        specs = servable.signature(spec.signature_name).input_specs
        max_rows = self.core.limits.max_request_rows
        if "instances" in request:
            inputs = codec.parse_instances(request["instances"], specs, max_rows)
            _, outputs = self.core.predict_on(servable, spec.signature_name, inputs, deadline=deadline)
            return {"predictions": codec.format_rows(outputs)}
        inputs = codec.parse_columnar(request["inputs"], specs, max_rows)
        _, outputs = self.core.predict_on(servable, spec.signature_name, inputs, deadline=deadline)
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

