"""A tiny TAEHV-style video autoencoder, key-compatible with ``taew2_1.pth`` / ``taew2_2.pth``.

It works on the *normalised* latents of the matching Wan VAE (no mean / std of its own) and is made
of 2D convs on single frames; time enters only through

* MemBlocks: a residual block that also sees its own input of the previous frame,
* TPool (encoder): ``s`` consecutive frames concatenated on channels, 1x1 conv -> one frame,
* TGrow (decoder): 1x1 conv to ``s`` times the channels, split into ``s`` consecutive frames.

So a stream only has to remember one frame per MemBlock: :class:`StreamState` holds, for each, its
previous input ``(B, C, H, W)``, zeros at the start (the "empty memory" of the original). Decoding a
whole clip at once ("parallel") and one latent frame per call ("streaming") run the same arithmetic.

Layer indices inside ``encoder`` / ``decoder`` match the original ``nn.Sequential`` so that the
checkpoint keys (``decoder.3.conv.0.weight``, ``decoder.7.conv.weight`` ...) load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TAEHVConfig
from .interface import decode_clip, model_to_frames, video_to_model
from .state import CacheLayout, CacheSpec, StreamState


def _conv(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp ``tanh(x / c) * c`` of the decoder input."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.limit) * self.limit


class MemBlock(nn.Module):
    """``relu(convs(cat[x, past]) + skip(x))``: ``(N, C_in, H, W) x 2 -> (N, C_out, H, W)``."""

    def __init__(self, n_in: int, n_out: int, layout: CacheLayout, *, up: int, down: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip: nn.Module = (
            nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        )
        self.slot = layout.add(CacheSpec(n_in, 0, up, down))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + self.skip(x))


class TPool(nn.Module):
    """``(N, s * T, C, H, W) -> (N, T, C, H, W)``: ``s`` frames on channels, then a 1x1 conv."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels * stride, channels, 1, bias=False)


