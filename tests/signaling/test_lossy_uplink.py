"""A microphone on a bad uplink (5% loss, 0-100 ms jitter, reordering): audio is placed by its
RTP timestamps, losses are concealed and counted, the playout delay absorbs the jitter, and the
avatar keeps animating in real time."""

from __future__ import annotations

import numpy as np

from liveface.runtime.config import ServerConfig
from liveface.runtime.metrics import SessionCounter
from liveface.runtime.runtime import Runtime
from tests.doubles import PatternEngine, decode_index, mouth_level
from tests.serving import serve
from tests.signaling.lossy import LossyUplink
from tests.signaling.peer import MIC_RATE, Client
from tests.waiting import wait_until


def bursts(seconds: float) -> np.ndarray:
    """A tone switched on and off every half second."""
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    on = (t % 1.0) < 0.5
    return (0.3 * np.sin(2 * np.pi * 180 * t) * on).astype(np.float32)


async def test_a_lossy_jittery_uplink_is_concealed_counted_and_keeps_real_time():
    engine = PatternEngine(size=128, chunk_frames=1, first_chunk_frames=1)
    runtime = Runtime(ServerConfig(max_sessions=2, delay_ms=80), engine)
    async with serve(runtime) as url:
        client = Client(url, bursts(6.0))
        try:
            assert (await client.connect())["status"] == 200
            link = LossyUplink(loss=0.05, jitter_s=0.1, seed=7)
            link.install(client.pc)
            (session,) = runtime.registry.sessions()
            await wait_until(lambda: client.video and decode_index(client.video[-1][2]) >= 125)
            counters = session.counters()
            stream = session.stream.stats
        finally:
            await client.close()
    shown = counters[SessionCounter.FRAMES_OUT] + counters[SessionCounter.FRAMES_REPEATED]
    print(
        f"\nuplink: {link.dropped} lost, {link.reordered} reordered of {link.sent + link.dropped}; "
        f"server: {counters[SessionCounter.INPUT_CONCEALED_SAMPLES]:.0f} samples concealed, "
        f"{counters[SessionCounter.INPUT_DROPPED_SAMPLES]:.0f} dropped, jitter allowance "
        f"{stream.jitter_ms:.0f} ms, {counters[SessionCounter.FRAMES_REPEATED]:.0f} of "
        f"{shown:.0f} frames repeated"
    )
    assert link.dropped > 5
    assert link.reordered > 5
    # Lost packets became silence of their length: the input kept pace with the microphone.
    concealed = counters[SessionCounter.INPUT_CONCEALED_SAMPLES]
    assert concealed >= 0.5 * link.dropped * 320
    received = counters[SessionCounter.INPUT_SAMPLES]
    assert received >= 0.95 * 5 * 16000  # 5 s in, despite 5% loss
    # Reordered packets are dropped by the jitter buffer (counted) or rescued by its hold.
    assert counters[SessionCounter.INPUT_DROPPED_SAMPLES] + concealed > 0
    # The playout delay grew to cover the jitter, so frames were not late: the avatar kept
    # real time with few repeats.
    assert stream.jitter_ms > 30
    assert counters[SessionCounter.FRAMES_REPEATED] < 0.05 * shown
    # And the mouth still follows the bursts.
    levels = {decode_index(f): mouth_level(f) for _, _, f in client.video}
    on = [v for n, v in levels.items() if 10 <= n < 120 and (n % 25) in range(3, 10)]
    off = [v for n, v in levels.items() if 10 <= n < 120 and (n % 25) in range(16, 23)]
    assert np.mean(on) > np.mean(off) + 30
