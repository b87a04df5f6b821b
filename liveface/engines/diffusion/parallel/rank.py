"""One rank of the timestep-forcing pipeline: a process that owns some denoising steps.

A rank is started by the server (``multiprocessing`` spawn) or by ``torchrun`` (which sets
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``); either way it connects back to the
server's private listener (address and key in ``LIVEFACE_PIPELINE_ADDRESS`` /
``LIVEFACE_PIPELINE_AUTHKEY``), receives its :class:`RankSetup`, builds its model, joins the
process group and then handles the pipeline's messages in order:

- rank 0 reads them from the server, every other rank from the rank before it;
- each rank does its part (``OPEN``: prefill the sink, allocate its step caches; ``RUN``: its
  steps of every block in the batch; ``CLOSE``: free) and passes the message on; the last rank
  hands it back to the server;
- an exception becomes a ``FAILED`` message that the later ranks pass on unchanged.

A rank ends on ``STOP``, or when the server goes away (its connection closes).

    torchrun --nproc_per_node 4 -m liveface.engines.diffusion.parallel.rank
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Client, Connection
from typing import Protocol

import torch
import torch.distributed as dist

from liveface.engines.diffusion.dit.s2v.causal import CausalS2V
from liveface.engines.diffusion.parallel.wire import Kind, Message, post, recv, send, take
from liveface.engines.diffusion.streaming.liveavatar import LiveAvatarSampling, StepRunner

log = logging.getLogger(__name__)

ADDRESS_ENV = "LIVEFACE_PIPELINE_ADDRESS"
AUTHKEY_ENV = "LIVEFACE_PIPELINE_AUTHKEY"
#: How long a rank waits in a collective before giving up (the server notices far sooner).
GROUP_TIMEOUT = timedelta(minutes=10)


class ModelSource(Protocol):
    """Builds a rank's model (picklable: it travels to the rank)."""

    def build(self, device: torch.device) -> CausalS2V: ...


@dataclass(frozen=True)
class RankSetup:
    """What the server tells a rank.

    Attributes:
        source: the model.
        sampling: the streaming settings (the schedule).
        steps: the denoising steps this rank runs.
        world: ranks in the pipeline.
        device: this rank's device (``cpu`` or ``cuda:N``).
        master: the rendezvous ``(address, port)`` when the server launched the rank itself
            (torchrun gives its own).
        threads: CPU threads of this rank (None: torch's default).
        warm_up: latent ``(height, width)`` of a throw-away block run before reporting ready.
    """

    source: ModelSource
    sampling: LiveAvatarSampling
    steps: range
    world: int
    device: str
    master: tuple[str, int] | None = None
    threads: int | None = None
    warm_up: tuple[int, int] | None = None


def _watch_server(conn: Connection) -> None:
    """Exit when the server's connection closes (nothing else is ever sent on it to this rank)."""
    with contextlib.suppress(EOFError, OSError):
        conn.recv()
    os._exit(0)


def _handle(msg: Message, runner: StepRunner, rank: int) -> Message:
    """Do this rank's part of ``msg``; an exception turns it into ``FAILED``."""
    try:
        if msg.kind is Kind.OPEN:
            text, reference, motion = msg.tensors
            runner.open(msg.ident, text, reference, motion)
        elif msg.kind is Kind.RUN:
            runner.run(msg.works)
        elif msg.kind is Kind.CLOSE:
            runner.close(msg.ident)
        return msg
    except Exception as e:  # any failure is reported in order, the rank keeps serving
        log.exception("pipeline rank %d failed on %s %s", rank, msg.kind.value, msg.ident)
        if msg.kind is Kind.OPEN:
            runner.close(msg.ident)
        steps = f"steps {runner.steps.start}-{runner.steps.stop - 1}"
        return Message(
            Kind.FAILED, msg.ident, error=f"rank {rank} ({steps}): {type(e).__name__}: {e}",
            about=msg.kind,
        )  # fmt: skip


def serve(conn: Connection, setup: RankSetup, rank: int) -> None:
    """The rank's loop (see the module docstring)."""
    device = torch.device(setup.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if setup.threads is not None:
        torch.set_num_threads(setup.threads)
    runner = StepRunner(setup.source.build(device), setup.sampling, setup.steps)
    if setup.warm_up is not None and (device.type == "cuda" or runner.causal.functions.steps):
        runner.warm_up(*setup.warm_up)
    if setup.master is not None:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = setup.master[0], str(setup.master[1])
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=setup.world, timeout=GROUP_TIMEOUT)
    last = rank == setup.world - 1
    conn.send(("ready", rank))
    if rank != 0:
        threading.Thread(target=_watch_server, args=(conn,), daemon=True).start()
    while True:
        if rank == 0:
            try:
                msg = take(conn).to(device)
            except (EOFError, OSError):
                break
        else:
            msg = recv(rank - 1, device)
        if msg.kind is not Kind.FAILED and msg.kind is not Kind.STOP:
            msg = _handle(msg, runner, rank)
        if last:
            post(conn, msg.to("cpu"))
        else:
            send(msg, rank + 1, device)
        if msg.kind is Kind.STOP:
            break
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def rank_entry(address: str, authkey: bytes, rank: int | None = None) -> None:
    """Connect to the server and serve (``rank`` None: from ``RANK``, as torchrun sets it)."""
    logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(message)s")
    rank = int(os.environ["RANK"]) if rank is None else rank
    conn = Client(address, authkey=authkey)
    conn.send(("hello", rank, os.getpid()))
    setup = conn.recv()
    try:
        serve(conn, setup, rank)
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(("error", rank, f"{type(e).__name__}: {e}"))
        raise


def main() -> None:
    """torchrun's entry: the server's address and key come from the environment."""
    rank_entry(os.environ[ADDRESS_ENV], bytes.fromhex(os.environ[AUTHKEY_ENV]))


if __name__ == "__main__":
    main()
