"""TF Serving directory layout: `<base>/<name>/<version>/`, atomic writes,
signature method names, warm-up records and the export's metadata file.

TF Serving only looks at directories whose name is an integer, so an export
is written into a hidden temporary sibling (`.tmp-...`) and renamed into
place once complete: a server polling the model directory never sees a
half-written version.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Mapping

import tensorflow as tf

log = logging.getLogger(__name__)

# Signature method names TF Serving's Classify/Regress APIs expect. TF2's
# `tf.saved_model.save` writes "tensorflow/serving/predict" for every
# signature; stock servers only check the name with
# --enable_signature_method_name_check, older ones always did, so we set it.
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
METADATA_FILE = os.path.join("assets.extra", "gpt_keras_export.json")


def existing_versions(model_dir: str) -> list[int]:
    """Integer version directories under `model_dir` (sorted; [] if none)."""
    if not tf.io.gfile.isdir(model_dir):
        return []
    names = (n.rstrip("/") for n in tf.io.gfile.listdir(model_dir))
    return sorted(int(n) for n in names if n.isdigit())


def next_version(model_dir: str) -> int:
    """One more than the highest existing version, 1 for a new model."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def resolve_version_dir(base_dir: str, model_name: str, version: int | None) -> tuple[str, int]:
    """(`<base>/<name>/<version>`, version); validates the name and version."""
    if not model_name or os.sep in model_name or model_name.startswith(".") or model_name != model_name.strip():
        raise ValueError(f"model_name must be a plain directory name, got {model_name!r}")
    model_dir = os.path.join(base_dir, model_name)
    if version is None:
        version = next_version(model_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving versions), got {version!r}")
    target = os.path.join(model_dir, str(version))
    if tf.io.gfile.exists(target):
        raise FileExistsError(f"{target} already exists; TF Serving versions are immutable. "
                              f"Pass version=None to write version {next_version(model_dir)}.")
    return target, version


def atomic_write(target: str, write: Callable[[str], None]) -> str:
    """Calls `write(tmp_dir)`, then renames tmp_dir to `target` (same parent).

    On any error the temporary directory is removed and `target` is never
    created. Local file systems only (a rename is not atomic on GCS).
    """
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a server may run as another user
        os.rename(tmp, target)  # fails if another writer created `target` meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def set_method_names(export_dir: str, method_names: Mapping[str, str]) -> None:
    """Rewrites `saved_model.pb` with the given signature method names and
    refreshes `fingerprint.pb` (its checksum covers saved_model.pb)."""
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top

    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    signatures = saved_model.meta_graphs[0].signature_def
    for key, method in method_names.items():
        signatures[key].method_name = method
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    fingerprint = os.path.join(export_dir, "fingerprint.pb")
    if os.path.exists(fingerprint):
        # pylint: disable-next=g-import-not-at-top
        from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting
        with open(fingerprint, "wb") as f:
            f.write(fingerprinting.CreateFingerprintDef(export_dir))


def write_warmup(export_dir: str, requests: Iterable[tuple[str, str, dict]]) -> str:
    """Writes TF Serving warm-up records (PredictionLog TFRecords).

    `requests`: (kind, signature_name, payload) with kind "predict" (payload:
    {input name: TensorProto}) or "classify"/"regress" (payload:
    {"examples": [serialized tf.Example bytes]}).
    """
    # Lazy: only exports need the serving protos (tensorflow-serving-api).
    # pylint: disable-next=g-import-not-at-top
    from tensorflow_serving.apis import (classification_pb2, input_pb2, model_pb2, predict_pb2, prediction_log_pb2,
                                         regression_pb2)

    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for kind, signature, payload in requests:
            spec = model_pb2.ModelSpec(signature_name=signature)
            if kind == "predict":
                request = predict_pb2.PredictRequest(model_spec=spec, inputs=payload)
                record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            elif kind in ("classify", "regress"):
                examples = [tf.train.Example.FromString(e) for e in payload["examples"]]
                model_input = input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))
                if kind == "classify":
                    record = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
                        request=classification_pb2.ClassificationRequest(model_spec=spec, input=model_input)))
                else:
                    record = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(
                        request=regression_pb2.RegressionRequest(model_spec=spec, input=model_input)))
            else:
                raise ValueError(f"unknown warm-up request kind {kind!r}")
            writer.write(record.SerializeToString())
    return path


def write_metadata(export_dir: str, metadata: Mapping[str, Any]) -> None:
    """`assets.extra/gpt_keras_export.json`: what the export holds (family,
    labels, limits, tokenizer fingerprint). TF Serving ignores the file."""
    path = os.path.join(export_dir, METADATA_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(metadata), f, indent=2, sort_keys=True)


def read_metadata(export_dir: str) -> dict:
    """The metadata written by `write_metadata` ({} if the file is missing)."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def example_bytes(features: Mapping[str, Any]) -> bytes:
    """A serialized tf.Example with bytes features ({name: str | list[str]})."""
    feature = {}
    for name, value in features.items():
        values = [value] if isinstance(value, (str, bytes)) else list(value)
        values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def save(module: tf.Module, target: str, signatures: Mapping[str, Any], method_names: Mapping[str, str],
         warmup: list[tuple[str, str, dict]], metadata: Mapping[str, Any]) -> str:
    """Saves `module` atomically as `target` (from `resolve_version_dir`); returns it."""
    model_name, version = os.path.basename(os.path.dirname(target)), int(os.path.basename(target))

    def write(tmp: str) -> None:
        # No XLA: stock TF Serving leaves CPU jit off, so functions stay plain graphs.
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        tf.saved_model.save(module, tmp, signatures=dict(signatures), options=options)
        set_method_names(tmp, method_names)
        write_warmup(tmp, warmup)
        write_metadata(tmp, {**metadata, "model_name": model_name, "version": version})

    atomic_write(target, write)
    log.info("exported %s version %d to %s", model_name, version, target)
    return target
