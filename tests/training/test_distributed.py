"""Distributed and resumed training compute exactly what one uninterrupted process computes.

Real ``torch.distributed`` with the gloo backend, started by ``torchrun`` (an existing launcher:
no process orchestration of our own), on the tiny base with the adapter and LoRA trained.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from liveface.training import checkpoints as ck
from liveface.training.cli import main
from tests.training import world

ARGS = (
    "--trainable",
    "adapter+lora",
    "--lora-rank",
    "4",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--save-every",
    "0",
    "--log-every",
    "1",
    "--device",
    "cpu",
)


def _train(run, *extra):
    config = world._config("small", {"adapter": world.ADAPTER})
    args = (
        "train",
        "--base",
        world.base(),
        "--data",
        world.data(),
        "--run-dir",
        run,
        "--config",
        config,
        *ARGS,
        *extra,
    )
    return [str(a) for a in args]


def _end(pid: int) -> None:
    """SIGKILL a process this test started and its children (found by parent pid)."""
    ps = ["ps", "-o", "pid=", "--ppid", str(pid)]
    children = subprocess.run(ps, capture_output=True, text=True).stdout.split()
    for p in [pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _weights(run):
    return load_file(str(ck.latest_checkpoint(run) / ck.TRAINED))


def _start_weights():
    """The trainable weights before any step (the base's adapter and the seeded LoRA)."""
    from liveface.training.base import BaseDir
    from liveface.training.config import AdapterSpec, TrainConfig
    from liveface.training.data.shards import ShardDataset
    from liveface.training.model import build_models

    config = TrainConfig(
        trainable="adapter+lora", lora_rank=4, adapter=AdapterSpec(**world.ADAPTER)
    )
    models = build_models(BaseDir.open(world.base()), config, ShardDataset(world.data()).config)
    return models.state()


def test_two_gloo_processes_give_the_update_of_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "liveface.training",
        *_train(tmp_path / "two", "--steps", "3"),
    ]
    log = tmp_path / "torchrun.log"
    with log.open("w") as f:
        # torchrun's workers run in sessions of their own: on a hang they are ended by pid.
        proc = subprocess.Popen(
            cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            _end(proc.pid)
            pytest.fail(f"torchrun did not finish:\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert main(_train(tmp_path / "one", "--steps", "3")) == 0
    two, one, start = _weights(tmp_path / "two"), _weights(tmp_path / "one"), _start_weights()
    assert set(two) == set(one)
    moved = max(float((one[k] - start[k]).abs().max()) for k in one)
    assert moved > 1e-4  # the steps did something
    for k in one:
        # the same samples and noise, gradients averaged by DDP instead of in one batch: equal up
        # to float summation order
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4)


def test_stop_and_resume_gives_the_uninterrupted_weights(tmp_path):
    assert main(_train(tmp_path / "resumed", "--steps", "6", "--stop-at", "3")) == 0
    assert ck.latest_checkpoint(tmp_path / "resumed").name.endswith("00000003")
    assert main(_train(tmp_path / "resumed", "--steps", "6")) == 0
    assert main(_train(tmp_path / "straight", "--steps", "6")) == 0
    resumed, straight = _weights(tmp_path / "resumed"), _weights(tmp_path / "straight")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], atol=0, rtol=0)
    a = torch.load(ck.latest_checkpoint(tmp_path / "resumed") / ck.OPTIMIZER, weights_only=False)
    b = torch.load(ck.latest_checkpoint(tmp_path / "straight") / ck.OPTIMIZER, weights_only=False)
    for i, state in b["state"].items():
        torch.testing.assert_close(a["state"][i]["exp_avg_sq"], state["exp_avg_sq"], atol=0, rtol=0)
    losses = world.losses(tmp_path / "resumed")
    assert losses.shape == (6,)
    np_straight = world.losses(tmp_path / "straight")
    assert (losses == np_straight).all()


def test_resuming_with_other_settings_is_refused(tmp_path, capsys):
    assert main(_train(tmp_path / "run", "--steps", "2", "--stop-at", "1")) == 0
    assert main(_train(tmp_path / "run", "--steps", "2", "--lr", "5e-3")) == 2
    assert "other settings (lr)" in capsys.readouterr().err
