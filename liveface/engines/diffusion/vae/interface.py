"""What the streaming engine sees of a video VAE, and the frame conversions around it.

Conventions shared by every model here:

* latents are ``(batch, channels, latent_frames, latent_height, latent_width)`` and *normalised*
  (the space the DiT works in); the full Wan VAEs apply their per-channel mean / std themselves;
* videos are ``(batch, frames, height, width, 3)`` RGB, either ``uint8`` or float in ``[-1, 1]``;
* the first latent frame of a clip is one video frame, every later one ``temporal_ratio`` frames.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .state import StreamState


@runtime_checkable
class StreamingDecoder(Protocol):
    """A latent-to-video decoder that can run one latent frame (or chunk) at a time."""

    @property
    def latent_channels(self) -> int: ...

    @property
    def spatial_ratio(self) -> int: ...

    @property
    def temporal_ratio(self) -> int: ...

    def init_state(
        self,
        batch: int,
        latent_height: int,
        latent_width: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamState:
        """A fresh per-stream state (fixed size) for latents of ``latent_height x latent_width``."""
        ...

    def decode_step(self, latents: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Decode the next ``(B, C, t, h, w)`` latent frames of the stream.

        Returns ``(B, n, H, W, 3)`` float frames in ``[-1, 1]``: ``n = 1 + r * (t - 1)`` on the
        stream's first call, ``r * t`` later (``r = temporal_ratio``).
        """
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode a whole clip ``(B, C, T, h, w) -> (B, 1 + r (T - 1), H, W, 3)``, in [-1, 1]."""
        ...


@runtime_checkable
class VideoEncoder(Protocol):
    """A video-to-latent encoder."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W, 3)`` uint8 or float in ``[-1, 1]`` -> normalised ``(B, C, T', h, w)``.

        ``T = 1`` (a portrait) gives one latent frame; ``T = 1 + r * k`` gives ``1 + k``.
        """
        ...


def decode_clip(
    decoder: StreamingDecoder, latents: torch.Tensor, latents_per_step: int | None = None
) -> torch.Tensor:
    """Decode a whole clip through a fresh stream state, ``latents_per_step`` frames per call.

    ``(B, C, T, h, w) -> (B, 1 + r (T - 1), H, W, 3)``; None decodes it in one call (fastest,
    memory grows with ``T``); a small number bounds memory, with the same frames.
    """
    if latents_per_step is not None and latents_per_step <= 0:
        raise ValueError("latents_per_step must be positive")
    b, _, t, h, w = latents.shape
    state = decoder.init_state(b, h, w)
    step = t if latents_per_step is None else latents_per_step
    parts = [decoder.decode_step(latents[:, :, i : i + step], state) for i in range(0, t, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def video_to_model(
    video: torch.Tensor, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``(B, T, H, W, 3)`` uint8 or float in ``[-1, 1]`` -> ``(B, 3, T, H, W)`` float in [-1, 1]."""
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(
            f"video must be (batch, frames, height, width, 3), got {tuple(video.shape)}"
        )
    video = video.to(device)
    if video.dtype == torch.uint8:
        x = video.float().div_(127.5).sub_(1.0).to(dtype)  # scale in float32, then cast
    else:
        x = video.to(dtype)
    return x.permute(0, 4, 1, 2, 3)


def model_to_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, T, H, W)`` -> ``(B, T, H, W, 3)`` (a view; contiguous copies are the caller's)."""
    return x.permute(0, 2, 3, 4, 1)


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames in ``[-1, 1]`` (any layout) -> uint8 in ``[0, 255]``, rounded."""
    return frames.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
