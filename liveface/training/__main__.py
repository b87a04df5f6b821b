"""``python -m liveface.training``: see :mod:`liveface.training.cli`."""

from liveface.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
