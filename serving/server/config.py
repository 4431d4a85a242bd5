"""Server configuration in TF Serving's formats.

* `--model_config_file`: a `ModelServerConfig` text proto (parsed with the
  tensorflow_serving.config protos), e.g. serving/models.config.
* `--batching_parameters_file`: TF Serving's `BatchingParameters` text proto,
  e.g. serving/batching.config. Its proto is not shipped in the
  tensorflow-serving-api wheel, so the flat `name { value: N }` /
  `name: N` syntax is parsed here.
* `--monitoring_config_file`: `MonitoringConfig` text proto; only the
  Prometheus path is read.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

log = logging.getLogger(__name__)

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


class ConfigError(ValueError):
    """A configuration file or flag combination that cannot be served."""


def read_model_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a TF Serving model config file; relative base paths are taken
    relative to the file's directory. Validates names and policies."""
    try:
        with open(path, encoding="utf-8") as f:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as err:
        raise ConfigError(f"cannot read model config file {path}: {err}") from err
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: only model_config_list is supported")
    root = os.path.dirname(os.path.abspath(path))
    for model in config.model_config_list.config:
        if model.base_path and not os.path.isabs(model.base_path):
            model.base_path = os.path.join(root, model.base_path)
    validate_model_config(config, path)
    return config


def model_config_from_flags(model_name: str, model_base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The single-model config of `--model_name`/`--model_base_path` (policy: latest 1)."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = os.path.abspath(model_base_path)
    model.model_platform = "tensorflow"
    validate_model_config(config, "flags")
    return config


def validate_model_config(config: model_server_config_pb2.ModelServerConfig, source: str) -> None:
    names = [m.name for m in config.model_config_list.config]
    if not names:
        raise ConfigError(f"{source}: no models configured")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: duplicate model names in {names}")
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ConfigError(f"{source}: every model needs a name and a base_path")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {model.name}: unsupported platform {model.model_platform!r}")
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ConfigError(f"{source}: model {model.name}: latest.num_versions must be >= 1")
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ConfigError(f"{source}: model {model.name}: specific policy lists no versions")


@dataclasses.dataclass
class BatchingParameters:
    """TF Serving's batching parameters (same names and meaning).

    max_batch_size: rows per batch at most (larger requests are split).
    batch_timeout_micros: how long the first request of a batch waits for others.
    max_enqueued_batches: queue bound; beyond it requests fail UNAVAILABLE.
    num_batch_threads: batches run in parallel.
    allowed_batch_sizes: if set, batches are padded up to one of these
      (the last must equal max_batch_size).
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    allowed_batch_sizes: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.batch_timeout_micros < 0 or self.max_enqueued_batches < 1 \
                or self.num_batch_threads < 1:
            raise ConfigError(f"invalid batching parameters {self}")
        sizes = self.allowed_batch_sizes
        if sizes and (sorted(sizes) != sizes or sizes[-1] != self.max_batch_size or sizes[0] < 1):
            raise ConfigError("allowed_batch_sizes must increase and end with max_batch_size "
                              f"({self.max_batch_size}), got {sizes}")


_FIELD = re.compile(r"(\w+)\s*(?::\s*([^\s{}#]+)|\{\s*value\s*:\s*([^\s{}#]+)\s*\})")
_IGNORED = {"pad_variable_length_inputs", "enable_large_batch_splitting", "thread_pool_name"}


def parse_batching_parameters(text: str) -> BatchingParameters:
    """Parses TF Serving's batching parameters text format."""
    body = re.sub(r"#[^\n]*", "", text)
    values: dict = {}
    for match in _FIELD.finditer(body):
        name, value = match.group(1), match.group(2) or match.group(3)
        value = value.strip('"')
        if name == "allowed_batch_sizes":
            values.setdefault(name, []).append(int(value))
        elif name in _IGNORED:
            log.info("batching parameter %s=%s is accepted and ignored", name, value)
        elif name in {f.name for f in dataclasses.fields(BatchingParameters)}:
            values[name] = int(value)
        else:
            raise ConfigError(f"unknown batching parameter {name!r}")
    leftover = _FIELD.sub("", body).strip()
    if leftover:
        raise ConfigError(f"cannot parse batching parameters near {leftover[:40]!r}")
    return BatchingParameters(**values)


def read_batching_parameters(path: str) -> BatchingParameters:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_batching_parameters(f.read())
    except OSError as err:
        raise ConfigError(f"cannot read batching parameters file {path}: {err}") from err


def read_metrics_path(path: str | None) -> str:
    """The Prometheus path from a MonitoringConfig file (default TF Serving's)."""
    if not path:
        return DEFAULT_METRICS_PATH
    with open(path, encoding="utf-8") as f:
        match = re.search(r'path\s*:\s*"([^"]+)"', f.read())
    return match.group(1) if match else DEFAULT_METRICS_PATH
