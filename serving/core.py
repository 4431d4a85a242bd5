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

from serving.codec import input_to_examples
from serving.config import BatchingParameters
from serving.errors import ServingError, invalid
from serving.manager import ModelManager
from serving.metrics import Metrics
from serving.servable import Servable, Signature

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelSpec:
    """What a request addresses: model, optional version or label, signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


@dataclasses.dataclass
class Limits:
    """Request bounds (documented in docs/serving.md)."""

    max_request_bytes: int = 4 << 20  # REST body / gRPC message
    max_string_bytes: int = 64 << 10  # each string element (a text, a serialized tf.Example)


class ServingCore:
    """Serves the models of a TF Serving `ModelServerConfig`."""

    def __init__(self, model_config, batching: BatchingParameters | None = None, poll_seconds: float = 1.0,
                 limits: Limits | None = None, metrics: Metrics | None = None, enable_warmup: bool = True):
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics()
        self.batching = batching
        self.enable_warmup = enable_warmup
        self.manager = ModelManager(model_config, self._load, poll_seconds,
                                    on_change=lambda name, n: self.metrics.available_versions.set(name, value=n))

    def start(self) -> None:
        self.manager.start()

    def stop(self) -> None:
        self.manager.stop()

    # ---------------------------------------------------------------- load

    def _load(self, name: str, version: int, path: str) -> Servable:
        def on_batch(signature: str, size: int) -> None:
            self.metrics.batch_size.observe(size, name, signature)
        try:
            servable = Servable(name, version, path, self.limits.max_string_bytes, self.batching, on_batch)
            if self.enable_warmup:
                servable.warmup(lambda record: self._replay(servable, record))
        except Exception:
            self.metrics.load_attempts.inc(path, "error")
            raise
        self.metrics.load_attempts.inc(path, "success")
        return servable

    def _replay(self, servable: Servable, record) -> None:
        kind = record.WhichOneof("log_type")
        if kind == "predict_log":
            request = record.predict_log.request
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            self._predict(servable, request.model_spec.signature_name, inputs)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(record, kind).request
            run = self._classify if kind == "classify_log" else self._regress
            run(servable, request.model_spec.signature_name, input_to_examples(request.input))
        else:
            raise invalid(f"unsupported warm-up record type {kind}")

    # ------------------------------------------------------------- requests

    @contextlib.contextmanager
    def track(self, model_name: str, api: str, entrypoint: str) -> Iterator[None]:
        """Counts the request and its latency in the metrics."""
        start = time.monotonic()
        status = "OK"
        try:
            yield
        except ServingError as err:
            status = err.code_name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self.metrics.request_count.inc(model_name, status)
            self.metrics.request_latency.observe((time.monotonic() - start) * 1e6, model_name, api, entrypoint)

    def servable(self, spec: ModelSpec) -> Servable:
        return self.manager.get(spec.name, spec.version, spec.label)

    def _timed(self, servable: Servable, api: str, signature: Signature, inputs) -> dict[str, np.ndarray]:
        start = time.monotonic()
        try:
            return signature.run(inputs)
        finally:
            self.metrics.runtime_latency.observe((time.monotonic() - start) * 1e6, servable.name, api, "TF2")

    def _predict(self, servable: Servable, signature_name: str, inputs, output_filter: Sequence[str] = ()):
        signature = servable.signature(signature_name)
        outputs = self._timed(servable, "predict", signature, inputs)
        if output_filter:
            unknown = sorted(set(output_filter) - set(outputs))
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be "
                              f"in the set {{{','.join(sorted(outputs))}}}.")
            outputs = {k: v for k, v in outputs.items() if k in output_filter}
        return signature.key, outputs

    def predict(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
                ) -> tuple[Servable, str, dict[str, np.ndarray]]:
        """(servable, signature key, {output: array})."""
        servable = self.servable(spec)
        key, outputs = self._predict(servable, spec.signature_name, inputs, output_filter)
        return servable, key, outputs

    def signature_input_specs(self, spec: ModelSpec) -> dict[str, tf.TensorSpec]:
        """Input specs of the addressed signature (the REST decoder needs the dtypes)."""
        return self.servable(spec).signature(spec.signature_name).input_specs

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

    def _classify(self, servable: Servable, signature_name: str, examples: list[bytes]):
        signature = self._example_signature(servable, signature_name, "classify", ("classes", "scores"))
        outputs = self._timed(servable, "classify", signature, {"inputs": np.array(examples, dtype=object)})
        return signature.key, outputs.get("classes"), outputs.get("scores")

    def classify(self, spec: ModelSpec, examples: list[bytes]):
        """(servable, signature key, classes [b, n] bytes or None, scores [b, n] or None)."""
        servable = self.servable(spec)
        return (servable, *self._classify(servable, spec.signature_name, examples))

    def _regress(self, servable: Servable, signature_name: str, examples: list[bytes]):
        signature = self._example_signature(servable, signature_name, "regress", ("outputs",))
        outputs = self._timed(servable, "regress", signature, {"inputs": np.array(examples, dtype=object)})
        values = np.asarray(outputs["outputs"], np.float32)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise invalid(f"regress output 'outputs' must be [batch] or [batch, 1], got {list(values.shape)}")
        return signature.key, values

    def regress(self, spec: ModelSpec, examples: list[bytes]):
        """(servable, signature key, values [b])."""
        servable = self.servable(spec)
        return (servable, *self._regress(servable, spec.signature_name, examples))
