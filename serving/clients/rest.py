"""Client of TF Serving's REST API (works against `tensorflow_model_server`
and `serving.server` alike). Standard library only; one keep-alive
connection per thread.

    client = RestClient("http://127.0.0.1:8501")
    client.predict("sentiment", instances=[{"text": "A great movie"}])["predictions"]
    client.classify("sentiment", [{"text": "A great movie"}])   # [[["pos", 0.9], ["neg", 0.1]]]
"""
from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any, Sequence


class RestError(Exception):
    """A non-200 answer: `status` (HTTP) and `message` (the `error` field)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def model_path(name: str, version: int | None = None, label: str | None = None) -> str:
    """`/v1/models/NAME[/versions/N | /labels/L]`."""
    if version is not None and label:
        raise ValueError("pass a version or a label, not both")
    path = f"/v1/models/{urllib.parse.quote(name, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label:
        path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path


class RestClient:
    """TF Serving REST client. Every call raises `RestError` on an error reply."""

    def __init__(self, url: str = "http://127.0.0.1:8501", timeout: float = 60.0):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def raw(self, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, bytes]:
        """One request -> (HTTP status, body bytes); reconnects once if the
        kept-alive connection was closed by the server."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        """JSON request -> JSON response; raises `RestError` unless HTTP 200."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        status, data = self.raw(method, path, body)
        try:
            result = json.loads(data) if data else {}
        except json.JSONDecodeError:
            result = {"error": data.decode("utf-8", "replace")}
        if status != 200:
            message = result.get("error", result) if isinstance(result, dict) else result
            raise RestError(status, str(message))
        return result

    # ------------------------------------------------------------------ API

    def status(self, name: str, version: int | None = None, label: str | None = None) -> dict:
        """GET /v1/models/NAME[...]: {"model_version_status": [...]}."""
        return self.call("GET", model_path(name, version, label))

    def metadata(self, name: str, version: int | None = None, label: str | None = None) -> dict:
        """GET .../metadata: {"model_spec": ..., "metadata": {"signature_def": ...}}."""
        return self.call("GET", model_path(name, version, label) + "/metadata")

    def predict(self, name: str, instances: Sequence | None = None, inputs: Any = None,
                signature_name: str | None = None, version: int | None = None, label: str | None = None) -> dict:
        """POST :predict with `instances` (row format) or `inputs` (columnar).
        Returns the response: {"predictions": ...} or {"outputs": ...}."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar format)")
        payload: dict[str, Any] = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature_name:
            payload["signature_name"] = signature_name
        return self.call("POST", model_path(name, version, label) + ":predict", payload)

    def _examples(self, verb: str, name: str, examples: Sequence[dict], context: dict | None,
                  signature_name: str, version: int | None, label: str | None) -> list:
        payload: dict[str, Any] = {"signature_name": signature_name, "examples": list(examples)}
        if context is not None:
            payload["context"] = context
        return self.call("POST", model_path(name, version, label) + f":{verb}", payload)["results"]

    def classify(self, name: str, examples: Sequence[dict], context: dict | None = None,
                 signature_name: str = "classify", version: int | None = None, label: str | None = None) -> list:
        """POST :classify -> per example a list of [label, score]."""
        return self._examples("classify", name, examples, context, signature_name, version, label)

    def regress(self, name: str, examples: Sequence[dict], context: dict | None = None,
                signature_name: str = "regress", version: int | None = None, label: str | None = None) -> list:
        """POST :regress -> one float per example."""
        return self._examples("regress", name, examples, context, signature_name, version, label)

    def metrics(self, path: str = "/monitoring/prometheus/metrics") -> str:
        """The Prometheus text exposition."""
        status, data = self.raw("GET", path)
        if status != 200:
            raise RestError(status, data.decode("utf-8", "replace"))
        return data.decode("utf-8")
