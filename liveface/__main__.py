"""``python -m liveface``: the same command line as ``liveface`` and ``run_avatar.py``."""

import sys

from liveface.cli import main

sys.exit(main())
