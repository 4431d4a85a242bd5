"""TF Serving clients, a local TF-Serving-compatible server, and server configs.

  clients/         RestClient (standard library only), GrpcClient (tensorflow-serving-api
                   stubs), the CLI `python -m serving.clients`; they import no server module
  server/          the local server, `python -m serving.server` (REST 8501 + gRPC 8500)
  example_json.py  the JSON form of tf.Example features, shared by clients and server
  models.config, batching.config, monitoring.config   configs for both servers
                   (the local one and `tensorflow_model_server`)

See docs/serving.md.
"""
