"""``python -m loa`` = the ``loa`` command (one import of loa.cli, so its errors are caught)."""

import sys

from loa.cli import main

sys.exit(main())
