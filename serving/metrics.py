"""Prometheus metrics in the text exposition format, with TF Serving's names.

Served at TF Serving's monitoring path, `/monitoring/prometheus/metrics`
(the real server needs `--monitoring_config_file=serving/monitoring.config`).
TF Serving's metric names start with ':' (its '/' separators become ':').
"""
from __future__ import annotations

import bisect
import threading
from typing import Iterable, Sequence

# Latency buckets in microseconds, as TF Serving's request_latency histogram.
LATENCY_BUCKETS_US = tuple(10.0 * 2 ** i for i in range(21))  # 10us .. ~10s
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


class Counter:
    """A monotonically increasing counter with labels."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        with self._lock:
            for labels, value in sorted(self._values.items()):
                yield f"{self.name}{_labels(self.label_names, labels)} {value:g}"


class Gauge(Counter):
    """A value that can go up and down."""

    def set(self, *labels: str, value: float) -> None:
        with self._lock:
            self._values[labels] = value

    def render(self) -> Iterable[str]:
        lines = list(super().render())
        lines[1] = f"# TYPE {self.name} gauge"
        return lines


class Histogram:
    """Cumulative-bucket histogram with labels."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.buckets = tuple(buckets)
        self._data: dict[tuple, list] = {}  # labels -> [counts per bucket + inf, sum]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            data = self._data.setdefault(labels, [[0] * (len(self.buckets) + 1), 0.0])
            data[0][bisect.bisect_left(self.buckets, value)] += 1
            data[1] += value

    def count(self, *labels: str) -> int:
        with self._lock:
            return sum(self._data[labels][0]) if labels in self._data else 0

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            for labels, (counts, total) in sorted(self._data.items()):
                running = 0
                for bound, count in zip(list(self.buckets) + [float("inf")], counts):
                    running += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    yield f"{self.name}_bucket{_labels(self.label_names + ('le',), labels + (le,))} {running}"
                yield f"{self.name}_sum{_labels(self.label_names, labels)} {total:g}"
                yield f"{self.name}_count{_labels(self.label_names, labels)} {running}"


class Metrics:
    """The server's metrics (one instance per server)."""

    def __init__(self):
        self.request_count = Counter(":tensorflow:serving:request_count",
                                     "The total number of requests.", ("model_name", "status"))
        self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                         "Distribution of wall time (in microseconds) for requests.",
                                         ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US)
        self.runtime_latency = Histogram(":tensorflow:serving:runtime_latency",
                                         "Distribution of wall time (in microseconds) for the model runtime.",
                                         ("model_name", "API", "runtime"), LATENCY_BUCKETS_US)
        self.batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                    "Tracks the batch size distribution on processing.",
                                    ("model_name", "signature"), BATCH_SIZE_BUCKETS)
        self.load_attempts = Counter(":tensorflow:cc:saved_model:load_attempt_count",
                                     "The number of times a SavedModel was attempted to load.",
                                     ("model_path", "status"))
        self.available_versions = Gauge(":tensorflow:serving:model_versions_available",
                                        "Number of AVAILABLE versions per model.", ("model_name",))
        self.http_responses = Counter(":tensorflow:serving:http_response_count",
                                      "REST responses by HTTP status code.", ("code",))

    def render(self) -> str:
        parts = [self.request_count, self.request_latency, self.runtime_latency, self.batch_size,
                 self.load_attempts, self.available_versions, self.http_responses]
        return "\n".join(line for metric in parts for line in metric.render()) + "\n"
