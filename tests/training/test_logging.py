"""A run logs to TensorBoard and renders preview videos of a held-out portrait and audio."""

from __future__ import annotations

import av

from liveface.training.cli import main
from tests.training import world


def test_run_logs_to_tensorboard_and_writes_preview_videos(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = world._config(
        "preview",
        {
            "adapter": world.ADAPTER,
            "preview": {"kind": "euler", "steps": 2, "guidance_scale": 2.0},
        },
    )
    run = tmp_path / "run"
    args = [
        "train",
        "--base",
        world.base(),
        "--data",
        world.data(),
        "--run-dir",
        run,
        "--config",
        config,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--log-every",
        "1",
        "--sample-every",
        "2",
        "--save-every",
        "0",
        "--device",
        "cpu",
    ]
    assert main([str(a) for a in args]) == 0
    video = run / "samples" / "step-00000002.mp4"
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert c.streams.audio
    assert len(frames) == 100  # the first 4 s of the held-out audio at 25 fps
    assert frames[0].shape == (world.SIZE, world.SIZE, 3)
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert {"grad_norm", "lr", "samples_per_s"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["preview"]
