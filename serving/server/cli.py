"""The command line of the local TF-Serving-compatible model server (REST +
gRPC, `ModelServer`), for machines without `tensorflow_model_server`.

    python -m serving.server --model_name=sentiment --model_base_path=models/sentiment
    python -m serving.server --model_config_file=serving/models.config --enable_batching \\
        --batching_parameters_file=serving/batching.config

Flags follow `tensorflow_model_server` (same names and defaults where they
exist: --port 8500 (gRPC), --rest_api_port 8501, --file_system_poll_wait_seconds 1,
version policy latest 1). Differences: binds --host (127.0.0.1) instead of
0.0.0.0; port 0 picks a free port (see --port_file); requests are bounded
(bytes, rows, string and generation length, concurrency, deadline; see
"Limits" in docs/serving.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

import tensorflow as tf

from serving.server.config import (BatchingParameters, ConfigError, model_config_from_flags,
                                   read_batching_parameters, read_metrics_path, read_model_config)
from serving.server.limits import Limits
from serving.server.model_server import ModelServer

log = logging.getLogger(__name__)


def _bool_flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


_LIMIT_FLAGS = [  # Limits fields, as flags (docs/serving.md, "Limits")
    ("max_request_bytes", int, "largest REST body / gRPC message (bytes)"),
    ("max_string_bytes", int, "largest string element of a request: a text or a serialized tf.Example (bytes)"),
    ("max_request_rows", int, "rows (instances, examples, batch size) per request"),
    ("max_new_tokens", int, "largest max_new_tokens a generation request may ask for"),
    ("max_concurrent_requests", int, "requests running the model at once (REST + gRPC); others wait"),
    ("request_timeout_seconds", float, "a request that cannot start within this time fails DEADLINE_EXCEEDED"),
    ("rest_max_connections", int, "open REST connections; one more gets 503"),
    ("rest_idle_timeout_seconds", float, "a silent REST connection is closed after this many seconds"),
    ("grpc_max_concurrent_rpcs", int, "in-flight gRPC calls; more fail RESOURCE_EXHAUSTED"),
]


def set_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """TF Serving's --tensorflow_{intra,inter}_op_parallelism (0 = TensorFlow's
    default). Must run before TensorFlow runs its first op."""
    for value, setter in ((intra_op, tf.config.threading.set_intra_op_parallelism_threads),
                          (inter_op, tf.config.threading.set_inter_op_parallelism_threads)):
        if value < 0:
            raise ValueError(f"thread counts must be >= 0 (0 = default), got {value}")
        if value:
            setter(value)


def build_parser() -> argparse.ArgumentParser:
    """The server's flags (`tensorflow_model_server`'s names, plus the limits)."""
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port, -1 = off)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 = any free port, -1 = off)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1 only)")
    p.add_argument("--model_name", default="default", help="model name with --model_base_path")
    p.add_argument("--model_base_path", help="the model's directory (holding version directories 1/, 2/, ...)")
    p.add_argument("--model_config_file", help="ModelServerConfig text proto (see serving/models.config)")
    p.add_argument("--enable_batching", type=_bool_flag, nargs="?", const=True, default=False,
                   help="batch concurrent requests")
    p.add_argument("--batching_parameters_file", help="BatchingParameters text proto (see serving/batching.config)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="interval between polls for new versions (0 = load once)")
    p.add_argument("--enable_model_warmup", type=_bool_flag, nargs="?", const=True, default=True,
                   help="replay assets.extra/tf_serving_warmup_requests on load")
    p.add_argument("--monitoring_config_file", help="MonitoringConfig text proto (its Prometheus path is used)")
    p.add_argument("--grpc_max_threads", type=int, default=16, help="gRPC worker threads")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads one op (a matmul) may use; 0 = TensorFlow's default (all cores)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="threads that run independent ops of one call; 0 = TensorFlow's default")
    for name, kind, help_text in _LIMIT_FLAGS:
        p.add_argument(f"--{name}", type=kind, default=getattr(Limits, name), help=help_text)
    p.add_argument("--port_file", help="write {\"grpc_port\": N, \"rest_api_port\": M} here once serving")
    p.add_argument("--log_level", default="INFO", help="Python logging level (request logs are INFO)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serves until SIGINT/SIGTERM; returns the exit status (2: bad flags or config)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if bool(args.model_config_file) == bool(args.model_base_path):
            raise ConfigError("pass exactly one of --model_config_file or --model_base_path")
        model_config = (read_model_config(args.model_config_file) if args.model_config_file
                        else model_config_from_flags(args.model_name, args.model_base_path))
        set_tensorflow_threads(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
        batching = None
        if args.enable_batching:
            batching = (read_batching_parameters(args.batching_parameters_file) if args.batching_parameters_file
                        else BatchingParameters())
        server = ModelServer(model_config, args.host, args.port, args.rest_api_port, batching,
                             args.file_system_poll_wait_seconds,
                             Limits(**{name: getattr(args, name) for name, _, _ in _LIMIT_FLAGS}),
                             read_metrics_path(args.monitoring_config_file), args.grpc_max_threads,
                             args.enable_model_warmup)
        server.start()
    except (ConfigError, OSError, ValueError) as err:
        log.error("%s", err)
        return 2
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"grpc_port": server.grpc_port, "rest_api_port": server.rest_port}, f)
        os.replace(tmp, args.port_file)  # readers never see a partial file
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    log.info("shutting down")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
