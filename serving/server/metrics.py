"""Server metrics through `prometheus_client`, with TF Serving's names.

Served at TF Serving's monitoring path, `/monitoring/prometheus/metrics`
(the real server needs `--monitoring_config_file=serving/monitoring.config`).
TF Serving's metric names start with ':' (its '/' separators become ':').

Two differences from prometheus_client's own exposition keep TF Serving's
names: its text format appends `_total` to every counter, so counters are
exposed under their TF Serving name as untyped series; and the `_created`
series are left out. Label values come only from bounded sets (configured
model names, status codes, API names): callers must check a model name
before using it as a label (see `ServingCore.track`).
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

# Latency buckets in microseconds, as TF Serving's request_latency histogram.
LATENCY_BUCKETS_US = tuple(10.0 * 2 ** i for i in range(21))  # 10us .. ~10s
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _TFServingNames:
    """A collector view of a registry with TF Serving's counter names."""

    def __init__(self, registry: CollectorRegistry):
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            counter = metric.type == "counter"
            out = Metric(metric.name, metric.documentation, "unknown" if counter else metric.type)
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                name = sample.name[:-len("_total")] if counter and sample.name.endswith("_total") else sample.name
                out.add_sample(name, sample.labels, sample.value)
            yield out


class Metrics:
    """The server's metrics (one registry per server).

    Update them with prometheus_client's API, e.g.
    `metrics.request_count.labels(model_name, "OK").inc()`."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_count = Counter(":tensorflow:serving:request_count", "The total number of requests.",
                                     ("model_name", "status"), registry=r)
        self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                         "Distribution of wall time (in microseconds) for requests.",
                                         ("model_name", "API", "entrypoint"), buckets=LATENCY_BUCKETS_US, registry=r)
        self.runtime_latency = Histogram(":tensorflow:serving:runtime_latency",
                                         "Distribution of wall time (in microseconds) for the model runtime.",
                                         ("model_name", "API", "runtime"), buckets=LATENCY_BUCKETS_US, registry=r)
        self.batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                    "Tracks the batch size distribution on processing.",
                                    ("model_name", "signature"), buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.load_attempts = Counter(":tensorflow:cc:saved_model:load_attempt_count",
                                     "The number of times a SavedModel was attempted to load.",
                                     ("model_path", "status"), registry=r)
        self.available_versions = Gauge(":tensorflow:serving:model_versions_available",
                                        "Number of AVAILABLE versions per model.", ("model_name",), registry=r)
        self.http_responses = Counter(":tensorflow:serving:http_response_count",
                                      "REST responses by HTTP status code.", ("code",), registry=r)
        self._view = _TFServingNames(r)

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self._view).decode("utf-8")