class TGrow(nn.Module):
    """``(N, T, C, H, W) -> (N, s * T, C, H, W)``: a 1x1 conv to ``s * C``, split into frames."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)


def _run(layers: nn.ModuleList, x: torch.Tensor, batch: int, state: StreamState) -> torch.Tensor:
    """Run ``layers`` over ``batch`` streams' consecutive frames ``(batch * T, C, H, W)``.

    Frames are ordered stream-major. Returns ``(batch * T', C', H', W')``.
    """
    for layer in layers:
        _, c, h, w = x.shape
        t = x.shape[0] // batch
        if isinstance(layer, MemBlock):
            seq = x.reshape(batch, t, c, h, w)
            memory = state.buffers[layer.slot]
            past = torch.cat([memory.unsqueeze(1).to(x.dtype), seq[:, :-1]], dim=1)
            memory.copy_(seq[:, -1])
            x = layer(x, past.view_as(x))
        elif isinstance(layer, TPool):
            if t % layer.stride:
                raise ValueError(f"{t} frames cannot be pooled {layer.stride} at a time")
            x = layer.conv(x.reshape(batch * t // layer.stride, layer.stride * c, h, w))
        elif isinstance(layer, TGrow):
            x = layer.conv(x).reshape(batch * t * layer.stride, c, h, w)
        else:
            x = layer(x)
    return x


class TAEHV(nn.Module):
    """The tiny autoencoder: ``encoder`` (video -> latents) and ``decoder`` (latents -> video).

    Build with :func:`liveface.engines.diffusion.vae.build_vae` or load with ``load_vae``.
    """

    def __init__(self, config: TAEHVConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        pixels = cfg.image_channels * cfg.patch_size**2
        ce, n = cfg.encoder_channels, cfg.blocks_per_stage
        self.encoder_layout = CacheLayout()
        enc: list[nn.Module] = [_conv(pixels, ce), nn.ReLU()]
        for i, pool in enumerate(cfg.encoder_time_downscale):
            enc += [TPool(ce, 2 if pool else 1), _conv(ce, ce, stride=2, bias=False)]
            enc += [
                MemBlock(ce, ce, self.encoder_layout, up=1, down=2 ** (i + 1)) for _ in range(n)
            ]
        enc.append(_conv(ce, cfg.latent_channels))
        self.encoder = nn.ModuleList(enc)

        self.decoder_layout = CacheLayout()
        cd = cfg.decoder_channels
        dec: list[nn.Module] = [
            Clamp(cfg.latent_clamp),
            _conv(cfg.latent_channels, cd[0]),
            nn.ReLU(),
        ]
        up = 1
        stages = zip(cfg.decoder_time_upscale, cfg.decoder_space_upscale, strict=True)
        for i, (grow, space) in enumerate(stages):
            dec += [MemBlock(cd[i], cd[i], self.decoder_layout, up=up, down=1) for _ in range(n)]
            dec.append(nn.Upsample(scale_factor=2.0) if space else nn.Identity())
            dec += [TGrow(cd[i], 2 if grow else 1), _conv(cd[i], cd[i + 1], bias=False)]
            up *= 2 if space else 1
        dec += [nn.ReLU(), _conv(cd[-1], pixels)]
        self.decoder = nn.ModuleList(dec)

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def spatial_ratio(self) -> int:
        return self.config.spatial_ratio

    @property
    def temporal_ratio(self) -> int:
        return self.config.temporal_ratio

    def _param(self) -> torch.Tensor:
        first = self.decoder[1]
        if not isinstance(first, nn.Conv2d):
            raise TypeError("the decoder's first conv is missing")
        return first.weight

    # -- decoder -----------------------------------------------------------------------------

    def init_state(
        self,
        batch: int,
        latent_height: int,
        latent_width: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamState:
        """A fresh decoder state: one ``(B, C, H, W)`` frame of zeros per decoder MemBlock."""
        return self.decoder_layout.allocate(
            batch, latent_height, latent_width,
            device=device or self._param().device, dtype=dtype or self._param().dtype,
        )  # fmt: skip

    @torch.no_grad()
    def decode_step(self, latents: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Decode the next normalised latent frames ``(B, C, t, h, w)`` of a stream.

        Returns ``(B, n, h * r, w * r, 3)`` float in ``[-1, 1]``: ``n = 1 + R(t - 1)`` on the
        first call, ``R t`` later (``R = temporal_ratio``; the first call drops the ``R - 1``
        warm-up frames, as the original does).
        """
        b, c, t, h, w = latents.shape
        if c != self.latent_channels or (b, h, w) != (state.batch, state.height, state.width):
            raise ValueError(
                f"latents {tuple(latents.shape)} do not match the decoder "
                f"({self.latent_channels} channels) or the state (batch {state.batch}, "
                f"{state.height}x{state.width})"
            )
        p = self._param()
        x = latents.to(device=p.device, dtype=p.dtype).transpose(1, 2).reshape(b * t, c, h, w)
        x = F.pixel_shuffle(_run(self.decoder, x, b, state), self.config.patch_size)
        x = x.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)
        x = x.view(b, -1, *x.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 3, n, H, W)
        if state.first:
            x = x[:, :, self.temporal_ratio - 1 :]
        state.steps += 1
        return model_to_frames(x)

    def decode(self, latents: torch.Tensor, *, latents_per_step: int | None = None) -> torch.Tensor:
        """Decode a whole clip: ``(B, C, T, h, w) -> (B, 1 + R(T - 1), H, W, 3)``.

        None runs all frames in parallel (fast, memory grows with ``T``); ``latents_per_step``
        runs them sequentially that many at a time with O(1) memory, with the same frames.
        """
        return decode_clip(self, latents, latents_per_step)

    # -- encoder -----------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, video: torch.Tensor, *, latents_per_step: int | None = None) -> torch.Tensor:
        """Encode ``(B, T, H, W, 3)`` (uint8 or float in [-1, 1]) -> ``(B, C, ceil(T / R), h, w)``.

        The clip is padded at its end with copies of its last frame to a multiple of the
        encoder's ``R`` frames per latent, so ``T = 1`` (a portrait) and ``T = 1 + R k`` give
        ``1`` and ``1 + k`` latent frames. ``latents_per_step`` bounds memory by running that
        many latent frames per pass (same result); None runs the clip in one pass.
        """
        cfg, p = self.config, self._param()
        b, t, height, width, _ = video.shape
        r = cfg.encoder_spatial_ratio
        if height % r or width % r:
            raise ValueError(f"frame size {height}x{width} must be a multiple of {r}")
        x = video_to_model(video, dtype=p.dtype, device=p.device).add(1.0).mul(0.5)
        rt = cfg.encoder_temporal_ratio
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, (-t) % rt, -1, -1)], dim=2)
        x = F.pixel_unshuffle(x.transpose(1, 2).flatten(0, 1), cfg.patch_size)
        x = x.view(b, -1, *x.shape[1:])  # (B, T, C, H, W)
        ps = cfg.patch_size
        state = self.encoder_layout.allocate(
            b, height // ps, width // ps, device=p.device, dtype=p.dtype
        )
        if latents_per_step is not None and latents_per_step <= 0:
            raise ValueError("latents_per_step must be positive")
        step = x.shape[1] if latents_per_step is None else latents_per_step * rt
        outs = [
            _run(self.encoder, x[:, i : i + step].flatten(0, 1), b, state)
            for i in range(0, x.shape[1], step)
        ]
        z = torch.cat([o.view(b, -1, *o.shape[1:]) for o in outs], dim=1)
        return z.transpose(1, 2)
