"""One loaded model version: its signatures, input checks, runs and warm-up."""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf

from serving.server.batching import Batcher
from serving.server.codec import check_rows
from serving.server.config import BatchingParameters
from serving.server.errors import ServingError, failed_precondition, from_tf_error, invalid
from serving.server.limits import Deadline, Limits

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
GENERATION_LENGTH_INPUT = "max_new_tokens"  # the generation signatures' length input (gpt_keras.export.lm)


def read_signature_defs(path: str):
    """The SignatureDef map of `<path>/saved_model.pb` (for metadata)."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    return saved_model.meta_graphs[0].signature_def


class Signature:
    """A callable signature with TF Serving's input checks.

    `run({name: array})` checks names, dtypes, shapes, batch sizes, the rows,
    string length and generation length limits, then runs the function
    (through the batcher when batching is on) and returns {output name: array}."""

    def __init__(self, key: str, function, method_name: str, limits: Limits,
                 batching: BatchingParameters | None, on_batch: Callable[[int], None] | None = None):
        self.key = key
        self.method_name = method_name
        self._function = function
        self.input_specs: dict[str, tf.TensorSpec] = dict(function.structured_input_signature[1])
        self.output_names = sorted(function.structured_outputs)
        self.limits = limits
        self.max_string_bytes = limits.max_string_bytes
        self._batcher = Batcher(self._call, batching, f"{key}", on_batch) if batching else None

    def _call(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            tensors = {name: tf.constant(a, dtype=self.input_specs[name].dtype) for name, a in inputs.items()}
            outputs = self._function(**tensors)
        except Exception as err:  # noqa: BLE001 - TF errors carry their status code
            raise from_tf_error(err) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def check(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validated, dtype-converted inputs (raises INVALID_ARGUMENT)."""
        names, expected = set(inputs), set(self.input_specs)
        if names != expected:
            raise invalid(f"input size does not match signature: {len(names)}!={len(expected)} "
                          f"len({sorted(names)}) != len({sorted(expected)}). Missing: {sorted(expected - names)}; "
                          f"unknown: {sorted(names - expected)}; signature: {self.key}")
        checked, batch = {}, set()
        for name, array in inputs.items():
            spec = self.input_specs[name]
            array = np.asarray(array)
            if spec.dtype == tf.string:
                if array.dtype != object and array.dtype.kind not in "SU":
                    raise invalid(f"input '{name}' expects strings, got {array.dtype}")
                longest = max((len(v) for v in array.reshape(-1)), default=0)
                if longest > self.max_string_bytes:
                    raise invalid(f"input '{name}' has a string of {longest} bytes; this server accepts at most "
                                  f"{self.max_string_bytes} bytes per string (--max_string_bytes)")
            elif array.dtype == object or array.dtype.kind in "SU":
                raise invalid(f"input '{name}' expects {spec.dtype.name}, got strings")
            elif not np.can_cast(array.dtype, spec.dtype.as_numpy_dtype, casting="same_kind"):
                raise invalid(f"input '{name}' expects {spec.dtype.name}, got {array.dtype}")
            elif name == GENERATION_LENGTH_INPUT and array.size and array.max() > self.limits.max_new_tokens:
                raise invalid(f"input '{name}' asks for {array.max()} new tokens; this server generates at most "
                              f"{self.limits.max_new_tokens} per request (--max_new_tokens)")
            if not spec.shape.is_compatible_with(array.shape):
                raise invalid(f"input '{name}' has shape {list(array.shape)} but the signature expects "
                              f"{spec.shape.as_list() if spec.shape.rank is not None else 'any'}")
            if array.ndim:
                check_rows(array.shape[0], self.limits.max_request_rows, f"input '{name}'")
                batch.add(array.shape[0])
            checked[name] = array
        if len(batch) > 1:
            raise invalid(f"inputs have different batch sizes {sorted(batch)}")
        if batch == {0}:
            raise invalid("the request has no rows (batch size 0)")
        return checked

    def run(self, inputs: Mapping[str, np.ndarray], deadline: Deadline | None = None) -> dict[str, np.ndarray]:
        inputs = self.check(inputs)
        batched = self._batcher is not None and all(a.ndim for a in inputs.values())
        return self._batcher(inputs, deadline) if batched else self._call(inputs)

    def tiny_request(self) -> dict[str, np.ndarray]:
        """One row of placeholder inputs ("a", 1, True) for warm-up."""
        def value(spec: tf.TensorSpec) -> np.ndarray:
            shape = [1 if d is None else d for d in (spec.shape.as_list() if spec.shape.rank is not None else [1])]
            if spec.dtype == tf.string:
                return np.full(shape, b"a", dtype=object)
            return np.ones(shape, dtype=spec.dtype.as_numpy_dtype)
        return {name: value(spec) for name, spec in self.input_specs.items()}

    def close(self) -> None:
        if self._batcher:
            self._batcher.close()


class Servable:
    """A loaded SavedModel version."""

    def __init__(self, name: str, version: int, path: str, limits: Limits,
                 batching: BatchingParameters | None = None, on_batch: Callable[[str, int], None] | None = None):
        self.name, self.version, self.path = name, version, path
        self.signature_defs = read_signature_defs(path)
        self._loaded = tf.saved_model.load(path)
        self.signatures: dict[str, Signature] = {}
        for key, function in self._loaded.signatures.items():
            hook = (lambda size, key=key: on_batch(key, size)) if on_batch else None
            self.signatures[key] = Signature(key, function, self.signature_defs[key].method_name, limits,
                                             batching, hook)

    def signature(self, key: str) -> Signature:
        key = key or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise failed_precondition(f'Serving signature key "{key}" not found.')
        return self.signatures[key]

    def close(self) -> None:
        for signature in self.signatures.values():
            signature.close()

    def warmup(self, replay: Callable[[object], None]) -> int:
        """Replays `assets.extra/tf_serving_warmup_requests` (PredictionLogs)
        through `replay`, then warms up each signature that no record named
        with a one-row placeholder request; returns the number of records.
        A failing record fails the load, as in TF Serving; a failing
        placeholder request is only logged (it is the server's guess)."""
        count, start = 0, time.monotonic()
        covered: set[str] = set()
        path = os.path.join(self.path, WARMUP_FILE)
        if os.path.exists(path):
            from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top

            for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS + 1):
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"more than {MAX_WARMUP_RECORDS} warm-up records in {path}")
                log_record = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                replay(log_record)
                kind = log_record.WhichOneof("log_type")
                covered.add(getattr(log_record, kind).request.model_spec.signature_name or DEFAULT_SIGNATURE)
        # Without this the first concurrent calls of an unwarmed signature (an
        # LM's `generate`) each pay its first-run setup, in time and memory.
        for key, signature in sorted(self.signatures.items()):
            if key not in covered:
                try:
                    signature.run(signature.tiny_request())
                except Exception as err:  # noqa: BLE001
                    log.warning("model %s version %d: placeholder warm-up of signature %s failed: %s", self.name,
                                self.version, key, err)
        log.info("model %s version %d: replayed %d warm-up requests (signatures warmed: %s) in %.2fs", self.name,
                 self.version, count, sorted(self.signatures), time.monotonic() - start)
        return count
