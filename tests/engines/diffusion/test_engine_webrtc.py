"""The diffusion engine served over WebRTC from a tiny checkpoint directory to an aiortc peer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from liveface.runtime.config import ServerConfig
from liveface.runtime.factory import create_engine
from liveface.runtime.runtime import Runtime
from tests.engines.diffusion.stream_helpers import SIZE, tiny_checkpoint
from tests.serving import serve
from tests.signaling.peer import MIC_RATE, Client
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
async def server():
    # A large output delay lets the slow CPU engine keep ahead of the media clock.
    config = ServerConfig(
        engine="diffusion", checkpoint=str(tiny_checkpoint()), width=SIZE, height=SIZE,
        chunk_frames=8, max_sessions=1, delay_ms=2000,
    )  # fmt: skip
    runtime = Runtime(config, create_engine(config))
    async with serve(runtime) as url:
        yield url, runtime


def voice(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    return (0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


async def test_peer_receives_generated_frames(server):
    url, runtime = server
    client = Client(url, voice(6.0))
    answer = await client.connect()
    assert answer["status"] == 200
    assert answer["width"] == SIZE
    rendered = "liveface_chunks_rendered_total"
    await wait_until(
        lambda: runtime.metrics.sample(rendered) >= 6 and len(client.video) >= 50, within=60
    )
    await client.close()
    _, _, frame = client.video[-1]
    assert frame.shape == (SIZE, SIZE, 3)
    pts = [p for _, p, _ in client.video]
    assert pts == sorted(pts)
    # Generated frames differ from one another (random weights, but they move).
    last = [f.astype(np.float32) for _, _, f in client.video[-20:]]
    assert max(float(np.abs(a - last[0]).mean()) for a in last) > 0.5
