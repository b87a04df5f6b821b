"""The server's side of the timestep-forcing pipeline.

:class:`PipelineGroup` is one start of the ranks (:mod:`.launch`): it sends the pipeline's
messages to rank 0 (one at a time, in order), reads what the last rank hands back on a thread of
its own and completes the waiting futures. The same thread watches every rank: a rank whose
process ends or whose connection closes fails the group, every request in flight fails with an
:class:`~liveface.errors.EngineError` that names the rank, and the remaining ranks are stopped.

:class:`PipelineDenoiser` is what an engine uses (it has the engine's ``BlockDenoiser`` shape):
sessions are opened on the current group; when a group fails, a new one is started at once, the
sessions of the failed group end (their caches died with it) and new sessions open on the new one,
so the server keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

import torch

from liveface.engines.diffusion.parallel.launch import LAUNCHERS, Launch, free_port
from liveface.engines.diffusion.parallel.rank import ModelSource, RankSetup
from liveface.engines.diffusion.parallel.wire import Kind, Message, post
from liveface.engines.diffusion.streaming.liveavatar import BlockWork, LiveAvatarSampling
from liveface.errors import ConfigError, EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline is laid out.

    Attributes:
        ranks: DiT processes; the steps are split into that many consecutive runs (4 ranks of
            the 4-step LiveAvatar: one step each).
        launcher: ``spawn`` or ``torchrun``.
        devices: each rank's device; None: ``cuda:<rank>`` when CUDA has that many devices,
            else the CPU.
        threads: CPU threads per rank (None: torch's default).
        start_timeout_s: how long the ranks may take to start and load.
        warm_up: latent ``(height, width)`` of a block each rank runs once before it reports
            ready (compiles, allocates); None: no warm-up.
    """

    ranks: int = 4
    launcher: str = "spawn"
    devices: tuple[str, ...] | None = None
    threads: int | None = None
    start_timeout_s: float = 900.0
    warm_up: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.ranks < 1 or self.launcher not in LAUNCHERS:
            raise ConfigError(f"pipeline ranks must be >= 1 and launcher one of {LAUNCHERS}")
        if self.devices is not None and len(self.devices) != self.ranks:
            raise ConfigError(f"give one device per pipeline rank ({self.ranks})")

    def device(self, rank: int) -> str:
        if self.devices is not None:
            return self.devices[rank]
        if torch.cuda.is_available() and torch.cuda.device_count() >= self.ranks:
            return f"cuda:{rank}"
        return "cpu"


def split_steps(steps: int, ranks: int) -> list[range]:
    """Consecutive runs of steps, one per rank, as even as possible (earlier ranks get more)."""
    if not 1 <= ranks <= steps:
        raise ConfigError(f"{ranks} pipeline ranks for {steps} steps: use 1..{steps} ranks")
    out, start = [], 0
    for r in range(ranks):
        n = steps // ranks + (1 if r < steps % ranks else 0)
        out.append(range(start, start + n))
        start += n
    return out


