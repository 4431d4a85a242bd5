"""TF Serving clients. They import no server module (see
tests/test_serving_clients_split.py), so they run wherever TF Serving does.

  rest.py         RestClient, RestError: the REST API (standard library only)
  grpc_client.py  GrpcClient: PredictionService + ModelService (tensorflow-serving-api stubs)
  cli.py          `python -m serving.clients` (__main__.py), or `python -m serving.clients.cli`

The JSON form of tf.Example features is shared with the server through
`serving.example_json`.
"""
from serving.clients.rest import RestClient, RestError, model_path


def __getattr__(name: str):
    # GrpcClient needs TensorFlow: import it only when asked for, so that the
    # REST client stays light.
    if name == "GrpcClient":
        from serving.clients.grpc_client import GrpcClient  # pylint: disable=g-import-not-at-top
        return GrpcClient
    raise AttributeError(f"module 'serving.clients' has no attribute {name!r}")


__all__ = ["RestClient", "RestError", "GrpcClient", "model_path"]
