"""``python -m echostat``: the same as the ``echostat`` command."""

import sys

from echostat.cli import main

if __name__ == "__main__":
    sys.exit(main())
