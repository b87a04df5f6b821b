"""LiveAvatar behind the engine contract on one device (tiny S2V folder with a LoRA file):
block timing, causality, reproducibility, fixed memory, options and bad input."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
from liveavatar_helpers import SIZE, chunks, speech, write_liveavatar_folder

from liveface.engines.diffusion.checkpoint.liveavatar import LORA_FILE, locate_liveavatar
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.s2v.causal import CausalS2V
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.engine_liveavatar import LiveAvatarEngine
from liveface.engines.diffusion.liveavatar_setup import create_liveavatar_engines
from liveface.engines.diffusion.streaming.liveavatar import (
    BlockFeed,
    LiveAvatarSampling,
    StepRunner,
)
from liveface.errors import BadInputError, ConfigError, SessionClosedError

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_liveavatar_folder(tmp_path_factory.mktemp("LiveAvatar") / "S2V")


@pytest.fixture(scope="module")
def engine(folder) -> LiveAvatarEngine:
    (eng,) = create_liveavatar_engines(folder, width=SIZE, height=SIZE, device="cpu")
    assert isinstance(eng, LiveAvatarEngine)
    return eng


def frames(engine, audio, count, **options) -> list[np.ndarray]:
    state = engine.open(None, None, options)
    try:
        return [engine.generate([(state, c)])[0].frames for c in chunks(engine.spec, audio, count)]
    finally:
        engine.close(state)


def test_a_chunk_is_a_block_and_the_first_one_drops_three_frames(engine) -> None:
    spec = engine.spec
    assert (spec.fps, spec.chunk_frames, spec.first_chunk_frames) == (16, 12, 9)
    state = engine.open(None, "a person talks", {"seed": 3})
    out = [engine.generate([(state, c)])[0] for c in chunks(spec, speech(2.0), 2)]
    assert [o.frames.shape for o in out] == [(9, SIZE, SIZE, 3), (12, SIZE, SIZE, 3)]
    assert [o.first_frame for o in out] == [0, 9]
    assert out[1].audio.shape[0] == spec.frame_start(21) - spec.frame_start(9)
    assert out[0].info.steps == 4
    engine.close(state)
    with pytest.raises(SessionClosedError):
        engine.generate([(state, chunks(spec, speech(2.0), 1)[0])])


def test_output_is_causal_and_reproducible(engine) -> None:
    """A block does not change when audio past its end (and the declared lookahead) changes;
    the same seed gives the same video."""
    audio = speech(2.0)
    other = audio.copy()
    later = engine.spec.frame_start(9) + engine.spec.lookahead  # past the first chunk's reach
    other[later:] = speech(2.0, phase=1.3)[later:]
    a = frames(engine, audio, 2, seed=5)
    b = frames(engine, other, 2, seed=5)
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])
    c = frames(engine, audio, 1, seed=6)
    assert not np.array_equal(a[0], c[0])


def test_session_memory_is_fixed_at_open(engine) -> None:
    runner = engine.denoiser.runner
    state = engine.open(None, None, {})
    held = runner.nbytes(state.key)
    for c in chunks(engine.spec, speech(1.5), 2):
        engine.generate([(state, c)])
    assert runner.nbytes(state.key) == held
    engine.close(state)
    assert runner.sessions == 0


def test_bad_options_chunks_and_folders_are_refused(engine, folder, tmp_path) -> None:
    with pytest.raises(BadInputError, match="unknown LiveAvatar option"):
        engine.open(None, None, {"steps": 2})
    with pytest.raises(BadInputError, match="seed"):
        engine.open(None, None, {"seed": -1})
    state = engine.open(None, None, {})
    c = chunks(engine.spec, speech(1.0), 1)[0]
    c.num_frames = 13
    with pytest.raises(BadInputError, match=r"1\.\.12 frames"):
        engine.generate([(state, c)])
    engine.close(state)
    with pytest.raises(ConfigError, match="is not a file"):
        locate_liveavatar(folder, tmp_path / "missing.safetensors")
    plain = tmp_path / "plain"
    plain.mkdir()
    for entry in folder.iterdir():  # the S2V folder without the LoRA
        if entry.name != LORA_FILE:
            (plain / entry.name).symlink_to(entry)
    with pytest.raises(ConfigError, match=f"put {LORA_FILE}"):
        locate_liveavatar(plain, None)
    with pytest.raises(ConfigError, match="divisible by 64"):
        create_liveavatar_engines(folder, width=96, height=64, device="cpu")


def micro_runner(steps: int = 1) -> StepRunner:
    cfg = S2VConfig(
        dit=DiTConfig(dim=16, ffn_dim=16, num_heads=2, num_layers=1, in_dim=16, out_dim=16,
                      text_dim=8, text_len=4, freq_dim=8, model_type="s2v"),
        audio_dim=4, inject_layers=(0,), cond_dim=16, motion_frames=13, zip_buckets=(1, 2, 4),
    )  # fmt: skip
    torch.manual_seed(0)
    sampling = LiveAvatarSampling(steps=steps)
    return StepRunner(CausalS2V(WanS2VDiT(cfg).eval()), sampling, range(steps))


@pytest.fixture
def one_thread():
    """Tiny tensors run fastest on one thread (and the box is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@torch.no_grad()
def test_ten_thousand_blocks_in_fixed_memory(one_thread) -> None:
    """The DiT side and the feed over 10,000 blocks (a one-layer model, one step per block, the
    audio tokens of every block given, to keep it quick): the caches keep their allocations and
    nothing accumulates per block, though the stream's positions grow without bound."""
    runner = micro_runner()
    feed = BlockFeed(runner.sampling, 1, (16, 8, 8))
    runner.open("s", torch.ones(3, 8), torch.zeros(1, 16, 1, 8, 8), torch.zeros(1, 16, 4, 8, 8))
    tokens = runner.causal.dit.clip_audio(torch.zeros(1, 25, 4, 12)).tokens
    session = runner._sessions["s"]
    fixed = (session.caches[0].k.data_ptr(), runner.nbytes("s"))
    objects = 0
    for block in range(10_000):
        work = feed.next("s", None)
        work.tokens = tokens
        runner.run([work])
        feed.done(work)
        if block == 100:
            gc.collect()
            objects = len(gc.get_objects())
    gc.collect()
    assert len(gc.get_objects()) - objects < 200
    assert (session.caches[0].k.data_ptr(), runner.nbytes("s")) == fixed
    assert session.caches[0].blocks == 10_000
    assert torch.isfinite(work.latents).all()
