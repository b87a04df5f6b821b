"""An engine in a child process, behind the engine contract: past the GIL.

The event loop's process keeps the transports, sessions and pacing; the engine's Python and native
work run in ``engine_processes`` children, each with its own GIL, so sessions at real time grow
with cores. :class:`ProcessEngine` is the proxy the EngineWorker drives like any engine:

- requests and small results (audio chunks, chunk metadata) travel over a pipe, pickled;
- frames travel through shared memory: the child writes a batch's frames into its arena (one
  ``SharedMemory`` block, grown when a batch needs more) and the proxy copies them out, so a
  512x512 frame costs one ``memcpy`` instead of pickling;
- one request at a time per child (a lock), as the contract asks nothing more of an engine;
- a child that dies fails the calls in flight with :class:`~liveface.errors.EngineError` (its
  sessions end, the server keeps serving) and is started again on the next ``open``.

Children are started with the ``spawn`` method: they share no threads, locks or event loops with
the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from liveface.engines.base import AudioChunk, Engine, EngineSpec, EngineState, VideoChunk
from liveface.errors import EngineError
from liveface.runtime.memory import trim_heap

log = logging.getLogger(__name__)

#: Builds the engine inside the child (module-level and picklable, e.g. ``functools.partial``).
EngineFactory = Callable[[], Engine]
#: How long a child may take to start and build its engine before the server gives up.
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RemoteState(EngineState):
    """A session's state as the proxy sees it: the key of the real state in the child."""

    key: int


@dataclass(frozen=True)
class _Frames:
    """Where a chunk's frames lie in the child's arena: ``(num_frames, height, width, 3)``."""

    arena: str
    offset: int
    shape: tuple[int, ...]


class ProcessEngine(Engine):
    """An engine running in a child process (see the module docstring).

    Args:
        factory: builds the real engine in the child.
        label: names the child in logs and process listings.
    """

    def __init__(self, factory: EngineFactory, label: str = "engine-0") -> None:
        self._factory = factory
        self.label = label
        self._lock = threading.Lock()
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._arenas: dict[str, SharedMemory] = {}
        self._generation = 0  # bumped at every (re)start: older states belong to a dead child
        self._spec: EngineSpec | None = None
        self._levels: list[str] = ["full"]
        self._quality = 0
        self.name = "process"
        self._start()

    # -- lifecycle -----------------------------------------------------------------------------

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._generation += 1
        # Arena names are ours to know: after a crash we can unlink one the child made but
        # never told us about (it died inside the call that made it).
        self._prefix = f"lf{os.getpid()}-{self.label}-{self._generation}-"
        self._arena_seen = -1
        proc = ctx.Process(
            target=_child_main,
            args=(child, self._factory, self._prefix, _logging_setup()),
            name=self.label,
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        if not parent.poll(START_TIMEOUT_S):
            self._stop()
            raise EngineError(f"{self.label} did not start within {START_TIMEOUT_S:.0f} s")
        try:
            spec, levels, name = self._reply()
        except EngineError:
            self._stop()
            raise
        self._spec, self._levels, self.name = spec, levels, name
        if self._quality:
            self._request("set_quality", self._quality)

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5.0)
            self._proc = None
        for shm in self._arenas.values():
            shm.close()
        self._arenas.clear()
        # The child unlinks its arena when it ends; one that crashed leaves it to us.
        for k in range(self._arena_seen + 2):
            with contextlib.suppress(FileNotFoundError):
                SharedMemory(name=f"{self._prefix}{k}").unlink()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def shutdown(self) -> None:
        with self._lock:
            if self._conn is not None and self.alive:
                with contextlib.suppress(OSError, EOFError):
                    self._conn.send(("shutdown", ()))
            self._stop()

    # -- the pipe ------------------------------------------------------------------------------

    def _reply(self) -> Any:
        assert self._conn is not None
        try:
            ok, value = self._conn.recv()
        except (EOFError, OSError) as e:
            self._stop()
            raise EngineError(f"{self.label} exited; its sessions end") from e
        if not ok:
            raise value
        return value

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            return self._request(op, *args)

    def _request(self, op: str, *args: Any) -> Any:
        """Send one request and wait for its reply (the caller holds the lock)."""
        if not self.alive or self._conn is None:
            self._stop()  # a child that died between calls: free what it left behind
            raise EngineError(f"{self.label} is not running; its sessions end")
        try:
            self._conn.send((op, args))
        except (OSError, EOFError) as e:
            self._stop()
            raise EngineError(f"{self.label} exited; its sessions end") from e
        return self._reply()

    def _key(self, state: EngineState) -> int:
        if not isinstance(state, RemoteState):
            raise EngineError("not a session of this engine")
        return state.key

    # -- the contract --------------------------------------------------------------------------

    @property
    def spec(self) -> EngineSpec:
        assert self._spec is not None
        return self._spec

    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any]
    ) -> EngineState:
        if not self.alive:
            with self._lock:
                if not self.alive:
                    log.warning("%s is not running: starting it again", self.label)
                    self._stop()
                    self._start()
        key = self._call("open", portrait, prompt, dict(options))
        return RemoteState(key)

    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        items = [(self._key(state), chunk) for state, chunk in batch]
        results: list[tuple[_Frames, VideoChunk]] = self._call("generate", items)
        out = []
        for where, chunk in results:
            arena = self._arena(where.arena)
            size = int(np.prod(where.shape))
            view: np.ndarray = np.ndarray(
                where.shape, np.uint8, buffer=arena.buf, offset=where.offset
            )
            frames = view.copy() if size else np.zeros(where.shape, np.uint8)
            out.append(dataclasses.replace(chunk, frames=frames))
        return out

    def _arena(self, name: str) -> SharedMemory:
        shm = self._arenas.get(name)
        if shm is None:
            self._arena_seen = max(self._arena_seen, int(name.rsplit("-", 1)[1]))
            for old in self._arenas.values():  # the child grew its arena: the old one is gone
                old.close()
            self._arenas.clear()
            # The child's resource tracker is this process's: attaching registers the name once
            # more (a set), and the child's unlink (or ours, after a crash) unregisters it.
            shm = self._arenas[name] = SharedMemory(name=name)
        return shm

    def interrupt(self, state: EngineState) -> None:
        self._call("interrupt", self._key(state))

    def close(self, state: EngineState) -> None:
        if self.alive:
            self._call("close", self._key(state))

    def describe(self, state: EngineState) -> dict[str, Any]:
        facts: dict[str, Any] = self._call("describe", self._key(state))
        return facts

    def quality_levels(self) -> list[str]:
        return list(self._levels)

    def set_quality(self, level: int) -> None:
        self._quality = level
        self._call("set_quality", level)


