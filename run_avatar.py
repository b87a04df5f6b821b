#!/usr/bin/env python3
"""The ``liveface`` command from a checkout: ``python run_avatar.py [serve|render] ...``."""

import sys

from liveface.cli import main

if __name__ == "__main__":
    sys.exit(main())
