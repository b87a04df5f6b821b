"""Polling for conditions instead of sleeping a fixed time (CI machines are shared and noisy)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Generous: a condition that holds is seen within milliseconds; this only bounds a hang.
DEFAULT_TIMEOUT_S = 20.0


async def wait_until(
    condition: Callable[[], object], within: float = DEFAULT_TIMEOUT_S, interval: float = 0.01
) -> None:
    """Return as soon as ``condition()`` is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s: {condition}")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], object], within: float = DEFAULT_TIMEOUT_S, interval: float = 0.01
) -> None:
    """:func:`wait_until` for code without an event loop."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s: {condition}")
        time.sleep(interval)
