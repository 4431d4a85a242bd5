"""TF Serving clients, a local TF-Serving-compatible server, and server configs.

Clients (import no server module):
  clients/         RestClient (standard library only), GrpcClient (tensorflow-serving-api
                   stubs), the CLI `python -m serving.clients`
  example_json.py  the JSON form of tf.Example features, shared by clients and server

Server (`python -m serving.server`, REST 8501 + gRPC 8500):
  server.py        flags and start-up
  core.py          protocol-neutral Predict/Classify/Regress, warm-up, metrics hooks
  limits.py        request bounds: bytes, rows, generation length, concurrency, deadlines
  manager.py       version discovery, version policies, labels, load/unload
  servable.py      one loaded SavedModel version: signatures, input checks, warm-up
  batching.py      server-side batching of concurrent requests
  rest.py          REST routes -> core;  http_server.py  the HTTP transport
  grpc_service.py  gRPC services;  codec.py  JSON / TensorProto <-> numpy, with bounds
  config.py        model config / batching / monitoring files;  metrics.py  Prometheus (prometheus_client)
  models.config, batching.config, monitoring.config   configs for both servers

See docs/serving.md.
"""
