"""Deprecated: use `serving.clients.rest` (or `serving.clients.RestClient`)."""
import warnings

from serving.clients.rest import RestClient, RestError, model_path  # noqa: F401

warnings.warn("serving.rest_client is deprecated; import from serving.clients (serving.clients.rest)",
              DeprecationWarning, stacklevel=2)
