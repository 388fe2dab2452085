"""``python -m qemlflow`` runs the CLI."""

import sys

from qemlflow.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
