"""Timestep forcing over real ``torch.distributed`` (gloo) processes on the CPU, tiny model.

Each rank loads the tiny S2V folder with its LoRA, exactly as a GPU rank loads the real one; the
server side (speech features, VAE, text) stays in the test process. Every process runs on one
thread, the same as the single-process engine it is compared with, so that the arithmetic is the
same op for op.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from liveavatar_helpers import SIZE, chunks, speech, write_liveavatar_folder

from liveface.engines.base import AudioChunk, VideoChunk
from liveface.engines.diffusion.liveavatar_setup import create_liveavatar_engines
from liveface.engines.diffusion.parallel.group import PipelineConfig, split_steps
from liveface.errors import ConfigError, EngineError
from liveface.runtime.metrics import DropReason, Metrics
from liveface.runtime.worker import EngineWorker

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_liveavatar_folder(tmp_path_factory.mktemp("LiveAvatar") / "S2V")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local(folder):
    (engine,) = create_liveavatar_engines(folder, width=SIZE, height=SIZE, device="cpu")
    return engine


def run(engine, count: int, seeds: tuple[int, ...]) -> list[list[np.ndarray]]:
    """``count`` chunks of one session per seed, the sessions batched in every call."""
    states = [engine.open(None, None, {"seed": s}) for s in seeds]
    audio = [speech(2.5, phase=0.4 * i) for i in range(len(seeds))]
    per = [chunks(engine.spec, a, count) for a in audio]
    out: list[list[np.ndarray]] = [[] for _ in seeds]
    for i in range(count):
        done = engine.generate([(st, per[j][i]) for j, st in enumerate(states)])
        for j, d in enumerate(done):
            out[j].append(d.frames)
    for st in states:
        engine.close(st)
    return out


def test_steps_are_split_into_consecutive_runs() -> None:
    assert split_steps(4, 4) == [range(0, 1), range(1, 2), range(2, 3), range(3, 4)]
    assert split_steps(4, 3) == [range(0, 2), range(2, 3), range(3, 4)]
    assert split_steps(4, 2) == [range(0, 2), range(2, 4)]
    with pytest.raises(ConfigError, match=r"1\.\.4 ranks"):
        split_steps(4, 5)
    with pytest.raises(ConfigError, match="one device per pipeline rank"):
        PipelineConfig(ranks=2, devices=("cpu",))


def test_four_ranks_under_torchrun_give_the_same_frames(local, folder) -> None:
    lanes = create_liveavatar_engines(
        folder, width=SIZE, height=SIZE, device="cpu", ranks=4, launcher="torchrun", threads=1
    )
    try:
        got = run(lanes[0], 2, seeds=(4,))
    finally:
        lanes[0].shutdown()
    want = run(local, 2, seeds=(4,))
    assert all(np.array_equal(a, b) for a, b in zip(got[0], want[0], strict=True))


class Sink:
    """A session's end of the EngineWorker (results arrive on the worker's thread)."""

    def __init__(self) -> None:
        self.chunks: list[VideoChunk] = []
        self.errors: list[BaseException] = []

    def deliver(self, chunk: VideoChunk) -> None:
        self.chunks.append(chunk)

    def skipped(self, chunk: AudioChunk, reason: DropReason) -> None:
        raise AssertionError(f"chunk {chunk.index} dropped: {reason}")

    def failed(self, error: BaseException) -> None:
        self.errors.append(error)


def wait_for(condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_sessions_batch_through_two_ranks_and_a_dead_rank_ends_them_clearly(local, folder) -> None:
    """Two spawned ranks (steps 0-1 and 2-3) behind an EngineWorker: two sessions' first chunks
    are batched through the pipeline and equal the single-process engine's frames; then rank 1
    is killed: both sessions end with an error naming it, the pipeline starts again on its own
    and a new session is served as before."""
    want = run(local, 1, seeds=(9, 10))
    lanes = create_liveavatar_engines(
        folder, width=SIZE, height=SIZE, device="cpu", ranks=2, threads=1
    )
    assert len(lanes) == 2
    assert lanes[0].denoiser is lanes[1].denoiser
    engine = lanes[0]
    worker = EngineWorker(engine, Metrics(), max_queued=8)
    try:
        sinks = {"a": Sink(), "b": Sink()}
        states = {}
        for (key, sink), seed, phase in zip(sinks.items(), (9, 10), (0.0, 0.4), strict=True):
            states[key] = engine.open(None, None, {"seed": seed})
            worker.register(key, states[key], sink)
            for c in chunks(engine.spec, speech(2.5, phase), 2):
                worker.submit(key, c, time.monotonic() + 60)
        worker.start()  # both first chunks are waiting: they go as one batch
        wait_for(lambda: all(len(s.chunks) + len(s.errors) >= 1 for s in sinks.values()))
        assert np.array_equal(sinks["a"].chunks[0].frames, want[0][0])
        assert np.array_equal(sinks["b"].chunks[0].frames, want[1][0])
        group = engine.denoiser.group
        os.kill(group.pids[1], signal.SIGKILL)
        wait_for(lambda: all(s.errors for s in sinks.values()))
        for s in sinks.values():
            error = s.errors[0]
            assert isinstance(error, EngineError)
            assert "rank 1 (steps 2-3)" in str(error)
            assert "stream ended" in str(error)
        with pytest.raises(EngineError, match="stream ended"):
            engine.generate([(states["a"], chunks(engine.spec, speech(2.5), 3)[2])])
        wait_for(lambda: engine.denoiser.group is not group and engine.alive)
        third = engine.open(None, None, {"seed": 9})
        after = Sink()
        worker.register("c", third, after)
        worker.submit("c", chunks(engine.spec, speech(2.5), 1)[0], time.monotonic() + 60)
        wait_for(lambda: len(after.chunks) == 1)
        alone = run(local, 1, seeds=(9,))  # a batch of one, as the new session's
        assert np.array_equal(after.chunks[0].frames, alone[0][0])
    finally:
        worker.stop()
        engine.shutdown()
