"""Small parts: LoRA, configs, the audio timeline's windows."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.audio.conditioner import AudioPlan
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.sampling.flow import SamplerConfig
from liveface.errors import ConfigError
from liveface.training.config import DistillSpec, TrainConfig
from liveface.training.data.audio import AudioTimeline
from liveface.training.lora import LoRA, merge_lora
from tests.training.models import tiny_dit


def _forward(dit, x):
    t = torch.full((1,), 500.0)
    text = torch.randn(1, 3, dit.config.text_dim, generator=torch.Generator().manual_seed(1))
    return dit(x, t, text)


def test_lora_starts_at_the_base_and_merges_into_it():
    dit = tiny_dit()
    x = torch.randn(1, 6, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    keys = set(dit.state_dict())
    with torch.no_grad():
        before = _forward(dit, x)
        lora = LoRA(dit, rank=4, alpha=8.0, targets=("self_attn", "cross_attn", "ffn"))
        assert set(dit.state_dict()) == keys  # hooks: the DiT's keys are untouched
        torch.testing.assert_close(_forward(dit, x), before, atol=0, rtol=0)
        for m in lora.layers.values():
            m.up.normal_(0, 0.1)
        hooked = _forward(dit, x)
        assert not torch.allclose(hooked, before)
        lora.enabled = False
        torch.testing.assert_close(_forward(dit, x), before, atol=0, rtol=0)
        lora.enabled = True
        merge_lora(dit, lora)
        torch.testing.assert_close(_forward(dit, x), hooked, atol=1e-5, rtol=1e-4)


def test_configs_round_trip_and_refuse_bad_values():
    config = TrainConfig(steps=7, trainable="adapter+lora", distill=DistillSpec(guidance_scale=2))
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="trainable must be one of"):
        TrainConfig(trainable="everything")
    with pytest.raises(ConfigError, match="unknown training config keys: stepz"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="audio_dropout must be in"):
        TrainConfig(audio_dropout=1.5)
    with pytest.raises(ConfigError, match="student must be a 'distilled' schedule"):
        DistillSpec(student=SamplerConfig(kind="euler"))


def test_timeline_windows_are_the_engines():
    """The encoder input of every chunk position is where the engine's AudioPlan cuts it."""
    from liveface.engines.base import AudioChunk

    for fps, context_ms, lookahead_ms in ((25, 1000, 0), (30, 500, 80)):
        cfg = AudioConfig(
            dim=8, num_heads=2, layers=(0,), feature_dim=4, num_feature_layers=2, fps=fps
        )
        t = AudioTimeline.create(cfg, 5, context_ms, lookahead_ms)
        plan = AudioPlan.create(cfg, 5, context_ms, lookahead_ms * 16)
        for first, count in ((0, 1), (0, 2), (3, 1), (7, 2)):
            first_frame = 0 if first == 0 else 4 * first - 3
            frames = 1 + 4 * (count - 1) if first == 0 else 4 * count
            start = t.frame_start(first_frame)
            end = t.frame_start(first_frame + frames)
            lo = start - plan.left_context
            window = torch.zeros(end + plan.lookahead - lo).numpy()
            chunk = AudioChunk(
                index=first,
                first_frame=first_frame,
                num_frames=frames,
                start=start,
                end=end,
                window=window,
                context=plan.left_context,
                voiced=True,
            )
            offset, length = plan.span(chunk, count)
            assert t.window(first, count) == (lo + offset, lo + offset + length)


def _objective(**changes):
    from liveface.engines.diffusion.streaming.motion import MotionLayout
    from liveface.training.base import BaseDir
    from liveface.training.batch import SampleLoader, SampleOrder
    from liveface.training.config import AdapterSpec
    from liveface.training.data.shards import ShardDataset
    from liveface.training.model import build_models
    from liveface.training.objective import FlowMatchingLoss
    from tests.training import world

    config = TrainConfig(adapter=AdapterSpec(**world.ADAPTER), trainable="adapter+lora", **changes)
    ds = ShardDataset(world.data())
    models = build_models(BaseDir.open(world.base()), config, ds.config)
    with torch.no_grad():  # a non-zero adapter output, so that every weight gets a gradient
        for layer in models.adapter.layers.values():
            layer.o.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
    cfg = models.dit.config
    layout = MotionLayout(config.motion, cfg.in_dim, 4, 4, (2, 2))
    loader = SampleLoader([ds], config.motion.frames, 1, cfg.text_len, config)
    batch = loader.batch(SampleOrder([ds], 1, 0), [0, 1, 2])
    return FlowMatchingLoss(models, layout, 2, config.precision == "bf16"), models, batch


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        objective, models, batch = _objective(gradient_checkpointing=checkpointing)
        objective(batch).mean().backward()
        grads.append({k: p.grad.clone() for k, p in models.trainable().items()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)


def test_bf16_keeps_the_base_frozen_in_bfloat16_and_trains_in_float32():
    objective, models, batch = _objective(precision="bf16")
    assert models.dit.blocks[0].ffn[0].weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in models.trainable().values())
    loss = objective(batch).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in models.trainable().values())


def test_command_line_errors_say_what_to_fix(tmp_path, capsys):
    from liveface.training.cli import main
    from tests.training import world

    assert (
        main(
            [
                "prepare",
                str(tmp_path / "nowhere"),
                "--base",
                str(world.base()),
                "--out",
                str(tmp_path / "d"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "neither a video file nor a folder" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--base",
                str(world.base()),
                "--data",
                str(tmp_path),
                "--run-dir",
                str(tmp_path / "r"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert (
        "is not a prepared dataset (no dataset.json); run prepare first" in capsys.readouterr().err
    )
    assert (
        main(
            [
                "train",
                "--base",
                str(tmp_path),
                "--data",
                str(world.data()),
                "--run-dir",
                str(tmp_path / "r"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "has no DiT (dit/)" in capsys.readouterr().err
    assert (
        main(
            [
                "export",
                "--base",
                str(world.base()),
                "--run-dir",
                str(tmp_path),
                "--data",
                str(world.data()),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "no trained weights at" in capsys.readouterr().err


def test_speech_is_found_all_through_a_video_longer_than_the_live_vads_memory():
    from liveface.training.data.segment import voiced_frames
    from tests.training.synthetic import speech_signal

    wave, _ = speech_signal(90.0, seed=5, rate=16000)
    voiced = voiced_frames(wave, 16000, 25, 90 * 25)
    per_half_minute = voiced.reshape(3, -1).mean(axis=1)
    assert (per_half_minute > 0.3).all(), per_half_minute  # the first minute too


def test_export_copies_the_bases_speech_encoder_as_it_is():
    """The exported checkpoint's wav2vec2 folder holds the base's own files, byte for byte
    (copied, not loaded and saved again)."""
    import json

    from tests.training import world

    base, out = world.pretrained(), world.teacher()
    folder = base / json.loads((base / "liveface.json").read_text())["speech_encoder"]
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert files
    for name in files:
        assert (out / "wav2vec2" / name).read_bytes() == (folder / name).read_bytes(), name
    assert json.loads((out / "liveface.json").read_text())["speech_encoder"] == "wav2vec2"
