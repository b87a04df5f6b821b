"""A private avatar server in a subprocess: ``liveface serve --zmq ipc://... --no-http``.

    async with LocalServer(LocalServerConfig(engine="warp")) as server:
        async with AsyncClient(server.address) as client:
            session = await client.open()

The server runs in its own process (the engine never shares the caller's event loop or GIL) and
listens on an ``ipc://`` socket in a private temporary directory, so nothing is exposed on the
network. :meth:`LocalServer.start` returns once the server answers a ``PING``; :meth:`aclose`
stops it with SIGTERM (the server ends its sessions cleanly) and kills it if it does not exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import liveface
from liveface.client import AsyncClient
from liveface.errors import AvatarError, ConfigError

#: How often the starting server is pinged (each ping waits this long for its PONG).
PING_INTERVAL_S = 0.25
#: How long SIGTERM may take before the server is killed.
STOP_TIMEOUT_S = 10.0
#: Lines of the server's log quoted in an error.
LOG_TAIL_LINES = 15

ENGINES = ("warp", "diffusion")


class LocalServerError(AvatarError):
    """The local avatar server did not start, or exited; the message quotes its log."""

    code = "server_failed"


@dataclass(frozen=True)
class LocalServerConfig:
    """How to run the private server; ``None`` leaves a setting at the server's default.

    Attributes:
        engine: ``warp`` (CPU, no weights) or ``diffusion`` (needs ``checkpoint``).
        portrait: default portrait image path for sessions that bring none.
        size: output frame size ``(width, height)``.
        fps: output frame rate.
        chunk_frames: video frames per engine chunk (1: lowest latency).
        delay_ms: the server's output delay absorbing engine jitter.
        max_sessions: sessions the server accepts at once.
        checkpoint: diffusion checkpoint directory.
        config: a TOML server config file (flags above override it).
        extra_args: more ``liveface serve`` arguments, passed as given.
        python: the interpreter that runs ``-m liveface``.
        start_timeout_s: how long to wait for the first ``PONG`` (engine warm-up included).
        log_level: the server's logging level; its log goes to a file quoted in errors.
    """

    engine: str = "warp"
    portrait: str | None = None
    size: tuple[int, int] | None = None
    fps: int | None = None
    chunk_frames: int | None = None
    delay_ms: int | None = None
    max_sessions: int | None = None
    checkpoint: str | None = None
    config: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    python: str = sys.executable
    start_timeout_s: float = 120.0
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.start_timeout_s <= 0:
            raise ConfigError(f"start_timeout_s must be > 0, got {self.start_timeout_s}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ConfigError(f"size must be (width, height) in pixels, got {self.size!r}")
        if self.portrait is not None and not Path(self.portrait).is_file():
            raise ConfigError(f"portrait {self.portrait!r} is not a file")

    def command(self, address: str) -> list[str]:
        """The ``liveface serve`` command line binding ZeroMQ to ``address`` only."""
        cmd = [self.python, "-m", "liveface", "serve", "--no-http", "--zmq", address]
        cmd += ["--engine", self.engine, "--log-level", self.log_level]
        flags = {
            "--config": self.config,
            "--portrait": self.portrait,
            "--fps": self.fps,
            "--chunk-frames": self.chunk_frames,
            "--delay-ms": self.delay_ms,
            "--max-sessions": self.max_sessions,
            "--checkpoint": self.checkpoint,
            "--size": f"{self.size[0]}x{self.size[1]}" if self.size else None,
        }
        for flag, value in flags.items():
            if value is not None:
                cmd += [flag, str(value)]
        return cmd + list(self.extra_args)


class LocalServer:
    """One ``liveface serve`` subprocess on a private ``ipc://`` socket; ``start`` / ``aclose``."""

    def __init__(self, config: LocalServerConfig | None = None) -> None:
        self.config = config if config is not None else LocalServerConfig()
        #: The server's ZeroMQ address once :meth:`start` returned.
        self.address: str | None = None
        self._dir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._closing = False

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has ended (None while it runs)."""
        return self._proc.returncode if self._proc is not None else None

    @property
    def stopping(self) -> bool:
        """True once :meth:`aclose` was called (an exit is then expected)."""
        return self._closing

    async def start(self) -> str:
        """Start the server and wait until it answers a ``PING``; returns its address.

        Raises:
            LocalServerError: the process exited, or did not answer within ``start_timeout_s``.
        """
        if self._proc is not None:
            raise RuntimeError("this LocalServer was already started")
        # A short path: ipc:// socket paths are limited to about 100 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="liveface-"))
        address = f"ipc://{self._dir / 'zmq.sock'}"
        with self._open_log() as log_file:
            self._proc = await asyncio.create_subprocess_exec(
                *self.config.command(address),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                preexec_fn=_die_with_parent(),
            )
        try:
            await self._wait_ready(address)
        except BaseException:
            await self.aclose()
            raise
        self.address = address
        return address

    def _open_log(self) -> BinaryIO:
        assert self._dir is not None
        return open(self._dir / "server.log", "wb")  # the child keeps its own handle

    async def _wait_ready(self, address: str) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout_s
        async with AsyncClient(address, request_timeout_s=PING_INTERVAL_S) as client:
            while True:
                if self._proc.returncode is not None:
                    raise LocalServerError(
                        f"the avatar server exited with status {self._proc.returncode} while "
                        f"starting; its log ends with:\n{self.log_tail()}"
                    )
                if loop.time() > deadline:
                    raise LocalServerError(
                        f"the avatar server did not answer within {self.config.start_timeout_s} s "
                        f"(raise start_timeout_s for slow engines); its log ends with:\n"
                        f"{self.log_tail()}"
                    )
                with contextlib.suppress(TimeoutError):
                    await client.ping()
                    return

    async def wait(self) -> int:
        """Wait until the process exits; returns its status."""
        if self._proc is None:
            raise RuntimeError("the server was not started")
        return await self._proc.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log (stdout and stderr)."""
        if self._dir is None:
            return ""
        try:
            text = (self._dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    async def aclose(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period). Idempotent."""
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def __aenter__(self) -> LocalServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _child_env() -> dict[str, str]:
    """This environment, with the directory of this process's liveface first on the path, so
    the child runs the same code wherever it came from (an install, a checkout)."""
    env = dict(os.environ)
    root = str(Path(liveface.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> Callable[[], object] | None:
    """On Linux, a ``preexec_fn`` asking for SIGTERM when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``), so a killed parent leaves no server behind. Everything is
    looked up here, in the parent: the child between fork and exec only makes the call."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1
    return functools.partial(prctl, pr_set_pdeathsig, signal.SIGTERM)
