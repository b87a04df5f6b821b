"""The training loop: ``torchrun`` + DDP, AdamW, resumable checkpoints, logs, preview videos.

Launch with ``torchrun --nproc-per-node N -m liveface.training train ...`` (or plain ``python -m``
for one process). Each process holds the frozen base and the trainable weights; DDP averages the
gradients of the trainable weights only (the frozen ones are neither synchronised nor bucketed).
The global batch is split evenly over the processes, and every sample's randomness is its own
(:mod:`.batch`), so N processes compute the same update as one process with the same global batch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from liveface.engines.diffusion.streaming.motion import MotionLayout
from liveface.errors import ConfigError
from liveface.training import checkpoints as ck
from liveface.training.base import BaseDir
from liveface.training.batch import Batch, SampleLoader, SampleOrder
from liveface.training.config import TrainConfig
from liveface.training.data.shards import ShardDataset
from liveface.training.model import Models, build_models, check_timeline

log = logging.getLogger(__name__)


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Dist:
    """Join the ``torchrun`` job (``WORLD_SIZE`` > 1), NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    dev = (
        torch.device(f"cuda:{local}" if cuda else "cpu")
        if device in (None, "cpu", "cuda")
        else torch.device(device)
    )
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


def _mean_over_ranks(x: torch.Tensor, d: Dist) -> float:
    x = x.detach()
    if d.world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= d.world
    return float(x)


