"""Deprecated: use `serving.clients.grpc_client` (or `serving.clients.GrpcClient`)."""
import warnings

from serving.clients.grpc_client import GrpcClient, make_input, model_spec  # noqa: F401

warnings.warn("serving.grpc_client is deprecated; import from serving.clients (serving.clients.grpc_client)",
              DeprecationWarning, stacklevel=2)
