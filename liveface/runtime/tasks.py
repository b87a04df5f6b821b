"""Owned asyncio tasks (CONVENTIONS #10): every task has an owner that cancels it on close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """The tasks one object owns.

    Args:
        on_error: called with the exception of a task that failed (not cancelled); a failure is
            also logged. None: logging only.
    """

    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("task %s failed", task.get_name(), exc_info=error)
        if self._on_error is not None and error is not None:
            self._on_error(error)

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel every task but the caller's own; returns the cancelled ones."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        return tasks

    async def wait(self) -> None:
        """Wait until every task (and any they spawn meanwhile) has ended, cancelling none."""
        current = asyncio.current_task()
        while tasks := [t for t in self._tasks if t is not current]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel every task but the caller's own and wait until they have ended."""
        for t in self.cancel():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
