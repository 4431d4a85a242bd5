"""tf.train.Example bytes without TensorFlow.

The same two .proto files (tensorflow/core/example/{feature,example}.proto),
declared here in a private descriptor pool and compiled by protobuf's own
runtime, so that Beam workers serialize records without importing
TensorFlow (~6 s per worker). Same wire format, same bytes as TF's
`SerializeToString(deterministic=True)` (tests/test_schema_data.py checks it).
What the records hold is `gpt_keras.schema`'s.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence


@functools.lru_cache(maxsize=None)
def _example_classes() -> dict[str, Any]:
    """The five message classes of example.proto/feature.proto, declared once per process."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="gpt_keras/example.proto", package="tensorflow",
                                               syntax="proto3")

    def message(name, *fields):
        m = proto.message_type.add(name=name)
        for number, (field, kind, label, type_name, oneof) in enumerate(fields, start=1):
            f = m.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if oneof:
                f.oneof_index = 0
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", F.TYPE_BYTES, rep, None, False))
    message("FloatList", ("value", F.TYPE_FLOAT, rep, None, False)).field[0].options.packed = True
    message("Int64List", ("value", F.TYPE_INT64, rep, None, False)).field[0].options.packed = True
    message("Feature", ("bytes_list", F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", True),
            ("float_list", F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", True),
            ("int64_list", F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", True)).oneof_decl.add(name="kind")
    features = message("Features", ("feature", F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", False))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    entry.options.map_entry = True
    message("Example", ("features", F.TYPE_MESSAGE, opt, ".tensorflow.Features", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
            for name in ("Example", "Feature", "Int64List", "FloatList", "BytesList")}


def feature(kind: str, values: Sequence) -> Any:
    """A tf.train.Feature holding `values` as its `kind` list ("int64_list", "float_list" or "bytes_list")."""
    c = _example_classes()
    list_class = {"int64_list": "Int64List", "float_list": "FloatList", "bytes_list": "BytesList"}[kind]
    return c["Feature"](**{kind: c[list_class](value=values)})


def serialize(features: Mapping[str, Any]) -> bytes:
    """A tf.train.Example of `features` ({name: `feature(...)`}) as deterministic bytes
    (map entries sorted by key), as TF writes them."""
    example = _example_classes()["Example"]()
    for name, value in features.items():
        example.features.feature[name].CopyFrom(value)
    return example.SerializeToString(deterministic=True)
