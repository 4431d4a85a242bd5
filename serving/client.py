"""`python -m serving.client`: the command-line client (kept as the short
entry point; the code lives in `serving.clients.cli`)."""
import sys

from serving.clients.cli import RestClient, RestError, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
