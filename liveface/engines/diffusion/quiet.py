"""Loading through ``transformers`` without its console output.

``transformers`` prints a load report for every checkpoint whose keys differ from the class (the
official wav2vec2 is a CTC model, so its ``lm_head`` is "unexpected" on every start) and a progress
bar per load. The loaders here check the loading info themselves and raise on what matters, so
both are noise in a server's log: they are silenced while a loader runs, and the loading info goes
to debug logging.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """``transformers``' warnings and progress bars off for the duration (restored after)."""
    from transformers.utils import logging as tf_logging

    with _LOCK:
        level = tf_logging.get_verbosity()
        bars = tf_logging.is_progress_bar_enabled()
        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
        try:
            yield
        finally:
            tf_logging.set_verbosity(level)
            if bars:
                tf_logging.enable_progress_bar()
