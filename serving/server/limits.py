"""Request bounds: sizes, rows, generation length, concurrency and deadlines.

Every bound is a server flag (docs/serving.md, "Limits"). A request over a
size bound fails INVALID_ARGUMENT (HTTP 400) with the flag's name; a request
that cannot start before its deadline fails DEADLINE_EXCEEDED (HTTP 504).
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Iterator

import grpc

from serving.server.errors import ServingError


@dataclasses.dataclass
class Limits:
    """Request bounds with safe defaults (documented in docs/serving.md)."""

    max_request_bytes: int = 4 << 20  # REST body / gRPC message
    max_string_bytes: int = 64 << 10  # each string element (a text, a serialized tf.Example)
    max_request_rows: int = 64  # rows per request: gpt1's generation cache is ~38 MB per row
    max_new_tokens: int = 256  # largest `max_new_tokens` a generation request may ask for
    max_concurrent_requests: int = 16  # model runs at once (both front ends); others wait
    request_timeout_seconds: float = 60.0  # a request that has not started by then fails
    rest_max_connections: int = 64  # open REST connections (each holds a thread)
    rest_idle_timeout_seconds: float = 30.0  # a silent REST connection is closed after this
    grpc_max_concurrent_rpcs: int = 64  # in-flight gRPC calls; more fail RESOURCE_EXHAUSTED

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"--{field.name} must be positive, got {getattr(self, field.name)}")

    @property
    def max_tensor_elements(self) -> int:
        """Elements one gRPC tensor may declare: no more than a body of
        `max_request_bytes` could carry, one byte each."""
        return self.max_request_bytes


class Deadline:
    """The time a request has left: the server's timeout, or the client's
    own deadline (gRPC) when that is sooner."""

    def __init__(self, seconds: float):
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def exceeded(self, what: str) -> ServingError:
        return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"{what}: the request deadline passed (--request_timeout_seconds or the "
                            "client's deadline)")


class Admission:
    """At most `limit` requests run the model at once; the others wait for a
    slot until their deadline."""

    def __init__(self, limit: int):
        self._slots = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def slot(self, deadline: Deadline) -> Iterator[None]:
        if not self._slots.acquire(timeout=deadline.remaining()):
            raise deadline.exceeded("waited for one of the server's --max_concurrent_requests slots")
        try:
            yield
        finally:
            self._slots.release()
