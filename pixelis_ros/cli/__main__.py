"""``python -m pixelis_ros.cli`` = the ``pixelis`` command (the tests run it so, no PATH lookup).

The guard matters: commands that spawn worker processes (``bench fuzz``) re-import this module
in each worker, which must not run the command again.
"""

import sys

from pixelis_ros.cli import main

if __name__ == "__main__":
    sys.exit(main())
