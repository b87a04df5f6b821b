"""Rendering with the streaming engine: preview videos during training, evaluation after it.

:func:`engine_for` wraps models in memory (the ones being trained) in the real
:class:`~liveface.engines.diffusion.engine.DiffusionEngine`; :func:`render` drives any engine
through its contract (``open`` / ``generate`` / ``close``) with the runtime's own chunker and
voice activity, exactly as a session would, only as fast as the engine goes.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from liveface.engines.base import Engine
from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.checkpoint.bundle import Manifest
from liveface.engines.diffusion.checkpoint.loading import Bundle
from liveface.engines.diffusion.engine import DiffusionEngine
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.engines.diffusion.text.prompts import PromptBank
from liveface.engines.diffusion.vae import WanVAE, frames_to_uint8
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker
from liveface.pipeline.vad import VoiceActivity
from liveface.training.base import BaseDir
from liveface.training.data.shards import ShardDataset
from liveface.training.model import Models


@dataclass
class Rendered:
    """An engine's output for one audio track.

    Attributes:
        frames: uint8 ``(n, height, width, 3)``, one per video frame of the audio.
        audio: float32 mono samples at the engine's rate, the audio the frames animate.
        fps, sample_rate: their rates.
    """

    frames: np.ndarray
    audio: np.ndarray
    fps: int
    sample_rate: int


def engine_for(
    models: Models,
    *,
    vae: WanVAE,
    encoder: SpeechEncoder,
    prompts: PromptBank,
    stream: GenerationConfig,
    width: int,
    height: int,
    lookahead_ms: int = 0,
) -> DiffusionEngine:
    """The streaming engine on models in memory (no compilation: they keep training)."""
    weight = models.dit.patch_embedding.weight
    bundle = Bundle(
        root=Path("."),
        manifest=Manifest(stream=stream),
        dit=models.dit,
        adapter=models.adapter,
        encoder=encoder,
        vae=vae,
        light_decoder=None,
        prompts=prompts,
        codebook=None,
        portrait=None,
        device=weight.device,
        dtype=weight.dtype,
    )
    cfg = models.adapter.config
    return DiffusionEngine(
        bundle,
        width=width,
        height=height,
        fps=cfg.fps,
        lookahead=lookahead_ms * cfg.sample_rate // 1000,
        stream=stream.replace(compile="off"),
    )


def render(
    engine: Engine,
    portrait: np.ndarray | None,
    audio: np.ndarray,
    *,
    prompt: str | None = None,
    options: dict | None = None,
) -> Rendered:
    """Animate ``portrait`` with ``audio`` (float32 mono at the engine's rate) through the
    engine contract; one frame per video frame of the audio."""
    spec = engine.spec
    total = spec.frame_at(max(audio.shape[0] - 1, 0)) + 1
    pad = spec.frame_start(total + spec.chunk_frames) + spec.lookahead - audio.shape[0]
    padded = np.concatenate([audio.astype(np.float32), np.zeros(max(0, pad), np.float32)])
    ring = AudioRing(padded.shape[0] + 1)
    ring.append(padded)
    vad = VoiceActivity(spec.sample_rate)
    vad.push(padded)
    chunker = Chunker(spec, ring, vad.voiced)
    frames: list[np.ndarray] = []
    state = engine.open(portrait, prompt, options or {})
    try:
        with torch.no_grad():
            for chunk in chunker.pop_ready():
                if chunk.first_frame >= total:
                    break
                (out,) = engine.generate([(state, chunk)])
                frames.extend(out.frames[: total - out.first_frame])
    finally:
        engine.close(state)
    video = np.stack(frames)
    return Rendered(video, audio[: spec.frame_start(total)], spec.fps, spec.sample_rate)


def write_video(path: str | Path, clip: Rendered) -> Path:
    """H.264 + AAC mp4 of a rendered clip."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    rate = 48000
    with av.open(str(p), mode="w") as c:
        vs = c.add_stream("libx264", rate=clip.fps)
        vs.width, vs.height, vs.pix_fmt = clip.frames.shape[2], clip.frames.shape[1], "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        astream = c.add_stream("aac", rate=rate)
        astream.layout = "mono"
        for i, f in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            frame.pts = i
            c.mux(vs.encode(frame))
        c.mux(vs.encode(None))
        up = clip.audio if clip.sample_rate == rate else _to_rate(clip, rate)
        af = av.AudioFrame.from_ndarray(up[None].astype(np.float32), format="flt", layout="mono")
        af.sample_rate, af.pts, af.time_base = rate, 0, fractions.Fraction(1, rate)
        c.mux(astream.encode(af))
        c.mux(astream.encode(None))
    return p


def _to_rate(clip: Rendered, rate: int) -> np.ndarray:
    from liveface.pipeline.resample import StreamingResampler

    r = StreamingResampler(clip.sample_rate, rate)
    return np.concatenate([r.push(clip.audio), r.push(np.zeros(0, np.float32), last=True)])


def frame_strip(frames: np.ndarray, count: int = 8) -> np.ndarray:
    """``count`` frames side by side, uint8 ``(H, count * W, 3)`` (for TensorBoard)."""
    idx = np.linspace(0, frames.shape[0] - 1, min(count, frames.shape[0])).round().astype(int)
    return np.concatenate(list(frames[idx]), axis=1)


class PreviewHook:
    """Renders a held-out portrait and audio with the models being trained, every few steps.

    The first held-out clip of the first dataset gives the portrait (its saved reference frame;
    else the decoded reference latent of the first clip) and the audio (at most ``seconds``).
    Videos go to ``RUN/samples/step-N.mp4``, a strip of frames to TensorBoard.
    """

    def __init__(
        self,
        models: Models,
        base: BaseDir,
        dataset: ShardDataset,
        run: Path,
        logger: Any,
        stream: GenerationConfig,
        seconds: float = 4.0,
    ) -> None:
        self.models, self.base, self.dataset = models, base, dataset
        self.run, self.logger, self.stream, self.seconds = run, logger, stream, seconds
        self._parts: tuple[WanVAE, SpeechEncoder, PromptBank] | None = None

    def _setup(self) -> tuple[WanVAE, SpeechEncoder, PromptBank]:
        if self._parts is None:
            cfg = self.models.dit.config
            self._parts = (
                self.base.vae(),
                self.base.speech_encoder(),
                self.base.prompts(cfg.text_dim, cfg.text_len),
            )
        return self._parts

    def __call__(self, step: int) -> Path:
        vae, encoder, prompts = self._setup()
        ds = self.dataset
        held = ds.held_out_clips()
        clip = held[0] if held else 0
        portrait = ds.portrait(clip)
        if portrait is None:
            with torch.no_grad():
                ref = ds.tensor(clip, "reference")[None].to(
                    vae.conv2.weight.device, vae.conv2.weight.dtype
                )
                portrait = frames_to_uint8(vae.decode(ref))[0, 0].cpu().numpy()
        prep = ds.config["prepare"]
        wave = ds.tensor(clip, "wave").float().numpy()[: int(self.seconds * 16000)]
        engine = engine_for(
            self.models,
            vae=vae,
            encoder=encoder,
            prompts=prompts,
            stream=self.stream,
            width=prep["width"],
            height=prep["height"],
            lookahead_ms=prep["lookahead_ms"],
        )
        self.models.dit.eval()
        try:
            out = render(engine, portrait, wave)
        finally:
            self.models.dit.train()
        path = write_video(self.run / "samples" / f"step-{step:08d}.mp4", out)
        self.logger.image(step, "preview", frame_strip(out.frames))
        return path
