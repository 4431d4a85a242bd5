"""TF Serving's JSON form of tf.Example features, shared by the server's
decoder and the clients (neither side owns it; it imports no server module).

A feature value is a string, `{"b64": "<base64>"}`, an int or a float, or a
list of values of one kind. Errors are `FormatError` (a `ValueError`) that
name the offending field.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any

import tensorflow as tf

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class FormatError(ValueError):
    """A JSON value that does not follow TF Serving's request format."""


def decode_strings(value: Any, where: str) -> Any:
    """JSON strings / {"b64": ...} (nested in lists) -> bytes."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800" is not text
            raise FormatError(f"{where}: the string is not valid Unicode (lone surrogate); send UTF-8 text or "
                              "{\"b64\": ...} for binary data") from None
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise FormatError(f"{where}: a binary string must be written as {{\"b64\": \"<base64>\"}}, "
                              f"got {value!r:.80}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as err:
            raise FormatError(f"{where}: invalid base64 ({err})") from None
    if isinstance(value, list):
        return [decode_strings(v, where) for v in value]
    raise FormatError(f"{where}: expects a string, got {type(value).__name__} {value!r:.40}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _feature(value: Any, where: str) -> tf.train.Feature:
    values = value if isinstance(value, list) else [value]
    if not values:
        return tf.train.Feature()
    if all(isinstance(v, (str, dict)) for v in values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=decode_strings(values, where)))
    if all(_is_int(v) for v in values):
        if any(not INT64_MIN <= v <= INT64_MAX for v in values):
            raise FormatError(f"{where}: an integer feature value is outside the int64 range")
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if all(_is_int(v) or isinstance(v, float) for v in values):
        try:
            return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
        except OverflowError:
            raise FormatError(f"{where}: a number is too large for a float feature") from None
    raise FormatError(f"{where}: feature values must be strings, {{\"b64\"}}, ints or floats of one kind, "
                      f"got {value!r:.60}")


def json_to_example(features: Any, where: str = "example") -> tf.train.Example:
    """{feature name: value} -> tf.train.Example (raises FormatError)."""
    if not isinstance(features, dict):
        raise FormatError(f"{where} must be an object of features, got {type(features).__name__}")
    example = tf.train.Example()
    for name, value in features.items():
        example.features.feature[name].CopyFrom(_feature(value, f"{where} feature '{name}'"))
    return example
