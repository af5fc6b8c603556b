"""``python -m pixelis_ros`` = the ``pixelis`` command (child processes use it: no PATH lookup).

Guarded: spawned workers (``bench fuzz``) re-import the main module and must not rerun it.
"""

import sys

from pixelis_ros.cli import main

if __name__ == "__main__":
    sys.exit(main())
