"""Messages of the timestep-forcing pipeline and how they travel between ranks.

Everything that moves through the pipeline is a :class:`Message`, handled in order by every rank:
``OPEN`` (prefill a session's sink, allocate its step caches), ``RUN`` (a batch of
:class:`~..streaming.liveavatar.BlockWork`), ``CLOSE``, ``FAILED`` (a rank could not do its part:
later ranks pass it on so the server hears of it in order) and ``STOP``.

Between ranks a message goes by ``torch.distributed`` point-to-point (gloo on CPU, NCCL between
GPUs): an int64 length, the pickled header (kind, ids, block numbers, offsets and each tensor's
dtype and shape) as a uint8 tensor, then the tensors themselves on the rank's device. Between the
server and the first and last ranks the same message is pickled over a local connection (tensors
on the CPU, pickled by value: :func:`post`, :func:`take`).
"""

from __future__ import annotations

import enum
import pickle
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.distributed as dist

from liveface.engines.diffusion.streaming.liveavatar import BlockWork


class Kind(enum.Enum):
    OPEN = "open"
    RUN = "run"
    CLOSE = "close"
    FAILED = "failed"
    STOP = "stop"


@dataclass
class Message:
    """One item of the pipeline's ordered stream.

    Attributes:
        kind: what to do.
        ident: the batch id (``RUN``, ``FAILED``) or the session key (``OPEN``, ``CLOSE``).
        works: the blocks of a ``RUN``.
        tensors: an ``OPEN``'s prompt embedding, reference and motion latents.
        error: why a ``FAILED`` failed (rank and exception).
        about: the kind of message that failed.
    """

    kind: Kind
    ident: Any = None
    works: list[BlockWork] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)
    error: str = ""
    about: Kind | None = None

    def to(self, device: torch.device | str) -> Message:
        """The same message with every tensor on ``device``."""
        for w in self.works:
            w.latents = w.latents.to(device)
            w.features = None if w.features is None else w.features.to(device)
            w.tokens = None if w.tokens is None else w.tokens.to(device)
            w.reference = None if w.reference is None else w.reference.to(device)
        self.tensors = [t.to(device) for t in self.tensors]
        return self


_WORK_TENSORS = ("latents", "features", "tokens", "reference")


def _flatten(msg: Message) -> tuple[dict[str, Any], list[torch.Tensor]]:
    tensors = list(msg.tensors)
    works = []
    for w in msg.works:
        present = []
        for name in _WORK_TENSORS:
            t = getattr(w, name)
            present.append(t is not None)
            if t is not None:
                tensors.append(t)
        works.append((w.key, w.block, w.offsets, w.step, present))
    head = {
        "kind": msg.kind.value, "ident": msg.ident, "error": msg.error,
        "about": None if msg.about is None else msg.about.value, "opened": len(msg.tensors),
        "works": works,
        "specs": [(str(t.dtype).removeprefix("torch."), tuple(t.shape)) for t in tensors],
    }  # fmt: skip
    return head, tensors


def _unflatten(head: dict[str, Any], tensors: list[torch.Tensor]) -> Message:
    it = iter(tensors[head["opened"] :])
    works = []
    for key, block, offsets, step, present in head["works"]:
        vals = {n: next(it) if p else None for n, p in zip(_WORK_TENSORS, present, strict=True)}
        works.append(BlockWork(key, block, offsets=tuple(offsets), step=step, **vals))  # type: ignore[arg-type]
    about = None if head["about"] is None else Kind(head["about"])
    return Message(
        Kind(head["kind"]), head["ident"], works, tensors[: head["opened"]], head["error"], about
    )


def post(conn: Connection, msg: Message) -> None:
    """Send ``msg`` (CPU tensors) over a server connection, by value: ``Connection.send`` would
    use torch's file-descriptor sharing, which needs both ends to share an authkey (a torchrun
    rank does not) and would alias the tensors."""
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def take(conn: Connection) -> Message:
    """Receive what :func:`post` sent."""
    msg = pickle.loads(conn.recv_bytes())
    if not isinstance(msg, Message):
        raise TypeError(f"expected a pipeline message, got {type(msg).__name__}")
    return msg


def send(msg: Message, dst: int, device: torch.device) -> None:
    """Send ``msg`` to rank ``dst`` (its tensors must be on ``device``, the backend's)."""
    head, tensors = _flatten(msg)
    data = torch.frombuffer(bytearray(pickle.dumps(head)), dtype=torch.uint8).to(device)
    dist.send(torch.tensor([data.numel()], dtype=torch.int64, device=device), dst)
    dist.send(data, dst)
    for t in tensors:
        dist.send(t.contiguous(), dst)


def recv(src: int, device: torch.device) -> Message:
    """Receive the next message from rank ``src`` onto ``device``."""
    size = torch.zeros(1, dtype=torch.int64, device=device)
    dist.recv(size, src)
    data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.recv(data, src)
    head = pickle.loads(data.cpu().numpy().tobytes())
    tensors = []
    for dtype, shape in head["specs"]:
        t = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        dist.recv(t, src)
        tensors.append(t)
    return _unflatten(head, tensors)
