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
import json
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from serving.server.errors import invalid
from serving.example_json import FormatError, decode_strings, json_to_example
from serving.server.limits import Limits

DEFAULT_MAX_ROWS = Limits.max_request_rows

MAX_JSON_DEPTH = 32  # a tensor has at most 32 dimensions (numpy's limit); requests nest a few levels more


def parse_json(body: bytes) -> dict:
    """A REST body -> its JSON object; every malformed body is INVALID_ARGUMENT.

    Python's parser recurses per nesting level and refuses integers of over
    4,300 digits: both surface here as 400s, never as server errors."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise invalid(f"JSON Parse error: {err}") from None
    except RecursionError:
        raise invalid(f"JSON Parse error: nested deeper than this server accepts ({MAX_JSON_DEPTH})") from None
    except ValueError as err:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise invalid(f"JSON Parse error: {err}") from None
    if not isinstance(request, dict):
        raise invalid("JSON Value: the request body must be a JSON object")
    check_depth(request, MAX_JSON_DEPTH)
    return request


def check_depth(value: Any, max_depth: int) -> None:
    """Raises INVALID_ARGUMENT if lists/objects nest deeper than `max_depth`
    (iterative: the decoders below recurse, so depth is checked first)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > max_depth:
                raise invalid(f"JSON Value: nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def check_rows(count: int, max_rows: int, what: str) -> None:
    """Rows are counted before anything is decoded: each row costs model memory."""
    if count > max_rows:
        raise invalid(f"{what} has {count} rows; this server accepts at most {max_rows} rows per request "
                      "(--max_request_rows): split it into several requests")


def tensor_from_proto(proto, where: str, max_rows: int, max_elements: int) -> np.ndarray:
    """A gRPC TensorProto -> numpy, after checking the shape it declares.

    A proto may declare many elements with one value (TF broadcasts the last
    value), so a few bytes can ask for gigabytes: the declared size is
    bounded before anything is materialised."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid(f"{where}: the tensor has an unknown rank; send a full shape")
    dims = [d.size for d in shape.dim]
    if any(d < 0 for d in dims):
        raise invalid(f"{where}: negative dimension in shape {dims}")
    if dims:
        check_rows(dims[0], max_rows, where)
    elements = 1
    for d in dims:
        elements *= d
    if elements > max_elements:
        raise invalid(f"{where}: the tensor declares {elements} elements; this server accepts at most "
                      f"{max_elements} per tensor")
    try:
        return tf.make_ndarray(proto)
    except Exception as err:  # noqa: BLE001 - any undecodable tensor is the client's error
        raise invalid(f"{where}: cannot decode the tensor: {err}") from None


def numpy_dtype(dtype: tf.DType):
    return object if dtype == tf.string else dtype.as_numpy_dtype


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
        try:
            value = decode_strings(value, where)
        except FormatError as err:
            raise invalid(str(err)) from None
    else:
        _check_numbers(value, dtype, where)
    try:
        array = np.array(value, dtype=numpy_dtype(dtype))
    except (ValueError, OverflowError) as err:
        raise invalid(f"{where}: cannot convert to a {dtype.name} tensor: {err}") from None
    if dtype == tf.string and any(not isinstance(v, bytes) for v in array.reshape(-1)):
        raise invalid(f"{where}: lists must be rectangular (all rows the same length)")
    return array


def parse_instances(instances: Any, specs: Mapping[str, tf.TensorSpec], max_rows: int = DEFAULT_MAX_ROWS
                    ) -> dict[str, np.ndarray]:
    """Row format -> {input name: batched array}."""
    if not isinstance(instances, list):
        raise invalid("'instances' must be a list of rows")
    if not instances:
        raise invalid("'instances' is empty: send at least one row")
    check_rows(len(instances), max_rows, "'instances'")
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


def parse_columnar(inputs: Any, specs: Mapping[str, tf.TensorSpec], max_rows: int = DEFAULT_MAX_ROWS
                   ) -> dict[str, np.ndarray]:
    """Columnar format -> {input name: array}."""
    names = sorted(specs)
    if not (isinstance(inputs, dict) and set(inputs) != {"b64"}):
        if len(names) != 1:
            raise invalid(f"'inputs' must be an object with the signature's inputs {names}")
        inputs = {names[0]: inputs}
    if set(inputs) != set(names):
        raise invalid(f"'inputs' keys {sorted(inputs)} do not match the signature's inputs {names}")
    for name in names:
        if isinstance(inputs[name], list):
            check_rows(len(inputs[name]), max_rows, f"input '{name}'")
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

def _json_to_example(features: Any, where: str) -> tf.train.Example:
    try:
        return json_to_example(features, where)
    except FormatError as err:
        raise invalid(str(err)) from None


def parse_examples(body: Mapping[str, Any], max_rows: int = DEFAULT_MAX_ROWS) -> list[bytes]:
    """REST classify/regress body -> serialized tf.Examples (context merged
    first, so a feature of the example wins over the context, as in TF Serving)."""
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty list of objects")
    check_rows(len(examples), max_rows, "'examples'")
    context = body.get("context")
    prefix = _json_to_example(context, "context").SerializeToString() if context is not None else b""
    return [prefix + _json_to_example(e, f"example {i}").SerializeToString() for i, e in enumerate(examples)]


def input_to_examples(model_input, max_rows: int = DEFAULT_MAX_ROWS) -> list[bytes]:
    """gRPC `tensorflow.serving.Input` -> serialized tf.Examples."""
    kind = model_input.WhichOneof("kind")
    if kind in ("example_list", "example_list_with_context"):
        check_rows(len(getattr(model_input, kind).examples), max_rows, "Input")
    if kind == "example_list":
        return [e.SerializeToString() for e in model_input.example_list.examples]
    if kind == "example_list_with_context":
        prefix = model_input.example_list_with_context.context.SerializeToString()
        return [prefix + e.SerializeToString() for e in model_input.example_list_with_context.examples]
    raise invalid("Input is empty: set example_list or example_list_with_context")
