"""Training conditions a chunk exactly as the streaming engine does at inference."""

from __future__ import annotations

import numpy as np
import torch

from liveface.engines.base import AudioChunk
from liveface.engines.diffusion.streaming.motion import MotionLayout
from liveface.pipeline.vad import VoiceActivity
from liveface.training.base import BaseDir
from liveface.training.batch import SampleLoader, SampleRef
from liveface.training.conditioning import Conditioning
from liveface.training.config import AdapterSpec, TrainConfig
from liveface.training.data.audio import AudioTimeline
from liveface.training.data.shards import ShardDataset
from liveface.training.model import build_models
from liveface.training.preview import engine_for
from tests.training import world


def _randomise_outputs(models, seed=0):
    """Fresh adapters start with a zero output; give it one so that audio changes the result."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in models.adapter.parameters():
            if not p.abs().any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _chunk(spec, wave, first_latent):
    """The chunk the runtime's chunker cuts for latent frame ``first_latent`` (4-frame chunks
    after a 1-frame first one), silence before the session's start."""
    first_frame = 0 if first_latent == 0 else 1 + 4 * (first_latent - 1)
    n = 1 if first_latent == 0 else 4
    start, end = spec.frame_start(first_frame), spec.frame_start(first_frame + n)
    lo, hi = start - spec.left_context, end + spec.lookahead
    window = np.zeros(hi - lo, np.float32)
    a, b = max(lo, 0), min(hi, wave.shape[0])
    window[a - lo : b - lo] = wave[a:b]
    vad = VoiceActivity(spec.sample_rate)
    vad.push(wave)
    return AudioChunk(
        index=first_latent,
        first_frame=first_frame,
        num_frames=n,
        start=start,
        end=end,
        window=window,
        context=spec.left_context,
        voiced=vad.voiced(start, end),
    )


def test_training_conditions_a_chunk_as_the_engine_does():
    ds = ShardDataset(world.data())
    config = TrainConfig(adapter=AdapterSpec(**world.ADAPTER), chunk_latents=1)
    base = BaseDir.open(world.base())
    models = build_models(base, config, ds.config)
    _randomise_outputs(models)
    cfg = models.dit.config
    engine = engine_for(
        models,
        vae=base.vae(),
        encoder=base.speech_encoder(),
        prompts=base.prompts(cfg.text_dim, cfg.text_len),
        stream=_stream(config, ds),
        width=world.SIZE,
        height=world.SIZE,
    )
    (clip,) = ds.held_out_clips()
    loader = SampleLoader([ds], config.motion.frames, 1, cfg.text_len, config)
    timeline = AudioTimeline(**ds.config["timeline"])
    layout = MotionLayout(config.motion, cfg.in_dim, 4, 4, (2, 2))
    training = Conditioning(models.dit, layout)
    wave = ds.tensor(clip, "wave").float().numpy()
    state = engine.open(ds.portrait(clip), None, {"codebook": False})
    held = state.held
    for first in (0, 3, 9):
        sample = loader.load(SampleRef(0, clip, first))
        # the engine's session holds the same reference and motion history
        held.reference.copy_(sample["reference"][None])
        held.motion.latents.copy_(sample["history"][None])
        text = held.text
        with torch.no_grad():
            held_prefix = engine.generator.reference_prefix(held.reference, text)
            object.__setattr__(held, "reference_prefix", held_prefix)
            engine_prefix = engine.generator.condition([state], text)
            ours = training.prefix(
                sample["reference"][None],
                sample["history"][None],
                training.text(sample["text"][None]),
                grad=False,
            )
            for a, b in zip(engine_prefix.kv, ours.kv, strict=True):
                torch.testing.assert_close(a.k, b.k)
                torch.testing.assert_close(a.v, b.v)
            engine_tokens = engine.audio.tokens([_chunk(engine.spec, wave, first)], 1)
            ours_tokens = Conditioning.audio(
                models.adapter, sample["audio"][None], torch.ones(1), timeline.warmup_latents, 1
            ).tokens
        torch.testing.assert_close(ours_tokens, engine_tokens)
    torch.testing.assert_close(training.new_rope(1).cos, engine.generator.new_rope(1).cos)


def _stream(config, ds):
    from liveface.engines.diffusion.sampling.flow import SamplerConfig
    from liveface.training.export import stream_settings

    return stream_settings(config, ds.config, sampler=SamplerConfig(), codebook=False)
