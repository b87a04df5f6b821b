"""``python -m liveface.training {prepare,train,distill,codebook,export}``.

Typical use (see ``docs/training.md``)::

    python -m liveface.training prepare videos/ --base BASE --out data/
    torchrun --nproc-per-node 8 -m liveface.training train --base BASE --data data/ \\
        --run-dir runs/teacher
    python -m liveface.training export --base BASE --run-dir runs/teacher --data data/ \\
        --out teacher/
    torchrun --nproc-per-node 8 -m liveface.training distill --base teacher/ --data data/ \\
        --run-dir runs/student
    python -m liveface.training codebook --data data/ --out codebook.safetensors --size 40000
    python -m liveface.training export --base teacher/ --run-dir runs/student --data data/ \\
        --codebook codebook.safetensors --out student/
    python run_avatar.py --engine diffusion --checkpoint student/

Flags override the matching fields of ``--config FILE`` (a JSON object of
:class:`~liveface.training.config.TrainConfig` or of the preparation config).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liveface.engines.diffusion.json_config import parse_object
from liveface.errors import AvatarError, ConfigError

log = logging.getLogger("liveface.training")


def _json(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = Path(path).expanduser().read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config {path} ({e})") from e
    return parse_object(text, str(path))


def _overrides(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


# -- prepare ------------------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> int:
    from liveface.training.base import BaseDir
    from liveface.training.data.prepare import PrepareConfig, Preparer

    data = _json(args.config)
    data.update(
        _overrides(
            args,
            (
                "width",
                "height",
                "fps",
                "min_seconds",
                "max_seconds",
                "context_ms",
                "lookahead_ms",
                "holdout_videos",
                "clips_per_shard",
                "storage",
                "adapter_kernel",
            ),
        )
    )
    crop = dict(data.get("crop", {}))
    crop.update(
        {k: v for k, v in (("mode", args.crop), ("face_height", args.face_height)) if v is not None}
    )
    data["crop"] = crop
    config = PrepareConfig.from_dict(data)
    base = BaseDir.open(args.base, device=_device(args.device))
    report = Preparer(base, config).run(args.inputs, args.out, progress=not args.quiet)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items())) or "none"
    print(
        f"prepared {report.clips} clips from {report.videos} videos into {args.out}; "
        f"skipped: {skipped}"
    )
    return 0


def _device(name: str | None) -> str:
    import torch

    if name is not None:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- train / distill ----------------------------------------------------------------------------
_TRAIN_FLAGS = (
    "steps",
    "batch_size",
    "lr",
    "trainable",
    "precision",
    "chunk_latents",
    "save_every",
    "sample_every",
    "log_every",
    "seed",
    "lora_rank",
)


def _train_config(args: argparse.Namespace, distill: bool) -> Any:
    from liveface.training.config import TrainConfig

    data = _json(args.config)
    data.update(_overrides(args, _TRAIN_FLAGS))
    if args.gradient_checkpointing:
        data["gradient_checkpointing"] = True
    if distill:
        spec = dict(data.get("distill") or {})
        spec.update(
            {
                k: v
                for k, v in (
                    ("guidance_scale", args.guidance),
                    ("teacher_steps", args.teacher_steps),
                )
                if v is not None
            }
        )
        data["distill"] = spec
        data.setdefault("trainable", "adapter+lora")
        data.setdefault("text_dropout", 0.0)
        data.setdefault("audio_dropout", 0.0)
    return TrainConfig.from_dict(data)


def cmd_train(args: argparse.Namespace, distill: bool = False) -> int:
    from liveface.training.trainer import Trainer

    config = _train_config(args, distill)
    factory = None
    if distill:
        from torch import nn

        from liveface.engines.diffusion.streaming.motion import MotionLayout
        from liveface.training.distill import ConsistencyLoss
        from liveface.training.model import Models

        spec = config.distill
        bf16 = config.precision == "bf16"

        def factory(models: Models, layout: MotionLayout, warmup: int) -> nn.Module:
            assert spec is not None
            return ConsistencyLoss(models, layout, warmup, bf16, spec)

    trainer = Trainer(
        args.base,
        args.data,
        args.run,
        config,
        objective=factory,
        resume=not args.no_resume,
        device=args.device,
    )
    try:
        if config.sample_every and trainer.dist.main:
            from liveface.training.export import stream_settings
            from liveface.training.preview import PreviewHook

            sampler = config.distill.student if config.distill is not None else config.preview
            stream = stream_settings(
                config, trainer.datasets[0].config, sampler=sampler, codebook=False
            )
            trainer.preview = PreviewHook(
                trainer.models,
                trainer.base,
                trainer.datasets[0],
                trainer.run_dir,
                trainer.logger,
                stream,
            )
        losses = trainer.run(stop_at=args.stop_at)
        if trainer.dist.main and losses:
            print(
                f"{'distilled' if distill else 'trained'} to step {trainer.step}: loss "
                f"{losses[0]:.4f} -> {losses[-1]:.4f}; checkpoints in {args.run}"
            )
    finally:
        trainer.close()
    return 0


# -- codebook -----------------------------------------------------------------------------------
def cmd_codebook(args: argparse.Namespace) -> int:
    from liveface.training.codebook import build_offline_codebook, write_codebook
    from liveface.training.data.shards import ShardDataset

    cb = build_offline_codebook(
        [ShardDataset(d) for d in args.data],
        args.size,
        max_features=args.max_features,
        iterations=args.iterations,
        tau=args.tau,
        tau_scale=args.tau_scale,
        seed=args.seed,
        device=_device(args.device),
    )
    write_codebook(args.out, cb)
    print(f"codebook of {cb.size} codes (tau {cb.tau:.4g}) written to {args.out}")
    return 0


# -- export -------------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from liveface.training import checkpoints as ck
    from liveface.training.config import TrainConfig
    from liveface.training.data.shards import ShardDataset
    from liveface.training.export import export_checkpoint, stream_settings

    trained, meta = ck.trained_weights(args.run)
    run = Path(args.run).expanduser()
    config = TrainConfig.from_dict(ck.run_config(run)["config"]) if run.is_dir() else TrainConfig()
    data = ShardDataset(args.data)
    role = args.sampler or ("student" if config.distill is not None else "teacher")
    if role == "student":
        sampler = config.distill.student if config.distill is not None else _student_default()
    else:
        sampler = config.preview
    portrait = None
    if args.portrait is not None:
        from liveface.pipeline.image import load_image

        portrait = load_image(args.portrait)
    stream = stream_settings(
        config, data.config, sampler=sampler, codebook=args.codebook is not None
    )
    out = export_checkpoint(
        args.base,
        args.out,
        trained=trained,
        meta=meta,
        stream=stream,
        data=data,
        codebook=args.codebook,
        portrait=portrait,
    )
    print(
        f"exported a {role} ({sampler.kind}, {sampler.num_steps} steps, guidance "
        f"{sampler.guidance_scale:g}) to {out}"
    )
    return 0


def _student_default() -> Any:
    from liveface.engines.diffusion.sampling.flow import SamplerConfig

    return SamplerConfig()


# -- parser -------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser, distill: bool) -> None:
    p.add_argument(
        "--base",
        required=True,
        help="base checkpoint directory" + (" (the exported teacher)" if distill else ""),
    )
    p.add_argument("--data", required=True, nargs="+", help="prepared dataset director(ies)")
    p.add_argument(
        "--run-dir",
        dest="run",
        required=True,
        help="run directory (resumed when it has a checkpoint)",
    )
    p.add_argument("--config", help="JSON training config")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch (all processes)")
    p.add_argument("--lr", type=float)
    p.add_argument("--trainable", choices=("adapter", "adapter+lora", "full"))
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--precision", choices=("fp32", "bf16"))
    p.add_argument("--chunk-latents", type=int)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--save-every", type=int)
    p.add_argument("--sample-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop-at", type=int, help="stop (with a checkpoint) at this step")
    p.add_argument("--no-resume", action="store_true", help="start over even with a checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    if distill:
        p.add_argument("--guidance", type=float, help="the teacher's guidance scale")
        p.add_argument("--teacher-steps", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m liveface.training",
        description="Train and distill the diffusion engine's audio-driven model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="videos -> cached training clips (shards)")
    p.add_argument("inputs", nargs="+", help="video files or folders")
    p.add_argument("--base", required=True, help="base checkpoint directory (VAE, speech, text)")
    p.add_argument("--out", required=True, help="dataset directory (resumed when it exists)")
    p.add_argument("--config", help="JSON preparation config")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--fps", type=int)
    p.add_argument("--crop", choices=("face", "center"))
    p.add_argument("--face-height", type=float)
    p.add_argument("--min-seconds", type=float)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--context-ms", type=int)
    p.add_argument("--lookahead-ms", type=int)
    p.add_argument("--adapter-kernel", type=int)
    p.add_argument("--holdout-videos", type=int)
    p.add_argument("--clips-per-shard", type=int)
    p.add_argument("--storage", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _train_args(sub.add_parser("train", help="train the audio adapter (torchrun + DDP)"), False)
    _train_args(sub.add_parser("distill", help="consistency-distil a 4-step student"), True)
    p = sub.add_parser("codebook", help="offline k-means codebook over the cached latents")
    p.add_argument("--data", required=True, nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=40000, help="codes (Soul uses 40K)")
    p.add_argument("--max-features", type=int, default=2_000_000)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--tau", type=float)
    p.add_argument("--tau-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device")
    p = sub.add_parser("export", help="write a checkpoint directory the engine loads")
    p.add_argument("--base", required=True, help="the base the run trained on")
    p.add_argument(
        "--run-dir", dest="run", required=True, help="run directory, checkpoint or trained file"
    )
    p.add_argument("--data", required=True, help="the prepared dataset (settings, prompts)")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--sampler",
        choices=("student", "teacher"),
        help="schedule written to liveface.json (default: student for distill runs)",
    )
    p.add_argument("--codebook", help="codebook.safetensors to include (source 'file')")
    p.add_argument("--portrait", help="default portrait image")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    commands = {
        "prepare": cmd_prepare,
        "train": cmd_train,
        "codebook": cmd_codebook,
        "export": cmd_export,
        "distill": lambda a: cmd_train(a, distill=True),
    }
    try:
        return int(commands[args.command](args))
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
