"""The clients live apart from the server (issue 11, point 7): importing them
loads no server module."""
import subprocess
import sys

SERVER_MODULES = ["serving.batching", "serving.codec", "serving.config", "serving.core", "serving.errors",
                  "serving.grpc_service", "serving.http_server", "serving.limits", "serving.manager",
                  "serving.metrics", "serving.rest", "serving.servable", "serving.server"]


def test_clients_import_no_server_module():
    code = ("import sys\n"
            "from serving.clients import RestClient, GrpcClient\n"
            "import serving.clients.cli, serving.clients.__main__\n"
            f"print([m for m in {SERVER_MODULES!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"

