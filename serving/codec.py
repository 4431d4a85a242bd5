"""Tensors in TF Serving's REST JSON and gRPC forms.

REST (https://www.tensorflow.org/tfx/serving/api_rest):
* row format `{"instances": [...]}`: one entry per row; an object of named
  inputs, or the bare value when the signature has one input.
  Response `{"predictions": [...]}` (objects of named outputs, or bare values
  when there is one output).
* columnar format `{"inputs": {...}}` (or the bare value for one input):
  whole tensors. Response `{"outputs": ...}` in the same shape.
* binary strings travel as `{"b64": "..."}`; string outputs whose name ends
  in `_bytes` are returned that way, others as UTF-8 text.
* classify/regress: `{"examples": [{feature: value}], "context": {...}}`,
  values str / {"b64"} / int / float or lists of one kind.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from serving.errors import invalid



def numpy_dtype(dtype: tf.DType):
    return object if dtype == tf.string else dtype.as_numpy_dtype


def _decode_strings(value: Any, where: str) -> Any:
    """JSON strings / {"b64": ...} (nested in lists) -> bytes."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid(f"{where}: a binary string must be written as {{\"b64\": \"<base64>\"}}, got {value!r:.80}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as err:
            raise invalid(f"{where}: invalid base64 ({err})") from None
    if isinstance(value, list):
        return [_decode_strings(v, where) for v in value]
    raise invalid(f"{where}: expects a string, got {type(value).__name__} {value!r:.40}")


def _check_numbers(value: Any, dtype: tf.DType, where: str) -> None:
    if isinstance(value, list):
        for v in value:
            _check_numbers(v, dtype, where)
        return
    if dtype == tf.bool:
        ok = isinstance(value, bool)
    elif dtype.is_integer:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise invalid(f"{where}: expects {dtype.name} values, got {type(value).__name__} {value!r:.40}")


def json_to_array(value: Any, dtype: tf.DType, where: str) -> np.ndarray:
    """One JSON value -> a numpy array of `dtype` (rectangular, type-checked)."""
    if dtype == tf.string:
        value = _decode_strings(value, where)
    else:
        _check_numbers(value, dtype, where)
    try:
        array = np.array(value, dtype=numpy_dtype(dtype))
    except (ValueError, OverflowError) as err:
        raise invalid(f"{where}: cannot convert to a {dtype.name} tensor: {err}") from None
    if dtype == tf.string and any(not isinstance(v, bytes) for v in array.reshape(-1)):
        raise invalid(f"{where}: lists must be rectangular (all rows the same length)")
    return array


def parse_instances(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """Row format -> {input name: batched array}."""
    if not isinstance(instances, list):
        raise invalid("'instances' must be a list of rows")
    if not instances:
        raise invalid("'instances' is empty: send at least one row")
    names = sorted(specs)
    rows: dict[str, list] = {name: [] for name in names}
    for i, row in enumerate(instances):
        named = isinstance(row, dict) and set(row) != {"b64"}
        if not named:
            if len(names) != 1:
                raise invalid(f"instance {i}: the signature has inputs {names}; each instance must be an object "
                              "with those keys")
            row = {names[0]: row}
        if set(row) != set(names):
            raise invalid(f"instance {i}: keys {sorted(row)} do not match the signature's inputs {names}")
        for name in names:
            rows[name].append(row[name])
    return {name: json_to_array(values, specs[name].dtype, f"input '{name}'") for name, values in rows.items()}


def parse_columnar(inputs: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    """Columnar format -> {input name: array}."""
    names = sorted(specs)
    if not (isinstance(inputs, dict) and set(inputs) != {"b64"}):
        if len(names) != 1:
            raise invalid(f"'inputs' must be an object with the signature's inputs {names}")
        inputs = {names[0]: inputs}
    if set(inputs) != set(names):
        raise invalid(f"'inputs' keys {sorted(inputs)} do not match the signature's inputs {names}")
    return {name: json_to_array(inputs[name], specs[name].dtype, f"input '{name}'") for name in names}


def _to_json_value(array: np.ndarray, name: str) -> Any:
    if array.dtype == object:
        if name.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode("ascii")}, otypes=[object])(
                array).tolist() if array.size else array.tolist()
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist() \
            if array.size else array.tolist()
    return array.tolist()


def format_rows(outputs: Mapping[str, np.ndarray]) -> list:
    """{output: array} -> the `predictions` list (row format)."""
    sizes = {name: (a.shape[0] if a.ndim else None) for name, a in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise invalid(f"the row format needs every output to have the same batch size, got {sizes}; "
                      "use the columnar ('inputs') format")
    columns = {name: _to_json_value(array, name) for name, array in outputs.items()}
    if len(columns) == 1:
        return next(iter(columns.values()))
    names = sorted(columns)
    return [{name: columns[name][i] for name in names} for i in range(next(iter(sizes.values())))]


def format_columns(outputs: Mapping[str, np.ndarray]) -> Any:
    """{output: array} -> the `outputs` value (columnar format)."""
    columns = {name: _to_json_value(array, name) for name, array in outputs.items()}
    return next(iter(columns.values())) if len(columns) == 1 else columns


# ----------------------------------------------------------------- examples

def _feature(value: Any, where: str) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if not values:
        return tf.train.Feature()
    if all(isinstance(v, (str, dict)) for v in values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=_decode_strings(values, where)))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    raise invalid(f"{where}: feature values must be strings, {{\"b64\"}}, ints or floats of one kind, "
                  f"got {value!r:.60}")


def json_to_example(features: Any, where: str) -> tf.train.Example:
    if not isinstance(features, dict):
        raise invalid(f"{where} must be an object of features, got {type(features).__name__}")
    example = tf.train.Example()
    for name, value in features.items():
        example.features.feature[name].CopyFrom(_feature(value, f"{where} feature '{name}'"))
    return example


def parse_examples(body: Mapping[str, Any]) -> list[bytes]:
    """REST classify/regress body -> serialized tf.Examples (context merged
    first, so a feature of the example wins over the context, as in TF Serving)."""
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty list of objects")
    context = body.get("context")
    prefix = json_to_example(context, "context").SerializeToString() if context is not None else b""
    return [prefix + json_to_example(e, f"example {i}").SerializeToString() for i, e in enumerate(examples)]


def input_to_examples(model_input) -> list[bytes]:
    """gRPC `tensorflow.serving.Input` -> serialized tf.Examples."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        prefix = model_input.example_list_with_context.context.SerializeToString()
        return [prefix + e.SerializeToString() for e in model_input.example_list_with_context.examples]
    raise invalid("Input is empty: set example_list or example_list_with_context")