# -- the child ------------------------------------------------------------------------------------


class _Arena:
    """The child's shared frame buffer; replaced by a larger one when a batch needs more.

    Its blocks are named ``prefix`` + a counter, so that the server can find one after a crash."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0
        self.shm: SharedMemory | None = None

    def place(self, chunks: list[VideoChunk]) -> list[_Frames]:
        need = sum(c.frames.nbytes for c in chunks)
        if self.shm is None or self.shm.size < need:
            self.release()
            name = f"{self.prefix}{self.count}"
            self.count += 1
            self.shm = SharedMemory(name=name, create=True, size=max(need, 1 << 20))
        places, offset = [], 0
        for c in chunks:
            frames = np.ascontiguousarray(c.frames, dtype=np.uint8)
            dst: np.ndarray = np.ndarray(frames.shape, np.uint8, buffer=self.shm.buf, offset=offset)
            dst[...] = frames
            places.append(_Frames(self.shm.name, offset, frames.shape))
            offset += frames.nbytes
        return places

    def release(self) -> None:
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
            self.shm = None


def _logging_setup() -> tuple[int, str | None]:
    """The server's log level and format, for the child to log alike."""
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else None
    return root.level, None if formatter is None else formatter._fmt


def _child_main(
    conn: Connection, factory: EngineFactory, prefix: str, logs: tuple[int, str | None]
) -> None:
    """The child's loop: build the engine, then serve requests until told to stop."""
    level, fmt = logs
    if fmt is not None:
        logging.basicConfig(level=level, format=fmt)
    try:
        engine = factory()
        conn.send((True, (engine.spec, engine.quality_levels(), engine.name)))
    except BaseException as e:
        _send_error(conn, e)
        return
    states: dict[int, EngineState] = {}
    arena = _Arena(prefix)
    next_key = 0
    try:
        while True:
            try:
                op, args = conn.recv()
            except (EOFError, OSError):
                break  # the server went away
            if op == "shutdown":
                break
            try:
                if op == "open":
                    states[next_key] = engine.open(*args)
                    value: Any = next_key
                    next_key += 1
                elif op == "generate":
                    batch = [(states[key], chunk) for key, chunk in args[0]]
                    chunks = engine.generate(batch)
                    places = arena.place(chunks)
                    empty = np.zeros((0, 0, 0, 3), np.uint8)
                    value = [
                        (p, dataclasses.replace(c, frames=empty))
                        for p, c in zip(places, chunks, strict=True)
                    ]
                elif op == "interrupt":
                    engine.interrupt(states[args[0]])
                    value = None
                elif op == "close":
                    state = states.pop(args[0], None)
                    if state is not None:
                        engine.close(state)
                    trim_heap()
                    value = None
                elif op == "describe":
                    value = engine.describe(states[args[0]])
                elif op == "set_quality":
                    engine.set_quality(args[0])
                    value = None
                else:
                    raise EngineError(f"unknown request {op!r}")
                conn.send((True, value))
            except Exception as e:
                _send_error(conn, e)
    finally:
        for state in states.values():
            with contextlib.suppress(Exception):
                engine.close(state)
        engine.shutdown()
        arena.release()


def _send_error(conn: Connection, error: BaseException) -> None:
    """Send an exception back; one that does not pickle becomes an :class:`EngineError`."""
    try:
        pickle.dumps(error)
        payload: BaseException = error
    except Exception:
        payload = EngineError(f"{type(error).__name__}: {error}")
    with contextlib.suppress(OSError, EOFError):
        conn.send((False, payload))
