"""A lossy, jittery, reordering uplink for loopback tests (kernel netem is not available here).

It wraps the client's DTLS transport: every outgoing RTP packet (RTCP passes untouched) is dropped
with probability ``loss``, otherwise sent after a random delay in ``[0, jitter_s)``, so packets
also overtake each other whenever their delays differ by more than the packet interval.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiortc import RTCPeerConnection


class LossyUplink:
    def __init__(self, loss: float, jitter_s: float, seed: int = 0) -> None:
        self.loss = loss
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.sent = 0
        self.dropped = 0
        self.reordered = 0
        self._last_due = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    def install(self, pc: RTCPeerConnection) -> None:
        """Wrap the transport of ``pc``'s senders (call after the connection is set up)."""
        for sender in pc.getSenders():
            transport = sender.transport
            if transport is None or getattr(transport, "_lossy", False):
                continue
            send = transport._send_rtp

            async def lossy(data: bytes, send: Any = send) -> None:
                if len(data) > 1 and 192 <= data[1] <= 223:  # RTCP (RFC 5761 demultiplexing)
                    await send(data)
                    return
                if self.rng.random() < self.loss:
                    self.dropped += 1
                    return
                loop = asyncio.get_running_loop()
                due = loop.time() + self.rng.random() * self.jitter_s
                self.reordered += due < self._last_due
                self._last_due = max(self._last_due, due)
                self.sent += 1

                async def later() -> None:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    await send(data)

                task = asyncio.ensure_future(later())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            transport._send_rtp = lossy
            transport._lossy = True
