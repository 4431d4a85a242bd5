"""`python -m serving.clients`: the command-line client (`serving.clients.cli`)."""
import sys

from serving.clients.cli import main

if __name__ == "__main__":
    sys.exit(main())
