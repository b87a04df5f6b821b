"""The service with no address: it runs its own ``liveface serve`` subprocess (the real CPU
``warp`` engine) for the pipeline's lifetime, over a real ``ipc://`` ZeroMQ socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="needs the pipecat extra: pip install -e '.[pipecat]'")

from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)

from liveface.integrations.pipecat import LivefaceVideoService, LocalServerConfig
from tests.integrations.pipecat_harness import Bot, pipeline
from tests.signaling.zmq.helpers import speech, to_s16

SIZE = 256
TTS_RATE = 22050  # espeak-ng's rate; the server resamples


def image(frame: OutputImageRawFrame) -> np.ndarray:
    return np.frombuffer(frame.image, np.uint8).reshape(SIZE, SIZE, 3).astype(np.int16)


def images(bot: Bot) -> list[OutputImageRawFrame]:
    return bot.down.of(OutputImageRawFrame)


@pytest.mark.slow
async def test_local_warp_server_speaks_returns_to_idle_and_is_stopped_at_the_end():
    # Without head motion and blinks, the idle avatar is one still picture: any difference from
    # it is the mouth moving.
    service = LivefaceVideoService(
        server=LocalServerConfig(size=(SIZE, SIZE)),
        engine_options={"head_motion": False, "blinks_per_minute": 0},
    )
    async with pipeline(service, SIZE) as bot:
        await bot.down.wait_for(lambda: len(images(bot)) >= 5, limit_s=120)
        server = service._server
        assert server is not None
        address = server.address
        assert address is not None
        assert address.startswith("ipc://")
        rest = image(images(bot)[-1])

        def moving() -> list[OutputImageRawFrame]:
            return [f for f in images(bot) if np.abs(image(f) - rest).mean() > 0.5]

        await bot.say(to_s16(speech(4.0, rate=TTS_RATE)), TTS_RATE)
        await bot.down.wait_for(lambda: len(moving()) >= 25)  # a second of talking
        await bot.worker.queue_frame(InterruptionFrame())
        await bot.down.wait_for(lambda: bot.down.of(InterruptionFrame))
        k = len(bot.down.frames)
        await bot.down.wait_for(lambda: len(bot.down.frames) >= k + 30)
        after = bot.down.frames[k:]
        # The server dies: the service says so and the bot keeps talking without a face.
        assert server._proc is not None
        server._proc.kill()
        await bot.up.wait_for(lambda: bot.up.of(ErrorFrame))
        await bot.say(to_s16(speech(0.3, rate=TTS_RATE)), TTS_RATE)
        await bot.down.wait_for(lambda: bot.down.of(TTSStoppedFrame))
    chunk = 1  # the warp engine's chunk_frames
    after_images = [f for f in after if isinstance(f, OutputImageRawFrame)]
    first = after_images[0].metadata["liveface"]["index"]
    # (Repeats sent while a busy machine's engine was late, fresh=False, are not counted.)
    late = [
        f
        for f in after_images
        if f.metadata["liveface"]["index"] >= first + chunk and f.metadata["liveface"]["fresh"]
    ]
    assert len(late) >= 10
    assert max(float(np.abs(image(f) - rest).max()) for f in late) == 0  # back at rest
    after_audio = [f for f in after if isinstance(f, SpeechOutputAudioRawFrame)]
    assert all(not any(f.audio) for f in after_audio)
    [error] = bot.up.of(ErrorFrame)
    assert "local avatar server exited" in error.error
    assert bot.down.of(TTSAudioRawFrame)  # passed through once the avatar was gone
    # The pipeline's end stopped the server and removed its socket directory.
    assert service._server is None
    assert server.returncode is not None
    socket_dir = Path(address.removeprefix("ipc://")).parent
    assert not await asyncio.to_thread(socket_dir.exists)
