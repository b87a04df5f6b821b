"""Exported directories are what ``run_avatar.py --engine diffusion --checkpoint DIR`` loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from liveface.engines.diffusion.checkpoint.dit import load_dit
from liveface.engines.diffusion.streaming.codebook import latent_features, load_codebook
from liveface.errors import SessionClosedError
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker
from liveface.pipeline.vad import VoiceActivity
from liveface.runtime.config import ServerConfig
from liveface.runtime.factory import create_engine
from liveface.training.config import TrainConfig
from liveface.training.data.shards import ShardDataset
from tests.training import world


def server_engine(checkpoint):
    """The engine the server builds for ``--engine diffusion --checkpoint DIR``."""
    return create_engine(
        ServerConfig(
            engine="diffusion",
            checkpoint=str(checkpoint),
            width=world.SIZE,
            height=world.SIZE,
            chunk_frames=4,
        )
    )


def test_exported_student_runs_in_the_engine_through_the_contract():
    ckpt = world.student()
    stream = json.loads((ckpt / "liveface.json").read_text())["stream"]
    assert (stream["sampler"]["kind"], stream["sampler"]["steps"]) == ("distilled", 4)
    assert stream["sampler"]["guidance_scale"] == 1.0
    assert stream["motion"] == TrainConfig().motion.to_dict()
    assert stream["audio_context_ms"] == 1000
    # LoRA merged into the DiT: the official keys only, weights moved from the teacher's
    student, teacher = load_dit(ckpt / "dit"), load_dit(world.teacher() / "dit")
    s, t = student.base_state_dict(), teacher.base_state_dict()
    assert s.keys() == t.keys()
    assert not torch.equal(s["blocks.0.ffn.0.weight"], t["blocks.0.ffn.0.weight"])
    assert torch.equal(s["patch_embedding.weight"], t["patch_embedding.weight"])

    engine = server_engine(ckpt)
    spec = engine.spec
    assert (spec.width, spec.height, spec.fps, spec.chunk_frames) == (64, 64, 25, 4)
    portrait, wave, _ = world.held_out()
    ring = AudioRing(wave.shape[0] + 1)
    ring.append(wave)
    vad = VoiceActivity(spec.sample_rate)
    vad.push(wave)
    chunks = Chunker(spec, ring, vad.voiced).pop_ready()[:6]
    state = engine.open(portrait, None, {"seed": 2})
    out = [engine.generate([(state, c)])[0] for c in chunks[:4]]
    assert [o.frames.shape for o in out] == [(1, 64, 64, 3)] + [(4, 64, 64, 3)] * 3
    assert [o.first_frame for o in out] == [0, 1, 5, 9]
    np.testing.assert_array_equal(out[2].audio, wave[spec.frame_start(5) : spec.frame_start(9)])
    engine.interrupt(state)
    again = engine.generate([(state, chunks[4])])[0]
    assert again.frames.shape == (4, 64, 64, 3)
    engine.close(state)
    with pytest.raises(SessionClosedError):
        engine.generate([(state, chunks[5])])


def test_codebook_over_the_cached_latents_is_exported_and_used(tmp_path):
    path = tmp_path / "codebook.safetensors"
    world.run_cli(
        "codebook",
        "--data",
        world.data(),
        "--out",
        path,
        "--size",
        "16",
        "--iterations",
        "8",
        "--device",
        "cpu",
    )
    cb = load_codebook(path)
    assert cb.codes.shape == (16, 6)
    assert cb.tau > 0
    ds = ShardDataset(world.data())
    features = torch.cat([latent_features(x[None]) for x in ds.latent_frames()])
    nearest = torch.cdist(features, cb.codes).min(dim=1).values
    spread = (features - features.mean(dim=0)).norm(dim=1)
    assert nearest.mean() < 0.5 * spread.mean()  # 16 codes summarise the latents well
    out = world.export(world.pretrained(), world.teacher_run(), "with_codebook", "--codebook", path)
    stream = json.loads((out / "liveface.json").read_text())["stream"]
    assert stream["codebook"]["source"] == "file"
    engine = server_engine(out)
    state = engine.open(world.held_out()[0], None, {})
    assert engine.describe(state)["codebook_size"] == 16
    engine.close(state)
