"""The clients live apart from the server (issue 11, point 7): importing them
loads no server module (`serving.server` and everything under it)."""
import subprocess
import sys


def test_clients_import_no_server_module():
    code = ("import sys\n"
            "from serving.clients import RestClient, GrpcClient\n"
            "import serving.clients.cli, serving.clients.__main__\n"
            "print(sorted(m for m in sys.modules if m == 'serving.server' or m.startswith('serving.server.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
