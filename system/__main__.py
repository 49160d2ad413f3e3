"""``python -m loa`` = the ``loa`` command (one import of system.cli, so its errors are caught)."""

import sys

from system.cli import main

sys.exit(main())
