"""Starting the ranks of a pipeline: by ``multiprocessing`` spawn, or by ``torchrun``.

Either way each rank connects back to a private listener of the server (a Unix socket in a
directory only this user can read, with a random key) and the server answers with its
:class:`~.rank.RankSetup`. The launch is one object (:class:`Launch`) that can tell whether its
processes still run and can end all of them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from pathlib import Path

from liveface.engines.diffusion.parallel.rank import ADDRESS_ENV, AUTHKEY_ENV, rank_entry
from liveface.errors import EngineError

LAUNCHERS = ("spawn", "torchrun")


def free_port() -> int:
    """A TCP port free on the loopback interface right now (for the rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Launch:
    """The processes of one pipeline start and the server's end of their connections.

    Args:
        ranks: processes to start.
        launcher: ``spawn`` (children of this process) or ``torchrun`` (one ``torchrun`` child
            that starts the ranks).
        port: the rendezvous port the ranks use.
    """

    def __init__(self, ranks: int, launcher: str, port: int) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}")
        self.ranks = ranks
        self.launcher = launcher
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="liveface-pipeline-"))
        os.chmod(self._dir, 0o700)
        self._authkey = os.urandom(32)
        self._listener = Listener(str(self._dir / "s"), "AF_UNIX", authkey=self._authkey)
        self.procs: list[mp.process.BaseProcess] = []
        self.torchrun: subprocess.Popen[bytes] | None = None
        #: Each rank's process id, as the rank reported it.
        self.pids: dict[int, int] = {}

    def start(self) -> None:
        address = str(self._dir / "s")
        if self.launcher == "spawn":
            ctx = mp.get_context("spawn")
            for r in range(self.ranks):
                p = ctx.Process(target=rank_entry, args=(address, self._authkey, r), daemon=True)
                p.start()
                self.procs.append(p)
            return
        env = dict(os.environ)
        env[ADDRESS_ENV], env[AUTHKEY_ENV] = address, self._authkey.hex()
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.ranks}",
            "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={self.port}",
            "--max_restarts=0", "-m", "liveface.engines.diffusion.parallel.rank",
        ]  # fmt: skip
        self.torchrun = subprocess.Popen(cmd, env=env, start_new_session=True)

    def accept(self, timeout: float) -> dict[int, Connection]:
        """Every rank's connection by rank (``hello`` read). A process that ends first, or a
        timeout, is an EngineError (everything started is stopped)."""
        conns: dict[int, Connection] = {}
        error: list[BaseException] = []

        def run() -> None:
            try:
                while len(conns) < self.ranks:
                    conn = self._listener.accept()
                    _, rank, pid = conn.recv()
                    conns[int(rank)] = conn
                    self.pids[int(rank)] = int(pid)
            except BaseException as e:
                error.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + timeout
        why = ""
        while t.is_alive() and not why:
            t.join(0.2)
            dead = [f"rank {r}" if r is not None else "torchrun" for r, _ in self.exited()]
            if dead:
                why = f"{', '.join(dead)} exited while starting"
            elif time.monotonic() > deadline:
                why = f"the ranks did not connect within {timeout:.0f} s"
        if why or error or len(conns) < self.ranks:
            self.end(0.0)
            raise EngineError(f"the LiveAvatar pipeline did not start: {why or error[0]}")
        return conns

    def exited(self) -> list[tuple[int | None, int]]:
        """``(rank, exit code)`` of every process that has ended (rank None: torchrun)."""
        out: list[tuple[int | None, int]] = [
            (r, p.exitcode) for r, p in enumerate(self.procs) if p.exitcode is not None
        ]
        if self.torchrun is not None and self.torchrun.poll() is not None:
            out.append((None, self.torchrun.returncode))
        return out

    def sentinels(self) -> list[int]:
        return [p.sentinel for p in self.procs]

    def end(self, grace: float = 3.0) -> None:
        """Stop every process (politely first) and remove the listener."""
        with contextlib.suppress(OSError):
            self._listener.close()
        deadline = time.monotonic() + grace
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join(5.0)
        if self.torchrun is not None:
            _end_group(self.torchrun, grace)
        shutil.rmtree(self._dir, ignore_errors=True)


def _end_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    killpg: Callable[[int, int], None] = os.killpg
    with contextlib.suppress(ProcessLookupError):
        killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)