class PipelineGroup:
    """One start of the ranks (see the module docstring).

    Args:
        on_fail: called (on the watching thread) once the group has failed.
    """

    def __init__(
        self,
        source: ModelSource,
        sampling: LiveAvatarSampling,
        config: PipelineConfig,
        generation: int,
        on_fail: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.generation = generation
        self.steps = split_steps(sampling.steps, config.ranks)
        self.failed: str | None = None
        self._on_fail = on_fail
        self._pending_lock = threading.Lock()  # the futures; never held while sending
        self._send_lock = threading.Lock()  # one message at a time into rank 0
        self._pending: dict[tuple[Kind, Hashable], concurrent.futures.Future[Message]] = {}
        self._stopping = False
        port = free_port()
        self._launch = Launch(config.ranks, config.launcher, port)
        self._launch.start()
        conns = self._launch.accept(config.start_timeout_s)
        master = ("127.0.0.1", port) if config.launcher == "spawn" else None
        for r, conn in conns.items():
            conn.send(
                RankSetup(source, sampling, self.steps[r], config.ranks, config.device(r), master,
                          config.threads, config.warm_up)
            )  # fmt: skip
        for r, conn in conns.items():
            self._ready(r, conn, config.start_timeout_s)
        self._conns = conns
        self._head, self._tail = conns[0], conns[config.ranks - 1]
        self._thread = threading.Thread(target=self._watch, name="pipeline-watch", daemon=True)
        self._thread.start()

    def _ready(self, rank: int, conn: Connection, timeout: float) -> None:
        reply: tuple[object, ...] = ("no reply",)
        try:
            if conn.poll(timeout):
                reply = conn.recv()
        except (EOFError, OSError):
            reply = ("error", rank, "it exited while starting")
        if reply[0] != "ready":
            self._launch.end(0.0)
            why = reply[2] if reply[0] == "error" else f"not ready within {timeout:.0f} s"
            raise EngineError(f"LiveAvatar pipeline {self.describe(rank)} could not start: {why}")

    @property
    def pids(self) -> dict[int, int]:
        """Each rank's process id."""
        return dict(self._launch.pids)

    def describe(self, rank: int) -> str:
        s = self.steps[rank]
        steps = f"step {s.start}" if len(s) == 1 else f"steps {s.start}-{s.stop - 1}"
        return f"rank {rank} ({steps})"

    # -- requests -------------------------------------------------------------------------------
    def request(self, msg: Message) -> concurrent.futures.Future[Message]:
        """Send ``msg`` into the pipeline; the future holds what the last rank hands back."""
        fut: concurrent.futures.Future[Message] = concurrent.futures.Future()
        with self._pending_lock:
            if self.failed is not None:
                raise EngineError(f"{self.failed}; this session's stream ended")
            self._pending[(msg.kind, msg.ident)] = fut
        try:
            with self._send_lock:
                post(self._head, msg)
        except (OSError, EOFError, ValueError) as e:
            with self._pending_lock:
                self._pending.pop((msg.kind, msg.ident), None)
            why = self.failed or f"the LiveAvatar pipeline is gone ({e})"
            raise EngineError(f"{why}; this session's stream ended") from e
        return fut

    def post(self, msg: Message) -> None:
        """Send ``msg`` without waiting for it (a close)."""
        if self.failed is None:
            with self._send_lock, contextlib.suppress(OSError, EOFError, ValueError):
                post(self._head, msg)

    # -- the watching thread --------------------------------------------------------------------
    def _watch(self) -> None:
        ranks = {id(c): r for r, c in self._conns.items()}
        waitables: list[object] = [*self._conns.values(), *self._launch.sentinels()]
        while True:
            ready = wait(waitables, timeout=1.0)  # type: ignore[arg-type]
            why = [
                f"{self.describe(r) if r is not None else 'torchrun'} exited with code {code}"
                for r, code in self._launch.exited()
            ]
            for c in ready:
                if not isinstance(c, Connection):
                    continue
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    why.append(f"{self.describe(ranks[id(c)])} closed its connection")
                    continue
                if c is self._tail and isinstance(msg, Message):
                    if msg.kind is Kind.STOP:
                        return
                    self._deliver(msg)
                elif isinstance(msg, tuple) and msg[0] == "error":
                    why.append(f"{self.describe(int(msg[1]))} failed: {msg[2]}")
            if why:
                self._fail(why)
                return

    def _deliver(self, msg: Message) -> None:
        kind = msg.about if msg.kind is Kind.FAILED else msg.kind
        with self._pending_lock:
            fut = self._pending.pop((kind, msg.ident), None) if kind is not None else None
        if fut is None:
            return  # a close, or a request nobody waits for any more
        if msg.kind is Kind.FAILED:
            fut.set_exception(EngineError(f"LiveAvatar pipeline {msg.error}"))
        else:
            fut.set_result(msg)

    def _fail(self, why: list[str]) -> None:
        with self._pending_lock:
            if self._stopping:
                return
            self.failed = "LiveAvatar pipeline " + "; ".join(dict.fromkeys(why))
            pending, self._pending = list(self._pending.values()), {}
        log.error("%s: its sessions end", self.failed)
        for fut in pending:
            fut.set_exception(EngineError(f"{self.failed}; this session's stream ended"))
        self._launch.end(0.0)
        if self._on_fail is not None:
            self._on_fail()

    def stop(self) -> None:
        """Stop the ranks (politely, then by force)."""
        with self._pending_lock:
            self._stopping = True
        if self.failed is None:
            with self._send_lock, contextlib.suppress(OSError, EOFError, ValueError):
                post(self._head, Message(Kind.STOP))
        if threading.current_thread() is not self._thread:
            self._thread.join(10.0)
        self._launch.end(5.0)


class PipelineDenoiser:
    """Blocks through a :class:`PipelineGroup`, restarted when a rank fails (module docstring)."""

    def __init__(
        self, source: ModelSource, sampling: LiveAvatarSampling, config: PipelineConfig
    ) -> None:
        self.source, self.sampling, self.config = source, sampling, config
        self._generations = itertools.count()
        self._batches = itertools.count()
        self._lock = threading.Lock()
        self._keys: dict[Hashable, int] = {}
        self._shut = False
        self._group = self._start()

    @property
    def alive(self) -> bool:
        return self._group.failed is None

    @property
    def group(self) -> PipelineGroup:
        """The current start of the ranks (a new one after a failure)."""
        return self._group

    def _start(self) -> PipelineGroup:
        return PipelineGroup(
            self.source, self.sampling, self.config, next(self._generations), self._restart_soon
        )

    def _restart_soon(self) -> None:
        """A group failed: start the next one now, so that new sessions need not wait."""
        threading.Thread(target=self._quietly_current, name="pipeline-restart", daemon=True).start()

    def _quietly_current(self) -> None:
        if self._shut:
            return
        try:
            self._current()
        except EngineError:
            log.exception("the LiveAvatar pipeline could not be started again")

    def _current(self) -> PipelineGroup:
        """The running group; a failed one is replaced (its sessions have ended)."""
        with self._lock:
            if self._group.failed is not None:
                log.warning("starting the LiveAvatar pipeline again after: %s", self._group.failed)
                self._group.stop()
                self._group = self._start()
            return self._group

    def open(
        self, key: Hashable, text: torch.Tensor, reference: torch.Tensor, motion: torch.Tensor
    ) -> None:
        group = self._current()
        group.request(Message(Kind.OPEN, key, tensors=[text, reference, motion])).result()
        self._keys[key] = group.generation

    def close(self, key: Hashable) -> None:
        generation = self._keys.pop(key, None)
        group = self._group
        if generation == group.generation:
            group.post(Message(Kind.CLOSE, key))

    def run(self, works: list[BlockWork]) -> None:
        group = self._group
        for w in works:
            if self._keys.get(w.key) != group.generation:
                why = group.failed or "the LiveAvatar pipeline was restarted"
                raise EngineError(f"{why}; this session's stream ended")
        batch = next(self._batches)
        done = group.request(Message(Kind.RUN, batch, works=works)).result()
        for w, d in zip(works, done.works, strict=True):
            w.latents, w.step, w.tokens, w.features, w.reference = (
                d.latents,
                d.step,
                None,
                None,
                None,
            )

    def shutdown(self) -> None:
        """Stop the ranks (every lane calls this; the first call does it)."""
        with self._lock:
            if not self._shut:
                self._shut = True
                self._group.stop()
