"""Data preparation: real videos through the real pipeline into shards, with skips and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from liveface.errors import ConfigError
from liveface.training.base import BaseDir
from liveface.training.data.audio import AudioTimeline
from liveface.training.data.media import iter_frames, read_audio
from liveface.training.data.prepare import PrepareConfig, Preparer
from liveface.training.data.segment import SkipReason, plan_clips, shot_changes
from liveface.training.data.shards import ShardDataset, read_index
from tests.training import world
from tests.training.models import pooling_vae
from tests.training.synthetic import talking_video, write_video


def test_prepare_writes_shards_and_skips_bad_clips():
    root = world.data()
    index = read_index(root)
    assert index["videos"] == world.TRAIN_VIDEOS + 4
    assert index["skipped"] == {"no_face": 1, "no_speech": 1, "too_short": 1}
    ds = ShardDataset(root)
    assert len(ds) == world.TRAIN_VIDEOS + 1
    assert len(ds.training_clips()) == world.TRAIN_VIDEOS
    (held,) = ds.held_out_clips()
    assert "zz_heldout" in ds.clips[held].id
    timeline = AudioTimeline(**ds.config["timeline"])
    for i, info in enumerate(ds.clips):
        t = ds.load(i)
        assert info.frames == 1 + 4 * (info.latents - 1)
        assert info.frames >= 0.8 * 25
        assert t.latents.shape == (6, info.latents, 4, 4)
        assert t.reference.shape == (6, 1, 4, 4)
        # exact windows: one per chunk position, what the adapter reads for it
        assert t.audio.shape == (info.latents, 3, timeline.chunk_slice(0, 1)[1], 32)
        assert t.voiced.shape == (info.frames,)
        assert t.voiced.any()
        assert t.wave.shape == (info.frames * 16000 // 25,)
    assert ds.portrait(held).shape == (world.SIZE, world.SIZE, 3)
    assert ds.portrait(ds.training_clips()[0]) is None
    assert set(ds.prompts()) == {info.prompt for info in ds.clips}


def test_latents_are_the_vae_codes_of_the_face_crop_at_25_fps():
    """The held-out clip, decoded from its 30 fps mp4, cropped and encoded again here, gives the
    stored latents: frame-rate resampling, face crop and encoding are the prepared ones."""
    ds = ShardDataset(world.data())
    (held,) = ds.held_out_clips()
    truth = world.held_out()[2]
    expected = pooling_vae().encode(torch.from_numpy(truth)[None], latents_per_step=4)[0]
    torch.testing.assert_close(ds.tensor(held, "latents"), expected, atol=1e-5, rtol=1e-5)
    wave = ds.tensor(held, "wave").float().numpy()
    source = read_audio(ds.clips[held].source, 16000)[: wave.shape[0]]
    np.testing.assert_array_equal(wave, source)


def test_prepare_resumes_and_refuses_other_settings(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    talking_video(videos / "a.mp4", 1.2, seed=3)
    talking_video(videos / "b_silent.mp4", 1.0, seed=4, speech=False)
    out = tmp_path / "data"
    config = world._config("prepare_resume", {**world.PREPARE, "holdout_videos": 0})
    args = ("prepare", videos, "--base", world.base(), "--out", out, "--config", config, "--quiet")
    world.run_cli(*args)
    assert len(ShardDataset(out)) == 1
    progress = (out / "progress.jsonl").read_text().splitlines()
    assert [json.loads(p)["video"].rsplit("/", 1)[1] for p in progress] == ["a.mp4", "b_silent.mp4"]
    shutil.copy(videos / "a.mp4", videos / "c.mp4")
    world.run_cli(*args)
    assert len(ShardDataset(out)) == 2
    assert len((out / "progress.jsonl").read_text().splitlines()) == 3
    assert read_index(out)["skipped"] == {"no_speech": 1}
    from safetensors import safe_open

    with safe_open(str(out / "prompts.safetensors"), framework="pt") as f:
        assert set(f.metadata()) == set(f.keys()) == set(ShardDataset(out).prompts())  # texts kept
    cfg = PrepareConfig.from_dict({**world.PREPARE, "holdout_videos": 0, "fps": 30})
    preparer = Preparer(BaseDir.open(world.base()), cfg)
    with pytest.raises(ConfigError, match="other settings"):
        preparer.run([videos], out, progress=False)


def test_frames_are_resampled_to_the_model_rate(tmp_path):
    """A 30 fps video whose frames show their index, read at 25 fps: frame n is the source
    frame nearest n / 25 s."""
    frames = np.stack([np.full((32, 32, 3), 8 * i, np.uint8) for i in range(30)])
    path = write_video(tmp_path / "count.mp4", frames, None, fps=30)
    got = [round(f.mean() / 8) for f in iter_frames(path, 25)]
    assert got == [round(n * 30 / 25 + 1e-9) for n in range(25)]
    start = [round(f.mean() / 8) for f in iter_frames(path, 25, start=0.4, stop=0.6)]
    assert start == [round((0.4 + n / 25) * 30 + 1e-9) for n in range(5)]


def test_clips_are_cut_at_pauses_and_shots():
    voiced = np.zeros(200, bool)
    voiced[10:60] = True  # speech with a short pause
    voiced[64:90] = True
    voiced[130:200] = True  # after a long pause; a shot change at 160
    clips, skipped = plan_clips(voiced, [160], min_frames=17, max_frames=60, max_pause=10, margin=2)
    # 8..92 (pause bridged, margins) is split in two; the second run is cut at the shot
    assert [(c.start, c.frames) for c in clips] == [(8, 41), (50, 41), (128, 29), (160, 37)]
    assert not skipped
    _, skipped = plan_clips(voiced, [160], min_frames=41, max_frames=60, max_pause=10, margin=2)
    assert skipped[SkipReason.TOO_SHORT] == 2
    _, skipped = plan_clips(
        np.zeros(50, bool), [], min_frames=5, max_frames=60, max_pause=5, margin=0
    )
    assert skipped == {SkipReason.NO_SPEECH: 1}
    thumbs = np.concatenate([np.full((5, 8, 8), 30, np.uint8), np.full((5, 8, 8), 200, np.uint8)])
    assert shot_changes(thumbs, 0.4) == [5]
