"""`python -m serving.server --help`."""
import sys

from serving.server.cli import main

sys.exit(main())
