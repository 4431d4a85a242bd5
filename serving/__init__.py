"""TF Serving clients, a local TF-Serving-compatible server, and server configs.

  rest_client.py   RestClient: TF Serving's REST API (standard library only)
  grpc_client.py   GrpcClient: PredictionService + ModelService (tensorflow-serving-api stubs)
  client.py        `python -m serving.client`: command-line client
  server.py        `python -m serving.server`: local server (REST 8501 + gRPC 8500)
  core.py          protocol-neutral Predict/Classify/Regress, warm-up, metrics hooks
  manager.py       version discovery, version policies, labels, load/unload
  servable.py      one loaded SavedModel version: signatures and input checks
  batching.py      server-side batching of concurrent requests
  rest.py / grpc_service.py   the two front ends;  codec.py  JSON <-> tensors
  config.py        model config / batching / monitoring files;  metrics.py  Prometheus
  models.config, batching.config, monitoring.config   configs for both servers

See docs/serving.md.
"""
