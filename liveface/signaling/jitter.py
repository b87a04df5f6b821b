"""The microphone's jitter buffer: small and adaptive, in whole Opus packets.

aiortc holds 4 Opus packets (80 ms) before decoding. On a healthy path that is pure latency, so
this buffer hands each packet on as soon as it is the next in sequence (``hold = 0``). It adapts
to the path:

- a missing packet is waited for while fewer than ``hold`` newer ones are waiting, then skipped
  (the ingest conceals the gap from the timestamps);
- a packet that arrives after it was skipped (reordering, not loss) is dropped and raises
  ``hold`` by one, up to ``max_hold``: the path reorders, so it pays to wait a little;
- after ``relax_packets`` packets without such a late arrival, ``hold`` steps back down, and the
  packet the lower hold no longer needs to wait for is dropped so the latency really falls.

Drops are reported through ``on_drop(packets)``; aiortc's receiver takes one frame per ``add``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

#: Skipped sequence numbers remembered, to tell a late packet from a stray one.
SKIPPED_KEPT = 64


def _after(a: int, b: int) -> int:
    """How far sequence number ``a`` is after ``b`` (negative: before), modulo 2**16."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


class AudioJitterBuffer(JitterBuffer):
    """See the module docstring.

    Args:
        hold: the least hold (packets waited for before a gap is skipped).
        max_hold: the most the hold may grow to on a reordering path.
        relax_packets: packets without a late arrival before the hold steps back down.
        on_drop: called with the number of packets dropped (late, or drained).
    """

    def __init__(
        self,
        hold: int = 0,
        max_hold: int = 4,
        relax_packets: int = 500,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(capacity=16, prefetch=hold)
        self.min_hold = hold
        self.max_hold = max(hold, max_hold)
        self.hold = hold
        self._relax = relax_packets
        self._calm = 0
        self._on_drop = on_drop
        self._expected: int | None = None
        self._waiting: dict[int, RtpPacket] = {}
        self._skipped: deque[int] = deque(maxlen=SKIPPED_KEPT)
        self.late = 0
        self.skipped = 0
        self.drained = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._expected is None:
            self._expected = seq
        if _after(seq, self._expected) < 0:
            self._late(seq)
            return False, None
        self._waiting[seq] = packet
        self._calm += 1
        if self._calm >= self._relax and self.hold > self.min_hold:
            self.hold -= 1
            self._calm = 0
        return False, self._pop()

    def _late(self, seq: int) -> None:
        """A packet whose turn has passed: dropped; if we skipped it, wait longer from now on."""
        self.late += 1
        self._drop(1)
        if seq in self._skipped:
            self.hold = min(self.max_hold, self.hold + 1)
            self._calm = 0

    def _drop(self, packets: int) -> None:
        if self._on_drop is not None and packets:
            self._on_drop(packets)

    def _pop(self) -> JitterFrame | None:
        assert self._expected is not None
        expected = self._expected
        packet = self._waiting.pop(expected, None)
        if packet is None and len(self._waiting) > self.hold:
            # The expected packet is missing and enough newer ones wait: skip to the oldest.
            seq = min(self._waiting, key=lambda s: _after(s, expected))
            for missing in range(_after(seq, expected)):
                self._skipped.append((expected + missing) & 0xFFFF)
            self.skipped += _after(seq, expected)
            packet = self._waiting.pop(seq)
            expected = seq
        if packet is None:
            return None
        expected = (expected + 1) & 0xFFFF
        if len(self._waiting) > self.hold and expected in self._waiting:
            # More waits than the hold needs (it just stepped down): drop one to catch up.
            del self._waiting[expected]
            self._skipped.append(expected)
            expected = (expected + 1) & 0xFFFF
            self.drained += 1
            self._drop(1)
        self._expected = expected
        return JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def tune_audio_jitter(
    pc: RTCPeerConnection, hold: int, on_drop: Callable[[int], None] | None = None
) -> list[AudioJitterBuffer]:
    """Install :class:`AudioJitterBuffer` on every audio receiver of ``pc``.

    aiortc exposes no setting for this, so the receiver's private buffer is replaced; the test
    suite checks that the attribute still exists in the installed aiortc.
    """
    buffers = []
    for t in pc.getTransceivers():
        if t.kind == "audio":
            attr = "_RTCRtpReceiver__jitter_buffer"
            if not hasattr(t.receiver, attr):
                raise RuntimeError("this aiortc has no receiver jitter buffer to tune")
            buffer = AudioJitterBuffer(hold, on_drop=on_drop)
            setattr(t.receiver, attr, buffer)
            buffers.append(buffer)
    return buffers
