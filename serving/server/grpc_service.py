"""gRPC front end: TF Serving's PredictionService and ModelService.

Predict, Classify, Regress, GetModelMetadata (signature_def) and
GetModelStatus. Errors abort the call with the TF Serving status code
(INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE, ...).
Messages over `max_request_bytes` fail RESOURCE_EXHAUSTED in gRPC itself,
as do calls beyond `grpc_max_concurrent_rpcs`. Tensors are checked against
the rows and element limits before they are materialised. A call's deadline
is the sooner of the client's and `request_timeout_seconds`.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
import time
from typing import Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving.server.codec import input_to_examples, tensor_from_proto
from serving.server.core import ModelSpec, ServingCore
from serving.server.errors import ServingError, from_tf_error, invalid
from serving.server.limits import Limits

log = logging.getLogger("serving.access")


def _spec(model_spec) -> ModelSpec:
    choice = model_spec.WhichOneof("version_choice")
    return ModelSpec(model_spec.name, model_spec.version.value if choice == "version" else None,
                     model_spec.version_label if choice == "version_label" else None, model_spec.signature_name)


def _fill_spec(target, servable, signature_key: str) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature_key


def _rpc(method):
    """Maps ServingErrors to the gRPC status and logs the call."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        started, code = time.monotonic(), grpc.StatusCode.OK
        try:
            return method(self, request, context)
        except ServingError as err:
            code = err.code
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001
            err = from_tf_error(err)
            code = err.code
            log.exception("gRPC %s failed", method.__name__)
            context.abort(err.code, err.message)
        finally:
            name = ascii(getattr(request.model_spec, "name", ""))[1:-1][:200]  # control characters escaped
            log.info("gRPC %s %s %s %.1fms", method.__name__, name, code.name,
                     (time.monotonic() - started) * 1e3)
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    @_rpc
    def Predict(self, request, context):  # noqa: N802 (gRPC naming)
        spec = _spec(request.model_spec)
        limits = self.core.limits
        with self.core.track(spec.name, "predict", "GRPC", context.time_remaining()) as deadline:
            servable = self.core.servable(spec)  # resolved once: checked and run on the same version
            _check_dtypes(servable.signature(spec.signature_name).input_specs, request)
            inputs = {name: tensor_from_proto(proto, f"input '{name}'", limits.max_request_rows,
                                              limits.max_tensor_elements) for name, proto in request.inputs.items()}
            key, outputs = self.core.predict_on(servable, spec.signature_name, inputs, list(request.output_filter),
                                                deadline)
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, servable, key)
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(array)))
        return response

    def _on_examples(self, request, context, method: str, run: Callable) -> tuple:
        """`run(spec, examples, deadline)` on a Classify/Regress request's
        tf.Examples, tracked as `method` (latency, errors, the deadline)."""
        spec = _spec(request.model_spec)
        with self.core.track(spec.name, method, "GRPC", context.time_remaining()) as deadline:
            return run(spec, input_to_examples(request.input, self.core.limits.max_request_rows), deadline)

    @_rpc
    def Classify(self, request, context):  # noqa: N802
        servable, key, classes, scores = self._on_examples(request, context, "classify", self.core.classify)
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, servable, key)
        rows = len(classes) if classes is not None else len(scores)
        for i in range(rows):
            result = response.result.classifications.add()
            width = classes.shape[1] if classes is not None else scores.shape[1]
            for j in range(width):
                cls = result.classes.add()
                if classes is not None:
                    cls.label = classes[i, j].decode("utf-8", "replace")
                if scores is not None:
                    cls.score = float(scores[i, j])
        return response

    @_rpc
    def Regress(self, request, context):  # noqa: N802
        servable, key, values = self._on_examples(request, context, "regress", self.core.regress)
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, servable, key)
        for value in values:
            response.result.regressions.add(value=float(value))
        return response

    @_rpc
    def GetModelMetadata(self, request, context):  # noqa: N802
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise invalid(f"Metadata field {fields} is not supported; use metadata_field=['signature_def']")
        servable = self.core.servable(_spec(request.model_spec))
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def MultiInference(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by this server")


def _check_dtypes(specs: dict[str, tf.TensorSpec], request) -> None:
    """gRPC tensors must have the signature's exact dtype (as TF Serving)."""
    for name, proto in request.inputs.items():
        if name in specs and proto.dtype != specs[name].dtype.as_datatype_enum:
            raise invalid(f"Expects arg '{name}' to be {specs[name].dtype.name} but "
                          f"{_dtype_name(proto.dtype)} is provided")


def _dtype_name(enum: int) -> str:
    """A DataType enum's name; a client may send any integer (e.g. 9999), which has none."""
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"an unknown dtype (enum value {enum})"


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore):
        self.core = core

    @_rpc
    def GetModelStatus(self, request, context):  # noqa: N802
        spec = _spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for row in self.core.manager.status(spec.name, spec.version, spec.label):
            status = response.model_version_status.add(version=row.version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(row.state)
            status.status.error_code = grpc.StatusCode[row.error_code].value[0]
            status.status.error_message = row.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "config reload is not implemented by this server")


def make_grpc_server(core: ServingCore, host: str, port: int, max_workers: int, limits: Limits
                     ) -> tuple[grpc.Server, int]:
    """(started-later gRPC server, bound port)."""
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         maximum_concurrent_rpcs=limits.grpc_max_concurrent_rpcs,
                         options=[("grpc.max_receive_message_length", limits.max_request_bytes),
                                  ("grpc.max_send_message_length", 64 << 20),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    return server, bound
