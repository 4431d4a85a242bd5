"""`ModelServer`: the local TF-Serving-compatible server as an object, REST
and gRPC front ends over one `ServingCore` (`python -m serving.server` runs it
from flags: `serving.server.cli`)."""
from __future__ import annotations

import logging
import threading

from serving.server.config import BatchingParameters
from serving.server.core import ServingCore
from serving.server.grpc_service import make_grpc_server
from serving.server.http_server import RestServer
from serving.server.limits import Limits
from serving.server.rest import RestApi

log = logging.getLogger(__name__)


class ModelServer:
    """REST + gRPC server over one `ServingCore`.

    `start()` loads the initial versions and binds both ports (0 = any free
    port; read `grpc_port` / `rest_port` afterwards); `stop()` shuts down."""

    def __init__(self, model_config, host: str = "127.0.0.1", grpc_port: int = 8500, rest_port: int = 8501,
                 batching: BatchingParameters | None = None, poll_seconds: float = 1.0, limits: Limits | None = None,
                 metrics_path: str = "/monitoring/prometheus/metrics", grpc_max_threads: int = 16,
                 enable_warmup: bool = True):
        self.host = host
        self.limits = limits or Limits()
        self.core = ServingCore(model_config, batching, poll_seconds, self.limits, enable_warmup=enable_warmup)
        self._requested_ports = (grpc_port, rest_port)
        self._metrics_path = metrics_path
        self._grpc_max_threads = grpc_max_threads
        self._grpc = None
        self._rest: RestServer | None = None
        self._rest_thread: threading.Thread | None = None
        self.grpc_port = self.rest_port = None

    def start(self) -> "ModelServer":
        self.core.start()
        grpc_port, rest_port = self._requested_ports
        if grpc_port >= 0:
            self._grpc, self.grpc_port = make_grpc_server(self.core, self.host, grpc_port, self._grpc_max_threads,
                                                          self.limits)
            self._grpc.start()
        if rest_port >= 0:
            self._rest = RestServer(RestApi(self.core, self._metrics_path), self.host, rest_port,
                                    self.limits.max_request_bytes, self.limits.rest_max_connections,
                                    self.limits.rest_idle_timeout_seconds)
            self.rest_port = self._rest.port
            self._rest_thread = threading.Thread(target=self._rest.serve_forever, name="rest", daemon=True)
            self._rest_thread.start()
        log.info("serving: gRPC %s:%s, REST %s:%s, models %s", self.host, self.grpc_port, self.host, self.rest_port,
                 self.core.manager.model_names())
        return self

    def stop(self) -> None:
        if self._rest:
            self._rest.shutdown()
            self._rest.server_close()
        if self._grpc:
            self._grpc.stop(grace=2).wait()
        self.core.stop()

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
