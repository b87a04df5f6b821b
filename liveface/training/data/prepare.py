"""``prepare``: a folder of talking videos -> cached, engine-ready training clips in shards.

Per video: decode (any container, frame rate and audio rate) -> find shot changes and speech
(:mod:`.segment`) -> per clip: frame it (:mod:`.crop`), encode its frames with the VAE, a single
frame as the reference (the portrait the engine would get), its audio with the speech encoder the
way the engine does (:mod:`.audio`), and its caption with the text encoder -> shards
(:mod:`.shards`). Videos that fail and clips that do not qualify are counted by
:class:`~.segment.SkipReason`. A finished video is recorded in ``progress.jsonl`` once its clips
are on disk, so an interrupted run resumes where it stopped.

Captions: a ``VIDEO.txt`` next to a video holds its prompt (a name of a precomputed embedding or
free text for umT5); without one the base's default prompt is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from liveface.engines.diffusion import json_config
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.audio_projector import AudioProjector
from liveface.errors import ConfigError, NoFaceError
from liveface.training.base import BaseDir
from liveface.training.config import STORAGE_DTYPES
from liveface.training.data.audio import (
    AudioTimeline,
    encode_chunks,
    encode_timeline,
    silence_states,
)
from liveface.training.data.crop import CropConfig, Cropper
from liveface.training.data.media import MediaError, iter_frames, probe, read_audio, thumbnails
from liveface.training.data.segment import (
    ClipSpan,
    SkipReason,
    plan_clips,
    shot_changes,
    valid_length,
    voiced_frames,
)
from liveface.training.data.shards import (
    PORTRAITS,
    PROMPTS,
    SILENCE,
    ClipInfo,
    ClipTensors,
    ShardWriter,
)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
#: Latent frames the VAE encodes per pass (bounds memory on long clips).
VAE_LATENTS_PER_PASS = 4


@dataclass(frozen=True)
class PrepareConfig:
    """How videos become training clips.

    Attributes:
        width, height, fps: the training frame size and rate (the engine's output).
        crop: framing (face crop from landmarks, or centre crop).
        shot_threshold: histogram distance (0..1) between frames that counts as a shot change.
        min_seconds, max_seconds: clip length bounds (longer speech runs are split).
        max_pause_ms: silences up to this long do not cut a clip.
        margin_ms: silence kept before and after speech.
        context_ms, lookahead_ms: the engine's audio context and lookahead (the stream's
            ``audio_context_ms`` and the server's ``lookahead_ms``).
        adapter_kernel: the audio adapter's ``kernel_size`` (sets its warm-up).
        audio: ``exact`` (the engine's window for every chunk position: what the engine computes,
            bit for bit) or ``stitched`` (one timeline per clip, ``1 / (warm-up + 1)`` of the
            storage, approximate warm-up features); see :mod:`.audio`.
        chunk_latents: the engine chunk (latent frames) ``exact`` windows are computed for; the
            server's default ``chunk_frames = 4`` is one latent frame.
        max_chunk_latents: silence states are stored for chunks of 1..this many latent frames.
        reference: ``random`` (a random frame of the clip) or ``first`` as the portrait.
        clips_per_shard: clips per shard file.
        holdout_videos: the last videos (sorted by path) whose clips are held out (previews,
            evaluation).
        storage: dtype of the stored latents and speech states.
        seed: the random reference frames.
    """

    width: int = 512
    height: int = 512
    fps: int = 25
    crop: CropConfig = field(default_factory=CropConfig)
    shot_threshold: float = 0.4
    min_seconds: float = 1.0
    max_seconds: float = 8.0
    max_pause_ms: int = 600
    margin_ms: int = 200
    context_ms: int = 1000
    lookahead_ms: int = 0
    adapter_kernel: int = 3
    audio: str = "exact"
    chunk_latents: int = 1
    max_chunk_latents: int = 4
    reference: str = "random"
    clips_per_shard: int = 64
    holdout_videos: int = 0
    storage: str = "bfloat16"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.crop, Mapping):
            object.__setattr__(self, "crop", CropConfig(**self.crop))
        problems = []
        if min(self.width, self.height, self.fps, self.clips_per_shard) < 1:
            problems.append("width, height, fps and clips_per_shard must be positive")
        if not 0 < self.shot_threshold <= 1:
            problems.append("shot_threshold must be in (0, 1]")
        if not 0 < self.min_seconds <= self.max_seconds:
            problems.append("need 0 < min_seconds <= max_seconds")
        if min(self.max_pause_ms, self.margin_ms, self.context_ms, self.lookahead_ms) < 0:
            problems.append("durations must be >= 0")
        if self.adapter_kernel < 1 or self.max_chunk_latents < 1 or self.holdout_videos < 0:
            problems.append("adapter_kernel, max_chunk_latents >= 1; holdout_videos >= 0")
        if self.audio not in ("exact", "stitched"):
            problems.append("audio must be 'exact' or 'stitched'")
        if not 1 <= self.chunk_latents <= self.max_chunk_latents:
            problems.append("need 1 <= chunk_latents <= max_chunk_latents")
        if self.reference not in ("random", "first"):
            problems.append("reference must be 'random' or 'first'")
        if self.storage not in STORAGE_DTYPES:
            problems.append(f"storage must be one of {', '.join(STORAGE_DTYPES)}")
        if problems:
            raise ConfigError("invalid prepare config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrepareConfig:
        return json_config.build(cls, data, "prepare")


@dataclass
class PrepareReport:
    """What a run did: videos finished now, clips written now, skips by reason (this run)."""

    videos: int = 0
    clips: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def find_videos(inputs: Sequence[str | Path]) -> list[Path]:
    """Video files named directly or found (recursively) in the given folders, sorted."""
    out: set[Path] = set()
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            out.update(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            out.add(p)
        else:
            raise ConfigError(f"{p} is neither a video file nor a folder")
    return sorted(out)


def clip_id(video: Path, start: int) -> str:
    digest = hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:8]
    return f"{video.stem}-{digest}-{start:07d}"


def prompt_key(text: str) -> str:
    return "p" + hashlib.sha1(text.encode()).hexdigest()[:12]


class Preparer:
    """Runs the preparation with the base's VAE, speech encoder and text embeddings."""

    def __init__(self, base: BaseDir, config: PrepareConfig) -> None:
        self.base, self.config = base, config
        dit_cfg = base.dit_config()
        self.vae = base.vae()
        self.encoder = base.speech_encoder()
        self.prompts = base.prompts(dit_cfg.text_dim, dit_cfg.text_len)
        ratio = self.vae.spatial_ratio * max(dit_cfg.patch_size[1:])
        if config.width % ratio or config.height % ratio:
            raise ConfigError(f"width and height must be multiples of {ratio} for this base")
        audio_cfg = AudioConfig(
            dim=dit_cfg.dim,
            num_heads=dit_cfg.num_heads,
            layers=(0,),
            feature_dim=self.encoder.hidden_size,
            num_feature_layers=self.encoder.num_hidden_states,
            encoder_kind=self.encoder.kind,
            fps=config.fps,
            frames_per_latent=self.vae.temporal_ratio,
            kernel_size=config.adapter_kernel,
        )
        with torch.device("meta"):
            reach = AudioProjector(audio_cfg).left_context_frames
        self.timeline = AudioTimeline.create(
            audio_cfg, reach, config.context_ms, config.lookahead_ms
        )
        self.cropper = Cropper(config.crop, config.width, config.height)
        self.dtype = getattr(torch, config.storage)
        self._texts: dict[str, str] = {}
        self._embeddings: dict[str, torch.Tensor] = {}
        self._new_prompts = False  # added since prompts.safetensors was last written

    def dataset_config(self) -> dict[str, Any]:
        """What ``dataset.json`` records (and a resumed run must match)."""
        return {
            "prepare": self.config.to_dict(),
            "timeline": self.timeline.to_dict(),
            "latent_channels": self.vae.latent_channels,
            "spatial_ratio": self.vae.spatial_ratio,
            "temporal_ratio": self.vae.temporal_ratio,
            "speech_encoder": {
                "kind": self.encoder.kind,
                "hidden_size": self.encoder.hidden_size,
                "hidden_states": self.encoder.num_hidden_states,
            },
        }

    def run(
        self, inputs: Sequence[str | Path], out: str | Path, *, progress: bool = True
    ) -> PrepareReport:
        from tqdm import tqdm

        root = Path(out).expanduser()
        videos = find_videos(inputs)
        if not videos:
            raise ConfigError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) found in {list(inputs)}")
        writer = ShardWriter(root, self.dataset_config(), self.config.clips_per_shard)
        done = writer.done_videos()
        held = {str(v) for v in videos[len(videos) - self.config.holdout_videos :]}
        holdout = list(writer.index["holdout"])
        silence = {
            str(k): silence_states(self.encoder, self.timeline, k).to(self.dtype).contiguous()
            for k in range(1, self.config.max_chunk_latents + 1)
        }
        save_file(silence, str(root / SILENCE))
        self._load_prompts(root)
        report = PrepareReport()
        todo = [v for v in videos if str(v) not in done]
        bar = tqdm(todo, desc="prepare", unit="video", disable=not progress)
        for video in bar:
            clips, skipped = self.process_video(
                video, portraits=root / PORTRAITS if str(video) in held else None
            )
            for info, tensors in clips:
                writer.add_clip(info, tensors)
                if str(video) in held:
                    holdout.append(info.id)
            self._save_prompts(root)
            writer.finish_video(str(video), len(clips), {r.value: n for r, n in skipped.items()})
            report.videos += 1
            report.clips += len(clips)
            report.skipped.update({r.value: n for r, n in skipped.items()})
            bar.set_postfix(clips=report.clips, skipped=sum(report.skipped.values()))
        writer.flush()
        writer.set_holdout(holdout)
        self._save_prompts(root)
        return report

    def _load_prompts(self, root: Path) -> None:
        """The prompts of an earlier run into this one (a resumed run keeps them, texts too)."""
        path = root / PROMPTS
        if not path.is_file():
            return
        with safe_open(str(path), framework="pt") as f:
            texts = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                self._embeddings.setdefault(key, f.get_tensor(key))
                if key in texts:
                    self._texts.setdefault(key, texts[key])

    def _save_prompts(self, root: Path) -> None:
        path = root / PROMPTS
        if not self._new_prompts and path.is_file():
            return  # nothing added since the last write
        tensors = {k: v.contiguous() for k, v in self._embeddings.items()}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=dict(self._texts))
        tmp.replace(path)
        self._new_prompts = False

    def _prompt(self, video: Path) -> str:
        caption = video.with_suffix(".txt")
        text = caption.read_text().strip() if caption.is_file() else ""
        text = text or self.prompts.default
        key = prompt_key(text)
        if key not in self._embeddings:
            self._embeddings[key] = self.prompts.embedding(text).float().cpu()
            self._texts[key] = text
            self._new_prompts = True
        return key

    def process_video(
        self, video: Path, *, portraits: Path | None = None
    ) -> tuple[list[tuple[ClipInfo, ClipTensors]], Counter[SkipReason]]:
        """Clips of one video, and what was skipped (by reason); with ``portraits`` each clip's
        reference frame is also saved there as ``ID.png`` (held-out clips: previews, evaluation)."""
        c = self.config
        skipped: Counter[SkipReason] = Counter()
        try:
            info = probe(video)
            if not info.has_audio:
                skipped[SkipReason.NO_AUDIO] += 1
                return [], skipped
            audio = read_audio(video, self.timeline.sample_rate)
            thumbs = thumbnails(video, c.fps)
        except MediaError as e:
            log.warning("skipping %s: %s", video, e)
            skipped[SkipReason.UNREADABLE] += 1
            return [], skipped
        sr = self.timeline.sample_rate
        voiced = voiced_frames(audio, sr, c.fps, thumbs.shape[0])
        spans, planned = plan_clips(
            voiced,
            shot_changes(thumbs, c.shot_threshold),
            min_frames=valid_length(round(c.min_seconds * c.fps)),
            max_frames=round(c.max_seconds * c.fps),
            max_pause=round(c.max_pause_ms * c.fps / 1000),
            margin=round(c.margin_ms * c.fps / 1000),
            ratio=self.vae.temporal_ratio,
        )
        skipped.update(planned)
        prompt = self._prompt(video)
        out = []
        for span in spans:
            try:
                clip = self._clip(video, span, audio, prompt, portraits)
            except NoFaceError as e:
                log.info("%s frames %d-%d: %s", video, span.start, span.stop, e)
                skipped[SkipReason.NO_FACE] += 1
                continue
            except MediaError as e:
                log.warning("%s frames %d-%d: %s", video, span.start, span.stop, e)
                skipped[SkipReason.UNREADABLE] += 1
                continue
            if clip is None:
                skipped[SkipReason.TOO_SHORT] += 1
            else:
                out.append(clip)
        return out, skipped

    @torch.no_grad()
    def _clip(
        self, video: Path, span: ClipSpan, audio: np.ndarray, prompt: str, portraits: Path | None
    ) -> tuple[ClipInfo, ClipTensors] | None:
        c, t = self.config, self.timeline
        frames = list(iter_frames(video, c.fps, start=span.start / c.fps, stop=span.stop / c.fps))
        n = valid_length(min(len(frames), span.frames), self.vae.temporal_ratio)
        if n < valid_length(round(c.min_seconds * c.fps)):
            return None
        frames = frames[:n]
        m = self.cropper.transform([frames[i] for i in self.cropper.probe_indices(n)])
        video_t = torch.from_numpy(np.stack([self.cropper.apply(f, m) for f in frames]))
        latents = self.vae.encode(video_t[None], latents_per_step=VAE_LATENTS_PER_PASS)[0]
        ident = clip_id(video, span.start)
        if c.reference == "random":
            seed = int(hashlib.sha1(f"{c.seed}:{ident}".encode()).hexdigest()[:8], 16)
            ref_index = int(np.random.default_rng(seed).integers(n))
        else:
            ref_index = 0
        reference = self.vae.encode(video_t[ref_index][None, None])[0]
        if portraits is not None:
            import cv2

            portraits.mkdir(parents=True, exist_ok=True)
            rgb = video_t[ref_index].numpy()
            cv2.imwrite(str(portraits / f"{ident}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
        first = span.start * t.sample_rate // c.fps
        stop = (span.start + n) * t.sample_rate // c.fps
        wave = audio[first : stop + t.lookahead]
        num_latents = latents.shape[1]
        if num_latents < c.chunk_latents:
            return None
        if c.audio == "exact":
            states = encode_chunks(self.encoder, wave, num_latents, t, c.chunk_latents)
        else:
            states = encode_timeline(self.encoder, wave, num_latents, t)
        voiced = voiced_frames(wave[: stop - first], t.sample_rate, c.fps, n)
        tensors = ClipTensors(
            latents=latents.to(self.dtype).cpu(),
            reference=reference.to(self.dtype).cpu(),
            audio=states.to(self.dtype),
            voiced=torch.from_numpy(voiced.astype(np.uint8)),
            wave=torch.from_numpy(np.ascontiguousarray(wave[: stop - first])),
        )
        info = ClipInfo(ident, str(video), span.start, n, num_latents, prompt)
        return info, tensors
