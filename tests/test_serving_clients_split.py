"""The clients live apart from the server (issue 11, point 7): importing them
loads no server module, and the old import paths still work, with a warning."""
import importlib
import subprocess
import sys
import warnings

import pytest

SERVER_MODULES = ["serving.batching", "serving.codec", "serving.config", "serving.core", "serving.errors",
                  "serving.grpc_service", "serving.http_server", "serving.limits", "serving.manager",
                  "serving.metrics", "serving.rest", "serving.servable", "serving.server"]


def test_clients_import_no_server_module():
    code = ("import sys\n"
            "from serving.clients import RestClient, GrpcClient\n"
            "import serving.clients.cli, serving.client\n"
            f"print([m for m in {SERVER_MODULES!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("old,new,name", [("serving.rest_client", "serving.clients.rest", "RestClient"),
                                          ("serving.grpc_client", "serving.clients.grpc_client", "GrpcClient")])
def test_old_client_paths_warn_and_alias_the_new_ones(old, new, name):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and new.split(".")[1] in str(w.message) for w in caught)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
