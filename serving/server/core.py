"""The protocol-neutral serving core that the REST and gRPC front ends share:
model lookup, Predict / Classify / Regress / metadata / status, warm-up and
metrics. Inputs and outputs are numpy arrays; failures are `ServingError`s."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from serving.server.codec import input_to_examples
from serving.server.config import BatchingParameters
from serving.server.errors import ServingError, invalid
from serving.server.limits import Admission, Deadline, Limits
from serving.server.manager import ModelManager
from serving.server.metrics import Metrics
from serving.server.servable import Servable, Signature

__all__ = ["ModelSpec", "ServingCore"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelSpec:
    """What a request addresses: model, optional version or label, signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


class ServingCore:
    """Serves the models of a TF Serving `ModelServerConfig`."""

    def __init__(self, model_config, batching: BatchingParameters | None = None, poll_seconds: float = 1.0,
                 limits: Limits | None = None, metrics: Metrics | None = None, enable_warmup: bool = True):
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        self.batching = batching
        self.enable_warmup = enable_warmup
        self.admission = Admission(self.limits.max_concurrent_requests)
        self.manager = ModelManager(model_config, self._load, poll_seconds,
                                    on_change=lambda name, n: self.metrics.available_versions.labels(name).set(n))

    def start(self) -> None:
        self.manager.start()

    def stop(self) -> None:
        self.manager.stop()

    # ---------------------------------------------------------------- load

    def _load(self, name: str, version: int, path: str) -> Servable:
        def on_batch(signature: str, size: int) -> None:
            self.metrics.batch_size.labels(name, signature).observe(size)
        try:
            servable = Servable(name, version, path, self.limits, self.batching, on_batch)
            if self.enable_warmup:
                servable.warmup(lambda record: self._replay(servable, record))
        except Exception:
            self.metrics.load_attempts.labels(path, "error").inc()
            raise
        self.metrics.load_attempts.labels(path, "success").inc()
        return servable

    def _replay(self, servable: Servable, record) -> None:
        kind = record.WhichOneof("log_type")
        if kind == "predict_log":
            request = record.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            self.predict_on(servable, request.model_spec.signature_name, inputs)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(record, kind).request
            run = self.classify_on if kind == "classify_log" else self.regress_on
            run(servable, request.model_spec.signature_name,
                input_to_examples(request.input, self.limits.max_request_rows))
        else:
            raise invalid(f"unsupported warm-up record type {kind}")

    # ------------------------------------------------------------- requests

    @contextlib.contextmanager
    def track(self, model_name: str, api: str, entrypoint: str, timeout: float | None = None
              ) -> Iterator[Deadline]:
        """Admits the request (a slot among --max_concurrent_requests before
        its deadline) and counts it and its latency in the metrics. Yields
        the request's `Deadline` (`timeout`: the client's, if sooner).

        Only configured model names become metric labels: a request for an
        unknown name is counted under no model, so names sent by clients
        never create series."""
        start = time.monotonic()
        status = "OK"
        seconds = self.limits.request_timeout_seconds
        deadline = Deadline(min(seconds, timeout) if timeout is not None else seconds)
        try:
            with self.admission.slot(deadline):
                yield deadline
        except ServingError as err:
            status = err.code_name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            if self.manager.has_model(model_name):
                self.metrics.request_count.labels(model_name, status).inc()
                self.metrics.request_latency.labels(model_name, api, entrypoint).observe(
                    (time.monotonic() - start) * 1e6)

    def servable(self, spec: ModelSpec) -> Servable:
        return self.manager.get(spec.name, spec.version, spec.label)

    def _timed(self, servable: Servable, api: str, signature: Signature, inputs,
               deadline: Deadline | None) -> dict[str, np.ndarray]:
        start = time.monotonic()
        try:
            return signature.run(inputs, deadline)
        finally:
            self.metrics.runtime_latency.labels(servable.name, api, "TF2").observe((time.monotonic() - start) * 1e6)

    def predict_on(self, servable: Servable, signature_name: str, inputs, output_filter: Sequence[str] = (),
                   deadline: Deadline | None = None) -> tuple[str, dict[str, np.ndarray]]:
        """Predict on an already resolved version: (signature key, {output: array}).
        Front ends resolve the version once, check inputs against it and run
        on it, so a version swap in between cannot change the model."""
        signature = servable.signature(signature_name)
        outputs = self._timed(servable, "predict", signature, inputs, deadline)
        if output_filter:
            unknown = sorted(set(output_filter) - set(outputs))
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be "
                              f"in the set {{{','.join(sorted(outputs))}}}.")
            outputs = {k: v for k, v in outputs.items() if k in output_filter}
        return signature.key, outputs

    def predict(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
                deadline: Deadline | None = None) -> tuple[Servable, str, dict[str, np.ndarray]]:
        """(servable, signature key, {output: array})."""
        servable = self.servable(spec)
        key, outputs = self.predict_on(servable, spec.signature_name, inputs, output_filter, deadline)
        return servable, key, outputs

    @staticmethod
    def _example_signature(servable: Servable, signature_name: str, api: str, outputs: Sequence[str]) -> Signature:
        signature = servable.signature(signature_name)
        specs = signature.input_specs
        if list(specs) != ["inputs"] or specs["inputs"].dtype != tf.string:
            raise invalid(f"Expected one string input Tensor named 'inputs' (serialized tf.Examples) in the "
                          f"{api} signature '{signature.key}', got {sorted(specs)}")
        if not set(outputs) & set(signature.output_names):
            raise invalid(f"The {api} signature '{signature.key}' has none of the outputs {list(outputs)}")
        return signature

    def classify_on(self, servable: Servable, signature_name: str, examples: list[bytes],
                    deadline: Deadline | None = None):
        """(signature key, classes [b, n] bytes or None, scores [b, n] or None)."""
        signature = self._example_signature(servable, signature_name, "classify", ("classes", "scores"))
        outputs = self._timed(servable, "classify", signature, {"inputs": np.array(examples, dtype=object)},
                              deadline)
        return signature.key, outputs.get("classes"), outputs.get("scores")

    def classify(self, spec: ModelSpec, examples: list[bytes], deadline: Deadline | None = None):
        """(servable, signature key, classes [b, n] bytes or None, scores [b, n] or None)."""
        servable = self.servable(spec)
        return (servable, *self.classify_on(servable, spec.signature_name, examples, deadline))

    def regress_on(self, servable: Servable, signature_name: str, examples: list[bytes],
                   deadline: Deadline | None = None):
        """(signature key, values [b])."""
        signature = self._example_signature(servable, signature_name, "regress", ("outputs",))
        outputs = self._timed(servable, "regress", signature, {"inputs": np.array(examples, dtype=object)},
                              deadline)
        values = np.asarray(outputs["outputs"], np.float32)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise invalid(f"regress output 'outputs' must be [batch] or [batch, 1], got {list(values.shape)}")
        return signature.key, values

    def regress(self, spec: ModelSpec, examples: list[bytes], deadline: Deadline | None = None):
        """(servable, signature key, values [b])."""
        servable = self.servable(spec)
        return (servable, *self.regress_on(servable, spec.signature_name, examples, deadline))
