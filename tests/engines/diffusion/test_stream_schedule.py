"""Chunk schedule, audio windows and streaming configs (no model runs here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.engines.diffusion.audio.conditioner import AudioPlan
from liveface.engines.diffusion.checkpoint.bundle import MANIFEST, Manifest, read_manifest
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.audio_projector import AudioProjector
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.engines.diffusion.streaming.state import ChunkPlan, noise_seed, plan_chunk
from liveface.errors import BadInputError, ConfigError


def test_plan_chunk_follows_the_causal_decoder():
    assert plan_chunk(1, True, 4) == ChunkPlan(1, prime=False)  # first chunk: one frame
    assert plan_chunk(5, True, 4) == ChunkPlan(2, prime=False)
    assert plan_chunk(8, False, 4) == ChunkPlan(2, prime=False)
    assert plan_chunk(8, True, 4) == ChunkPlan(2, prime=True)  # after an interrupt
    for frames, fresh in ((5, False), (6, True), (0, True)):
        with pytest.raises(BadInputError, match="cannot be generated"):
            plan_chunk(frames, fresh, 4)


def test_noise_seed_depends_on_session_and_frame_only():
    assert noise_seed(3, 40) == noise_seed(3, 40)
    assert len({noise_seed(s, f) for s in range(3) for f in range(0, 400, 8)}) == 150
    assert 0 <= noise_seed(2**40, 10**9) < 2**63


def plan_for(fps=25, lookahead=0, context_ms=1000) -> AudioPlan:
    cfg = AudioConfig.for_dit(DiTConfig.preset("tiny"), feature_dim=8, num_feature_layers=2,
                              fps=fps)  # fmt: skip
    reach = AudioProjector(cfg).left_context_frames
    return AudioPlan.create(cfg, reach, context_ms, lookahead)


@pytest.mark.parametrize("fps", [25, 24, 30])
def test_audio_span_lies_inside_every_window_and_is_frame_aligned(fps):
    plan = plan_for(fps=fps, lookahead=1280)
    spec = EngineSpec(fps=fps, width=64, height=64, chunk_frames=8, first_chunk_frames=1,
                      left_context=plan.left_context, lookahead=1280)  # fmt: skip
    assert plan.warmup_latents == 2  # kernel 3, strides (2, 2): 5 frames of front-end context
    assert plan.context_features == 50
    frame, index = 0, 0
    for _ in range(40):
        n = spec.chunk_frames_at(index)
        start, end = spec.frame_start(frame), spec.frame_start(frame + n)
        size = spec.left_context + (end - start) + spec.lookahead
        chunk = AudioChunk(index, frame, n, start, end, np.zeros(size, np.float32),
                           spec.left_context, True)  # fmt: skip
        k = plan_chunk(n, index == 0, 4).latents
        offset, length = plan.span(chunk, k)
        assert offset >= 0
        assert offset + length == size
        # the encoder input starts `context` features before the warm-up frames' first sample
        anchor = frame + n - 4 * k
        first_sample = chunk.start - chunk.context + offset + 50 * plan.feature_hop
        assert first_sample == spec.frame_start(anchor - 4 * plan.warmup_latents)
        frame, index = frame + n, index + 1
    short = AudioChunk(1, 8, 8, 2560, 5120, np.zeros(100, np.float32), 10, True)
    with pytest.raises(BadInputError, match="left context"):
        plan.span(short, 2)


def test_stream_config_round_trips_and_validates():
    cfg = GenerationConfig()
    assert GenerationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="decoder"):
        GenerationConfig(decoder="fast")
    with pytest.raises(ConfigError, match="unknown stream config"):
        GenerationConfig.from_dict({"chunk": 3})
    with pytest.raises(ConfigError, match="sampler"):
        GenerationConfig.from_dict({"sampler": {"kind": "ddim"}})


def test_manifest_round_trips_and_names_missing_parts(tmp_path):
    m = Manifest(stream=GenerationConfig(chunk_latents=3))
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "liveface-diffusion", "dit": "x"}))
    (tmp_path / "wav2vec2").mkdir()
    with pytest.raises(ConfigError) as e:
        read_manifest(tmp_path)
    msg = str(e.value)
    assert "lacks dit (x), vae (Wan2.2_VAE.pth), audio_adapter" in msg
    assert "Wan-AI/Wan2.2-TI2V-5B" in msg
    assert "taew2_2" in msg
    (tmp_path / MANIFEST).write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="manifest"):
        read_manifest(tmp_path)
