"""Client of TF Serving's gRPC API (tensorflow-serving-api stubs).

    client = GrpcClient("127.0.0.1:8500")
    client.predict("sentiment", {"text": ["A great movie"]})["probabilities"]
    client.classify("sentiment", [{"text": "A great movie"}])  # [[("pos", 0.9), ("neg", 0.1)]]

Errors are `grpc.RpcError`s; `err.code()` is TF Serving's status code.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, input_pb2,
                                     model_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving.example_json import json_to_example


def model_spec(name: str, version: int | None = None, label: str | None = None,
               signature_name: str = "") -> model_pb2.ModelSpec:
    if version is not None and label:
        raise ValueError("pass a version or a label, not both")
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = int(version)
    elif label:
        spec.version_label = label
    return spec


def _example(features: Any) -> tf.train.Example:
    return features if isinstance(features, tf.train.Example) else json_to_example(features, "example")


def make_input(examples: Sequence[Any], context: Any = None) -> input_pb2.Input:
    """Input proto from tf.Examples or feature dicts ({name: str | int | float | list})."""
    examples = [_example(e) for e in examples]
    if context is None:
        return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))
    return input_pb2.Input(example_list_with_context=input_pb2.ExampleListWithContext(
        examples=examples, context=_example(context)))


class GrpcClient:
    """TF Serving gRPC client (PredictionService + ModelService)."""

    def __init__(self, target: str = "127.0.0.1:8500", timeout: float = 60.0, max_message_bytes: int = 64 << 20):
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", max_message_bytes),
                                                              ("grpc.max_receive_message_length", max_message_bytes)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict_raw(self, name: str, inputs: Mapping[str, Any], signature_name: str = "",
                    version: int | None = None, label: str | None = None,
                    output_filter: Sequence[str] = (), dtypes: Mapping[str, tf.DType] | None = None
                    ) -> predict_pb2.PredictResponse:
        """Predict; inputs are arrays / nested lists (strings -> DT_STRING).
        `dtypes` forces an input's dtype (e.g. tf.int32 for Python ints)."""
        request = predict_pb2.PredictRequest(model_spec=model_spec(name, version, label, signature_name),
                                             output_filter=list(output_filter))
        for key, value in inputs.items():
            dtype = (dtypes or {}).get(key)
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
        return self.prediction.Predict(request, timeout=self.timeout)

    def predict(self, name: str, inputs: Mapping[str, Any], signature_name: str = "", version: int | None = None,
                label: str | None = None, output_filter: Sequence[str] = (),
                dtypes: Mapping[str, tf.DType] | None = None) -> dict[str, np.ndarray]:
        """Predict -> {output name: numpy array}."""
        response = self.predict_raw(name, inputs, signature_name, version, label, output_filter, dtypes)
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}

    def classify_raw(self, name: str, examples: Sequence[Any], context: Any = None, signature_name: str = "classify",
                     version: int | None = None, label: str | None = None
                     ) -> classification_pb2.ClassificationResponse:
        request = classification_pb2.ClassificationRequest(
            model_spec=model_spec(name, version, label, signature_name), input=make_input(examples, context))
        return self.prediction.Classify(request, timeout=self.timeout)

    def classify(self, name: str, examples: Sequence[Any], context: Any = None, signature_name: str = "classify",
                 version: int | None = None, label: str | None = None) -> list[list[tuple[str, float]]]:
        """Classify -> per example a list of (label, score)."""
        response = self.classify_raw(name, examples, context, signature_name, version, label)
        return [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]

    def regress(self, name: str, examples: Sequence[Any], context: Any = None, signature_name: str = "regress",
                version: int | None = None, label: str | None = None) -> list[float]:
        """Regress -> one value per example."""
        request = regression_pb2.RegressionRequest(model_spec=model_spec(name, version, label, signature_name),
                                                   input=make_input(examples, context))
        response = self.prediction.Regress(request, timeout=self.timeout)
        return [r.value for r in response.result.regressions]

    def metadata(self, name: str, version: int | None = None, label: str | None = None
                 ) -> tuple[int, get_model_metadata_pb2.SignatureDefMap]:
        """GetModelMetadata -> (served version, SignatureDefMap)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_spec(name, version, label),
                                                                 metadata_field=["signature_def"])
        response = self.prediction.GetModelMetadata(request, timeout=self.timeout)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return response.model_spec.version.value, signature_map

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[dict]:
        """GetModelStatus -> [{"version", "state", "error_code", "error_message"}]."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec(name, version, label))
        response = self.models.GetModelStatus(request, timeout=self.timeout)
        state = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": state.Name(s.state), "error_code": s.status.error_code,
                 "error_message": s.status.error_message} for s in response.model_version_status]
