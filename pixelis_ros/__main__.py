"""``python -m pixelis_ros`` = the ``pixelis`` command (child processes use it: no PATH lookup)."""

import sys

from pixelis_ros.cli import main

sys.exit(main())