class Logger:
    """Metrics as JSON lines and, when the package is installed, TensorBoard scalars."""

    def __init__(self, run: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run / "metrics.jsonl"
        self.tb: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tb"))
            except ImportError:
                log.warning(
                    "tensorboard is not installed (pip install 'liveface[training]'): "
                    "metrics go to %s only",
                    self.path,
                )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def image(self, step: int, name: str, image: Any) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


ObjectiveFactory = Callable[[Models, MotionLayout, int], nn.Module]


class Trainer:
    """One run (see the module docstring).

    Args:
        base: the base checkpoint directory.
        data: prepared dataset directories.
        run: the run directory (created; resumed when it holds a checkpoint and ``resume``).
        config: the run's settings.
        objective: builds the loss module from the models, the motion layout and the projector
            warm-up (default: :class:`~.objective.FlowMatchingLoss`).
        adapter_state: adapter weights to start from (``adapter.*`` names stripped).
        resume: continue from the run's latest checkpoint if there is one.
        device: ``cpu``, ``cuda`` or None (CUDA when available).
    """

    def __init__(
        self,
        base: str | Path,
        data: list[str | Path],
        run: str | Path,
        config: TrainConfig,
        *,
        objective: ObjectiveFactory | None = None,
        adapter_state: dict | None = None,
        resume: bool = True,
        device: str | None = None,
    ) -> None:
        self.dist = d = init_distributed(device)
        self.config = config
        if config.batch_size % d.world:
            raise ConfigError(
                f"batch_size {config.batch_size} must be a multiple of the {d.world} processes"
            )
        self.run_dir = Path(run).expanduser()
        self.datasets = [ShardDataset(p) for p in data]
        ds_cfg = self.datasets[0].config
        prep = ds_cfg["prepare"]
        bf16 = config.precision == "bf16"
        self.base = BaseDir.open(
            base, device=d.device, dtype=torch.bfloat16 if bf16 else torch.float32
        )
        self.models = build_models(self.base, config, ds_cfg, adapter_state=adapter_state)
        timeline = check_timeline(
            self.models.adapter, ds_cfg, prep["context_ms"], prep["lookahead_ms"]
        )
        dit = self.models.dit
        ratio = ds_cfg["spatial_ratio"]
        self.layout = MotionLayout(
            config.motion,
            dit.config.in_dim,
            prep["height"] // ratio,
            prep["width"] // ratio,
            (dit.config.patch_size[1], dit.config.patch_size[2]),
        )
        self.loader = SampleLoader(
            self.datasets, config.motion.frames, config.chunk_latents, dit.config.text_len, config
        )
        self.order = SampleOrder(self.datasets, config.chunk_latents, config.seed)
        if objective is None:
            from liveface.training.objective import FlowMatchingLoss

            def objective(m: Models, layout: MotionLayout, warm: int) -> nn.Module:
                return FlowMatchingLoss(m, layout, warm, bf16)

        self.objective = objective(self.models, self.layout, timeline.warmup_latents).to(d.device)
        self.params = list(self.models.trainable().values())
        self.model: nn.Module = self.objective
        if d.world > 1:
            frozen = [n for n, p in self.objective.named_parameters() if not p.requires_grad]
            self.objective._ddp_params_and_buffers_to_ignore = frozen  # type: ignore[assignment]
            self.model = nn.parallel.DistributedDataParallel(
                self.objective,
                device_ids=[d.device.index] if d.device.type == "cuda" else None,
                broadcast_buffers=False,
            )
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.step = 0
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logger = Logger(self.run_dir, d.main)
        ckpt = ck.latest_checkpoint(self.run_dir) if resume else None
        if ckpt is not None:
            self._resume(ckpt)
        elif d.main:
            info = {
                "config": config.to_dict(),
                "base": str(Path(base).resolve()),
                "data": [str(Path(p).resolve()) for p in data],
                "world": d.world,
            }
            (self.run_dir / ck.RUN_CONFIG).write_text(json.dumps(info, indent=2))
        self.preview: Callable[[int], object] | None = None

    def _resume(self, ckpt: Path) -> None:
        saved = ck.run_config(self.run_dir)["config"]
        mine = self.config.to_dict()
        changed = [
            k
            for k in mine
            if k not in ("steps", "log_every", "save_every", "sample_every", "keep_checkpoints")
            and saved.get(k) != json.loads(json.dumps(mine[k]))
        ]
        if changed:
            raise ConfigError(
                f"{self.run_dir} was started with other settings ({', '.join(changed)});"
                " resume with the same ones or use another run directory"
            )
        r = ck.load_checkpoint(ckpt, rank=self.dist.rank, map_location=self.dist.device)
        self.models.load_state(r.trained)
        load_extra = getattr(self.objective, "load_extra_state", None)
        if load_extra is not None:
            load_extra(r.extra)
        self.optimizer.load_state_dict(r.optimizer)
        self.step = r.step
        log.info("resumed %s at step %d", ckpt, r.step)

    def _lr(self, step: int) -> float:
        w = self.config.warmup_steps
        return self.config.lr * (min(1.0, (step + 1) / w) if w else 1.0)

    def _batch(self, step: int) -> Batch:
        d = self.dist
        return self.loader.batch(
            self.order, self.order.local_indices(step, self.config.batch_size, d.rank, d.world)
        )

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One optimizer step; returns the batch's mean loss (over all processes) and the
        gradient norm."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        losses = self.model(batch.to(self.dist.device))
        loss = losses.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        self.optimizer.step()
        after = getattr(self.objective, "after_step", None)
        if after is not None:
            after()
        self.step += 1
        return _mean_over_ranks(loss, self.dist), float(norm)

    def save(self) -> Path:
        """Write a checkpoint of the current step on every process and publish it."""
        d = self.dist
        extra = getattr(self.objective, "extra_state", None)
        path = ck.save_part(
            self.run_dir,
            self.step,
            rank=d.rank,
            trained=self.models.state() if d.main else None,
            metadata=self.models.metadata(),
            extra=extra() if extra is not None and d.main else None,
            optimizer=self.optimizer.state_dict() if d.main else None,
            state=None,
        )
        if d.world > 1:
            dist.barrier()
        if d.main:
            seen = self.step * self.config.batch_size
            (path / ck.STATE).write_text(json.dumps({"step": self.step, "samples": seen}))
            ck.publish(self.run_dir, self.step, self.config.keep_checkpoints)
        if d.world > 1:
            dist.barrier()
        return path

    def run(self, stop_at: int | None = None) -> list[float]:
        """Train up to ``config.steps`` (or ``stop_at``, a checkpoint is written there);
        returns the losses of the steps run."""
        c, d = self.config, self.dist
        end = min(c.steps, stop_at) if stop_at is not None else c.steps
        losses: list[float] = []
        pool = ThreadPoolExecutor(1)  # the next batch loads while this one trains
        pending = pool.submit(self._batch, self.step) if self.step < end else None
        tic, done = time.perf_counter(), 0
        try:
            while self.step < end:
                assert pending is not None
                batch = pending.result()
                pending = pool.submit(self._batch, self.step + 1) if self.step + 1 < end else None
                loss, norm = self.train_step(batch)
                losses.append(loss)
                done += 1
                if c.log_every and (self.step % c.log_every == 0 or self.step == end):
                    now = time.perf_counter()
                    values = {
                        "loss": loss,
                        "grad_norm": norm,
                        "lr": self._lr(self.step - 1),
                        "samples_per_s": done * c.batch_size / max(now - tic, 1e-9),
                    }
                    if d.device.type == "cuda":
                        values["max_memory_gb"] = torch.cuda.max_memory_allocated(d.device) / 2**30
                    self.logger.scalars(self.step, values)
                    tic, done = now, 0
                if c.save_every and self.step % c.save_every == 0 and self.step < end:
                    self.save()
                if c.sample_every and self.step % c.sample_every == 0 and self.preview and d.main:
                    self.preview(self.step)
            self.save()
        finally:
            pool.shutdown(wait=True)
            self.logger.close()
        return losses

    def close(self) -> None:
        if self.dist.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
