"""Command-line client for TF Serving (real or `serving.server`), REST or gRPC.

    python -m serving.clients --model_name sentiment status      (or: python -m serving.clients.cli ...)
    python -m serving.clients --model_name sentiment predict "A great movie" "Dull"
    python -m serving.clients --model_name nli predict -i '{"premise": "...", "hypothesis": "..."}'
    python -m serving.clients --grpc 127.0.0.1:8500 --model_name sentiment classify "A great movie"
    python -m serving.clients --model_name gpt generate "Once upon a time" --max_new_tokens 20 --temperature 0.8

Prints JSON. Library use: `serving.clients.RestClient`,
`serving.clients.GrpcClient`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import numpy as np

from serving.clients.rest import RestClient, RestError

# gRPC pieces (and TensorFlow, which they need) load only for --grpc: the
# REST path of this command stays fast to start.
__all__ = ["RestClient", "RestError", "main"]
log = logging.getLogger("serving.clients")



def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _signature_inputs(args, rest: RestClient | None, grpc_client, signature: str) -> dict:
    """{input name: dtype name} of a signature, from the server's metadata."""
    if rest:
        defs = rest.metadata(args.model_name, args.version, args.label)["metadata"]["signature_def"]["signature_def"]
        sig = defs.get(signature or "serving_default")
        return {} if sig is None else {k: v["dtype"] for k, v in sig.get("inputs", {}).items()}
    from google.protobuf import json_format  # pylint: disable=g-import-not-at-top

    _, signature_map = grpc_client.metadata(args.model_name, args.version, args.label)
    sig = signature_map.signature_def.get(signature or "serving_default")
    return {} if sig is None else {k: json_format.MessageToDict(v)["dtype"] for k, v in sig.inputs.items()}


def _rows(args, inputs: dict) -> list[dict]:
    rows = [json.loads(i) for i in args.instance]
    if args.texts:
        strings = [name for name, dtype in inputs.items() if dtype == "DT_STRING"]
        if len(strings) != 1 or len(inputs) != 1:
            raise ValueError(f"positional texts need a signature with one string input; this one has {inputs}. "
                             "Use -i/--instance JSON")
        rows += [{strings[0]: t} for t in args.texts]
    if not rows:
        raise ValueError("nothing to send: give texts or -i/--instance JSON")
    return rows


def _predict(args, rest, grpc_client, rows: list[dict], signature: str) -> Any:
    if rest:
        return rest.predict(args.model_name, instances=rows, signature_name=signature, version=args.version,
                            label=args.label)["predictions"]
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top

    dtypes = {k: tf.dtypes.as_dtype(types_pb2.DataType.Value(v))
              for k, v in _signature_inputs(args, None, grpc_client, signature).items()}
    columns = {k: [row[k] for row in rows] for k in rows[0]}
    return grpc_client.predict(args.model_name, columns, signature, args.version, args.label, dtypes=dtypes)


def run(args) -> Any:
    rest = grpc_client = None
    if args.grpc:
        from serving.clients.grpc_client import GrpcClient  # pylint: disable=g-import-not-at-top
        grpc_client = GrpcClient(args.grpc, timeout=args.timeout)
    else:
        rest = RestClient(args.rest, timeout=args.timeout)
    client = rest or grpc_client
    name, version, label = args.model_name, args.version, args.label
    if args.command == "status":
        return client.status(name, version, label)
    if args.command == "metadata":
        if rest:
            return rest.metadata(name, version, label)
        from google.protobuf import json_format  # pylint: disable=g-import-not-at-top

        served, signature_map = grpc_client.metadata(name, version, label)
        return {"version": served, "signature_def": json_format.MessageToDict(signature_map)}
    if args.command == "predict":
        return _predict(args, rest, grpc_client, _rows(args, _signature_inputs(args, rest, grpc_client,
                                                                                args.signature_name)),
                        args.signature_name)
    if args.command in ("classify", "regress"):
        examples = [json.loads(e) for e in args.example]
        if args.texts:
            inputs = _signature_inputs(args, rest, grpc_client, "serving_default")
            if len(inputs) != 1:
                raise ValueError(f"positional texts need a one-field model; this one has {sorted(inputs)}. "
                                 "Use -e/--example JSON")
            examples += [{next(iter(inputs)): t} for t in args.texts]
        method = getattr(client, args.command)
        return method(name, examples, signature_name=args.signature_name or args.command, version=version,
                      label=label)
    if args.command == "generate":
        rows = [{"prompt": p, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                 "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed} for p in args.texts]
        return _predict(args, rest, grpc_client, rows, "generate")
    raise ValueError(f"unknown command {args.command}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.clients", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rest", default="http://127.0.0.1:8501", help="REST base URL (default)")
    p.add_argument("--grpc", help="use gRPC at HOST:PORT instead of REST")
    p.add_argument("--model_name", required=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--version", type=int, help="address a version")
    group.add_argument("--label", help="address a version label")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="model version status")
    sub.add_parser("metadata", help="signature definitions")
    pred = sub.add_parser("predict", help="Predict API (row format)")
    pred.add_argument("texts", nargs="*", help="texts, for a signature with one string input")
    pred.add_argument("-i", "--instance", action="append", default=[], help="one row as JSON (repeatable)")
    pred.add_argument("--signature_name", default="")
    for verb in ("classify", "regress"):
        cmd = sub.add_parser(verb, help=f"{verb.capitalize()} API (tf.Example input)")
        cmd.add_argument("texts", nargs="*", help="texts, for a one-field model")
        cmd.add_argument("-e", "--example", action="append", default=[], help="one example's features as JSON")
        cmd.add_argument("--signature_name", default="", help=f"default: {verb}")
    gen = sub.add_parser("generate", help="text generation (LM exports)")
    gen.add_argument("texts", nargs="+", help="prompts")
    gen.add_argument("--max_new_tokens", type=int, default=32)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top_k", type=int, default=0, help="0 = off")
    gen.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    gen.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        result = run(args)
    except RestError as err:
        print(json.dumps({"error": err.message, "http_status": err.status}), file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - grpc.RpcError, caught without importing grpc for REST
        if not (hasattr(err, "code") and hasattr(err, "details")):
            raise
        print(json.dumps({"error": err.details(), "code": err.code().name}), file=sys.stderr)
        return 1
    print(json.dumps(_jsonable(result), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
