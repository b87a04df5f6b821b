"""The training tests' shared world, built once per test session and only as far as asked.

Stages (each runs the real command line, ``liveface.training.cli.main``, in this process):

1. ``videos()``: 12 synthetic talking videos of 3 s, one held-out video of 5 s (sorted last), and
   three bad ones: no face (VP9/Opus in mkv), no speech, too short;
2. ``base()``: the tiny base checkpoint (:mod:`tests.training.models`);
3. ``data()``: ``prepare`` at 64x64 (a 4x4 latent grid);
4. ``pretrained()``: the base DiT trained as a whole without audio (audio dropout 1), standing in
   for a pretrained Wan2.2, exported as the base of the next stage;
5. ``teacher()``: the audio adapter trained on that frozen base, exported with the guided
   25-step sampler;
6. ``student()``: the teacher consistency-distilled to 4 steps, exported.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from liveface.training.cli import main
from tests.training.models import write_base
from tests.training.synthetic import frame_energy, talking_video

SIZE = 64
TRAIN_VIDEOS = 12
GUIDANCE = 3.0
PREPARE = {
    "width": SIZE,
    "height": SIZE,
    "crop": {"face_height": 0.6},
    "storage": "float32",
    "min_seconds": 0.8,
    "max_seconds": 6.0,
    "holdout_videos": 1,
    "clips_per_shard": 4,
}
ADAPTER = {"hidden_dim": 64, "tokens_per_frame": 2}
TEACHER_SAMPLER = {"kind": "euler", "steps": 25, "guidance_scale": GUIDANCE}
PRETRAIN = {
    "steps": 400,
    "batch_size": 8,
    "lr": 2e-3,
    "trainable": "full",
    "audio_dropout": 1.0,
    "text_dropout": 0.0,
    "log_every": 10,
    "save_every": 0,
    "adapter": ADAPTER,
    "preview": TEACHER_SAMPLER,
}
TRAIN = {**PRETRAIN, "steps": 500, "lr": 3e-3, "trainable": "adapter", "audio_dropout": 0.1}
DISTILL = {
    "steps": 250,
    "batch_size": 8,
    "lr": 1e-3,
    "trainable": "adapter+lora",
    "lora_rank": 8,
    "log_every": 10,
    "save_every": 0,
    "adapter": ADAPTER,
    "distill": {"guidance_scale": GUIDANCE, "teacher_steps": 25},
}


@functools.cache
def root() -> Path:
    path = Path(tempfile.mkdtemp(prefix="liveface-training-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _config(name: str, data: dict) -> str:
    path = root() / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def run_cli(*args: str) -> None:
    code = main([str(a) for a in args])
    assert code == 0, f"liveface.training {args[0]} failed with {code}"


@functools.cache
def videos() -> Path:
    d = root() / "videos"
    d.mkdir()
    for i in range(TRAIN_VIDEOS):
        talking_video(d / f"talk{i:02d}.mp4", 3.0, seed=i)
    talking_video(d / "bad_noface.mkv", 2.0, seed=50, face=False)
    talking_video(d / "bad_silent.mp4", 2.0, seed=51, speech=False)
    talking_video(d / "bad_short.mp4", 0.5, seed=52)
    talking_video(d / "zz_heldout.mp4", 5.0, seed=100)
    return d


@functools.cache
def base() -> Path:
    return write_base(root() / "base")


@functools.cache
def data() -> Path:
    out = root() / "data"
    run_cli(
        "prepare",
        videos(),
        "--base",
        base(),
        "--out",
        out,
        "--config",
        _config("prepare", PREPARE),
        "--quiet",
        "--device",
        "cpu",
    )
    return out


def export(base_dir: Path, run: Path, name: str, *extra: str) -> Path:
    out = root() / name
    run_cli("export", "--base", base_dir, "--run-dir", run, "--data", data(), "--out", out, *extra)
    return out


@functools.cache
def pretrained() -> Path:
    run = root() / "run_pretrain"
    run_cli(
        "train",
        "--base",
        base(),
        "--data",
        data(),
        "--run-dir",
        run,
        "--config",
        _config("pretrain", PRETRAIN),
        "--device",
        "cpu",
    )
    return export(base(), run, "base_pretrained", "--sampler", "teacher")


@functools.cache
def teacher_run() -> Path:
    run = root() / "run_teacher"
    run_cli(
        "train",
        "--base",
        pretrained(),
        "--data",
        data(),
        "--run-dir",
        run,
        "--config",
        _config("train", TRAIN),
        "--device",
        "cpu",
    )
    return run


@functools.cache
def teacher() -> Path:
    return export(pretrained(), teacher_run(), "teacher", "--sampler", "teacher")


@functools.cache
def student_run() -> Path:
    run = root() / "run_student"
    run_cli(
        "distill",
        "--base",
        teacher(),
        "--data",
        data(),
        "--run-dir",
        run,
        "--config",
        _config("distill", DISTILL),
        "--device",
        "cpu",
    )
    return run


@functools.cache
def student() -> Path:
    return export(teacher(), student_run(), "student")


def losses(run: Path) -> np.ndarray:
    """The logged losses of a run, in step order."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(line)["loss"] for line in lines])


@functools.cache
def held_out() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The held-out clip: its portrait, its 16 kHz audio and its true frames (as prepared)."""
    from liveface.training.data.crop import CropConfig, Cropper
    from liveface.training.data.media import iter_frames
    from liveface.training.data.shards import ShardDataset

    ds = ShardDataset(data())
    (clip,) = ds.held_out_clips()
    info = ds.clips[clip]
    frames = list(
        iter_frames(info.source, 25, start=info.start / 25, stop=(info.start + info.frames) / 25)
    )
    crop = Cropper(CropConfig(face_height=0.6), SIZE, SIZE)
    m = crop.transform([frames[i] for i in crop.probe_indices(len(frames))])
    truth = np.stack([crop.apply(f, m) for f in frames])
    portrait = ds.portrait(clip)
    assert portrait is not None
    return portrait, ds.tensor(clip, "wave").float().numpy(), truth


def mouth_opening(frames: np.ndarray) -> np.ndarray:
    """How open the mouth is in each frame: darkness of the pixels the true mouth moves in."""
    truth = held_out()[2].astype(np.float64).mean(axis=-1)
    spread = truth.std(axis=0)
    mask = spread > 0.3 * spread.max()
    return -frames.astype(np.float64).mean(axis=-1)[:, mask].mean(axis=1)


def audio_correlation(frames: np.ndarray) -> float:
    """Correlation of the rendered mouth opening with the held-out audio's loudness per frame."""
    wave = held_out()[1]
    energy = frame_energy(wave, frames.shape[0])
    return float(np.corrcoef(mouth_opening(frames), energy)[0, 1])
