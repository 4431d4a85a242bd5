"""The REST API's HTTP transport: a threaded HTTP/1.1 server with bounds.

* At most `rest_max_connections` connections are open at once (each holds a
  thread); one more is answered 503 `{"error"}` and closed at once.
* A connection silent for `rest_idle_timeout_seconds` is closed.
* Every answer is JSON `{"error": ...}`, also for HTTP-level errors (an
  unsupported method is 405, a malformed request line or HTTP version 400,
  a request line over 64 KiB 414), never HTML, and never a traceback.
* The access log escapes control characters; a client that disconnects early
  is logged at DEBUG, without a traceback.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.server.rest import RestApi

log = logging.getLogger("serving.access")
_DRAIN_LIMIT = 64 << 20  # an oversized body up to this size is read and dropped (keeps the connection sane)
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def printable(text: str, limit: int = 300) -> str:
    """`text` for a log line: control and non-ASCII characters escaped, cut to `limit`."""
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "gpt_keras-serving"
    api: RestApi
    max_request_bytes: int

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without TCP_NODELAY, Nagle's
        # algorithm + the client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECTS as err:  # the client went away: nothing to answer
            log.debug("REST client %s disconnected: %s", self.client_address[0], type(err).__name__)

    def _reply(self, status: int, payload: Any, started: float, headers: dict | None = None) -> None:
        if isinstance(payload, str):
            data, ctype = payload.encode("utf-8"), "text/plain; version=0.0.4"
        else:
            data, ctype = json.dumps(payload).encode("utf-8"), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except _DISCONNECTS:
            self.close_connection = True
            log.debug("REST client disconnected before the answer")
        self.api.core.metrics.http_responses.labels(str(status)).inc()
        # A request line that failed to parse leaves `command`/`path` unset (or None).
        method, path = getattr(self, "command", None) or "-", getattr(self, "path", None) or "-"
        log.info("REST %s %s %d %.1fms %dB", printable(str(method)), printable(str(path)), status,
                 (time.monotonic() - started) * 1e3, len(data))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """HTTP-level errors (bad request line, unsupported method, ...) as JSON."""
        self.close_connection = True
        headers = {"Connection": "close"}
        if code == HTTPStatus.NOT_IMPLEMENTED:  # an unsupported method: the client's error, not the server's
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} is not allowed; use GET or POST"
            headers["Allow"] = "GET, POST"
        elif code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:  # "HTTP/2.0" on a 1.1 socket: a bad request, not a 5xx
            code, message = HTTPStatus.BAD_REQUEST, f"{message}; this server speaks HTTP/1.1"
        elif code == HTTPStatus.REQUEST_URI_TOO_LONG:
            message = "the request line is longer than 65536 bytes"
            self._drain_head()
        if not hasattr(self, "_started"):
            self._started = time.monotonic()
        if getattr(self, "request_version", "") in ("HTTP/0.9", "") or not hasattr(self, "command"):
            self.request_version = "HTTP/1.1"
        self._reply(int(code), {"error": printable(message or HTTPStatus(code).phrase)}, self._started, headers)

    def _drain_head(self) -> None:
        """Reads and drops the rest of an over-long request line and its
        headers (at most _DRAIN_LIMIT bytes), so that the client reads the
        answer instead of a connection reset for the bytes left unread."""
        seen, line = 0, self.raw_requestline
        try:
            while not line.endswith(b"\n") and line and seen < _DRAIN_LIMIT:  # the rest of the request line
                line = self.rfile.readline(1 << 16)
                seen += len(line)
            while line not in (b"\r\n", b"\n", b"") and seen < _DRAIN_LIMIT:  # the header lines
                line = self.rfile.readline(1 << 16)
                seen += len(line)
        except OSError:  # a timeout or a reset: answer what can be answered
            pass

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /path" alone: its answer would have no status line
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not supported; send "
                                                    "'METHOD /path HTTP/1.1'")
            return False
        return True

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
            self._reply(413, {"error": f"request body of {length} bytes exceeds the server's limit of "
                                       f"{self.max_request_bytes} bytes (--max_request_bytes)"}, self._started)
            return None
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        self._started = time.monotonic()
        body = self._body() if self.command == "POST" else b""
        if body is not None:
            self._reply(*self.api.handle(self.command, self.path, body), self._started)

    do_GET = do_POST = _dispatch  # noqa: N815 (http.server naming); other methods go through send_error

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - routed to `logging` in _reply
        pass


class RestServer(ThreadingHTTPServer):
    """Threaded HTTP server: one thread per connection, at most
    `max_connections` connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: bursts of new connections are not refused

    def __init__(self, api: RestApi, host: str, port: int, max_request_bytes: int, max_connections: int = 64,
                 idle_timeout: float = 30.0):
        handler = type("Handler", (_Handler,), {"api": api, "max_request_bytes": max_request_bytes,
                                                "timeout": idle_timeout})
        self._connections = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        super().__init__((host, port), handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            self._refuse(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def _refuse(self, request: socket.socket) -> None:
        body = json.dumps({"error": f"the server has {self.max_connections} open connections, its limit "
                                    "(--rest_max_connections); retry later"}).encode()
        try:
            request.settimeout(1.0)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        log.exception("REST connection from %s failed", client_address[0])
