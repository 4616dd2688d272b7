"""``python -m server``: the echostat server alone (the ``echostat`` command adds `probe`)."""

import sys

from server.cli import main

if __name__ == "__main__":
    sys.exit(main())
