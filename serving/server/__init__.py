"""The local TF-Serving-compatible server: `python -m serving.server`
(REST 8501 + gRPC 8500); see docs/serving.md.

  cli.py           flags and start-up (`__main__.py` runs it)
  model_server.py  ModelServer: REST + gRPC front ends over one core
  core.py          protocol-neutral Predict/Classify/Regress, warm-up, metrics hooks
  limits.py        request bounds: bytes, rows, generation length, concurrency, deadlines
  manager.py       version discovery, version policies, labels, load/unload
  servable.py      one loaded SavedModel version: signatures, input checks, warm-up
  batching.py      server-side batching of concurrent requests
  rest.py          REST routes -> core;  http_server.py  the HTTP transport
  grpc_service.py  gRPC services;  codec.py  JSON / TensorProto <-> numpy, with bounds
  config.py        model config / batching / monitoring files;  metrics.py  Prometheus (prometheus_client)
  errors.py        ServingError: TF Serving's status codes, in their HTTP and gRPC forms

The configs it reads (`serving/*.config`) are shared with
`tensorflow_model_server`, so they sit beside this package, not in it.
"""
