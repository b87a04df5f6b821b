"""``serve --engine diffusion --checkpoint DIR`` with LiveAvatar's LoRA in DIR: the live avatar over
WebRTC (an aiortc peer) and ZeroMQ (the sync client) from one server, tiny model on the CPU."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import numpy as np
import pytest
from liveavatar_helpers import SIZE, write_liveavatar_folder

from liveface.cli import parse, serve
from liveface.client import Event, Frame, SyncClient
from liveface.engines.diffusion.engine_liveavatar import LiveAvatarEngine
from liveface.engines.diffusion.parallel.launch import free_port
from liveface.runtime.config import ServerConfig
from liveface.runtime.factory import create_engines
from tests.signaling.peer import MIC_RATE, Client
from tests.signaling.zmq.helpers import speech, to_s16
from tests.waiting import wait_until

pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def zmq_session(endpoint: str) -> list[Frame]:
    with SyncClient(endpoint) as client:
        session = client.open(format="rgb")
        session.push(to_s16(speech(1.2)), rate=16000)
        session.end_segment()
        frames = []
        for item in session:
            if isinstance(item, Frame):
                frames.append(item)
            elif isinstance(item, Event) and item.kind == "playback_finished":
                break
        session.close()
    return frames


def voice(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    return (0.3 * np.sin(2 * np.pi * 160 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


async def test_serve_gives_the_live_avatar_over_webrtc_and_zeromq(tmp_path) -> None:
    folder = write_liveavatar_folder(tmp_path / "S2V")
    args = parse(["serve", "--engine", "diffusion", "--checkpoint", str(folder)])
    assert args.lora is None  # the LoRA is found in the folder
    http, zport = free_port(), free_port()
    config = ServerConfig(
        engine="diffusion", checkpoint=str(folder), width=SIZE, height=SIZE, port=http,
        zmq=f"tcp://127.0.0.1:{zport}", delay_ms=3000, max_sessions=2,
    )  # fmt: skip
    engines = await asyncio.to_thread(create_engines, config)
    assert [type(e) for e in engines] == [LiveAvatarEngine]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(config, engines, stop))
    url = f"http://127.0.0.1:{http}"
    try:

        async def healthy() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
                    return r.status == 200
            return False

        for _ in range(600):
            if await healthy():
                break
            await asyncio.sleep(0.1)
        peer = Client(url, voice(6.0))
        answer = await peer.connect()
        assert answer["status"] == 200
        assert answer["width"] == SIZE
        await wait_until(lambda: len(peer.video) >= 24, within=120)
        await peer.close()
        pts = [p for _, p, _ in peer.video]
        assert pts == sorted(pts)
        assert peer.video[-1][2].shape == (SIZE, SIZE, 3)
        frames = await asyncio.to_thread(zmq_session, f"tcp://127.0.0.1:{zport}")
        assert len(frames) >= 12
        assert all((f.width, f.height) == (SIZE, SIZE) for f in frames)
        assert [f.index for f in frames] == sorted(f.index for f in frames)
        pictures = [f.image().astype(np.float32) for f in frames]
        assert max(float(np.abs(p - pictures[0]).mean()) for p in pictures) > 0.5
    finally:
        stop.set()
        await server
        for engine in engines:
            engine.shutdown()


def test_lora_and_pipeline_flags_reach_the_config(tmp_path, capsys) -> None:
    from liveface.cli import _config, main

    lora = tmp_path / "liveavatar.safetensors"
    lora.write_bytes(b"")
    argv = ["serve", "--engine", "diffusion", "--checkpoint", str(tmp_path), "--lora", str(lora)]
    args = parse([*argv, "--pipeline-ranks", "4", "--pipeline-launcher", "torchrun"])
    config = _config(args)
    assert (config.lora, config.pipeline_ranks, config.pipeline_launcher) == (
        str(lora),
        4,
        "torchrun",
    )
    assert main([*argv[:-1], str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors is not a file" in capsys.readouterr().err
