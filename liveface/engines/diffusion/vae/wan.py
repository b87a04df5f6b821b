"""The Wan2.1 and Wan2.2 causal video VAEs, key-compatible with the official ``.pth`` files.

Both are built from :mod:`.blocks` by :class:`WanVAE`; :class:`WanVAEConfig` picks the layout:

* ``wan2.1`` (``Wan2.1_VAE.pth``; Wan2.2-S2V-14B uses it): 16 latent channels, 4x8x8;
* ``wan2.2`` (``Wan2.2_VAE.pth``, the TI2V-5B VAE): 2x2 pixel patchify, then 4x8x8, 48 channels.

Time is causal: a clip's first frame is one latent frame, every later 4 frames are one more. The
decoder mirrors it: latent frame 0 decodes to 1 frame, each later latent frame to 4. The encoder and
the decoder each keep a :class:`StreamState`, so a stream can be decoded one latent frame at a time
with exactly the result of decoding the whole clip at once.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import (
    AttentionBlock,
    AvgDown3d,
    CausalConv3d,
    Downsample,
    DupUp3d,
    ResidualBlock,
    RMSNorm,
    Upsample,
)
from .config import WanVAEConfig
from .interface import decode_clip, model_to_frames, video_to_model
from .state import CacheLayout, StreamState

Block = ResidualBlock | Downsample | Upsample


class DownStage(nn.Module):
    """Wan2.2 encoder stage: residual blocks (+ downsample) plus an averaging shortcut."""

    def __init__(self, blocks: list[Block], shortcut: AvgDown3d) -> None:
        super().__init__()
        self.avg_shortcut = shortcut
        self.downsamples = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        y = x
        for block in self.downsamples:
            y = block(y, state)
        return y + self.avg_shortcut(x)


class UpStage(nn.Module):
    """Wan2.2 decoder stage: residual blocks (+ upsample) plus a duplicating shortcut."""

    def __init__(self, blocks: list[Block], shortcut: DupUp3d | None) -> None:
        super().__init__()
        self.avg_shortcut = shortcut
        self.upsamples = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        y = x
        for block in self.upsamples:
            y = block(y, state)
        return y if self.avg_shortcut is None else y + self.avg_shortcut(x, state.first)


def _middle(dim: int, layout: CacheLayout, scale: dict[str, int], eps: float) -> nn.ModuleList:
    return nn.ModuleList(
        [
            ResidualBlock(dim, dim, layout, eps=eps, **scale),
            AttentionBlock(dim, eps),
            ResidualBlock(dim, dim, layout, eps=eps, **scale),
        ]
    )


def _head(
    dim: int, out: int, layout: CacheLayout, scale: dict[str, int], eps: float
) -> nn.Sequential:
    return nn.Sequential(
        RMSNorm(dim, 3, eps), nn.SiLU(), CausalConv3d(dim, out, 3, layout, **scale)
    )


def _run_head(head: nn.Sequential, x: torch.Tensor, state: StreamState) -> torch.Tensor:
    for layer in head:
        x = layer(x, state) if isinstance(layer, CausalConv3d) else layer(x)
    return x


class WanEncoder(nn.Module):
    """``(B, 3 p p, 1 + 4k, H, W) -> (B, 2 z_dim, 1 + k, H / 8, W / 8)`` (mean and log-var)."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        self.layout = CacheLayout()
        eps, levels = cfg.norm_eps, len(cfg.dim_mult)
        dims = [cfg.encoder_dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(cfg.image_channels * cfg.patch_size**2, dims[0], 3, self.layout)
        self.downsamples = nn.ModuleList()
        for i in range(levels):
            cin, cout, down = dims[i], dims[i + 1], 2**i
            resample = i < levels - 1
            temporal = resample and cfg.temporal_downsample[i]
            blocks: list[Block] = [
                ResidualBlock(cin if j == 0 else cout, cout, self.layout, up=1, down=down, eps=eps)
                for j in range(cfg.num_res_blocks)
            ]
            if resample:
                blocks.append(Downsample(cout, temporal, self.layout, down=down))
            if cfg.layout == "wan2.1":
                self.downsamples.extend(blocks)
            else:
                shortcut = AvgDown3d(cin, cout, 2 if temporal else 1, 2 if resample else 1)
                self.downsamples.append(DownStage(blocks, shortcut))
        scale = {"up": 1, "down": 2 ** (levels - 1)}
        self.middle = _middle(dims[-1], self.layout, scale, eps)
        self.head = _head(dims[-1], 2 * cfg.z_dim, self.layout, scale, eps)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        x = self.conv1(x, state)
        for block in (*self.downsamples, *self.middle):
            x = block(x, state)
        return _run_head(self.head, x, state)


class WanDecoder(nn.Module):
    """``(B, z_dim, T, h, w) -> (B, 3 * p * p, n, 8h, 8w)``; ``n = 1 + 4(T - 1)`` first, else 4T."""

    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        self.layout = CacheLayout()
        eps, levels = cfg.norm_eps, len(cfg.dim_mult)
        mult = (cfg.dim_mult[-1], *reversed(cfg.dim_mult))
        dims = [cfg.decoder_dim * m for m in mult]
        temporal_up = tuple(reversed(cfg.temporal_downsample))
        halves = cfg.layout == "wan2.1"  # its upsampling convs halve the width
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, self.layout)
        self.middle = _middle(dims[0], self.layout, {"up": 1, "down": 1}, eps)
        self.upsamples = nn.ModuleList()
        for i in range(levels):
            cin, cout, up = dims[i], dims[i + 1], 2**i
            if halves and i > 0:
                cin //= 2
            resample = i < levels - 1
            temporal = resample and temporal_up[i]
            blocks: list[Block] = [
                ResidualBlock(cin if j == 0 else cout, cout, self.layout, up=up, down=1, eps=eps)
                for j in range(cfg.num_res_blocks + 1)
            ]
            if resample:
                out = cout // 2 if halves else cout
                blocks.append(Upsample(cout, out, temporal, self.layout, up=up))
            if halves:
                self.upsamples.extend(blocks)
            else:
                shortcut = DupUp3d(cin, cout, 2 if temporal else 1, 2) if resample else None
                self.upsamples.append(UpStage(blocks, shortcut))
        scale = {"up": 2 ** (levels - 1), "down": 1}
        out_channels = cfg.image_channels * cfg.patch_size**2
        self.head = _head(dims[-1], out_channels, self.layout, scale, eps)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        x = self.conv1(x, state)
        for block in (*self.middle, *self.upsamples):
            x = block(x, state)
        return _run_head(self.head, x, state)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B, C * p * p, T, H / p, W / p)``; channel order (c, col, row)."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.view(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, C * p * p, T, h, w) -> (B, C, T, h * p, w * p)``."""
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    x = x.view(b, cpp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, cpp // (p * p), t, h * p, w * p)


class WanVAE(nn.Module):
    """The Wan causal video VAE (encoder, decoder and the two 1x1x1 convs between them).

    Build with :func:`liveface.engines.diffusion.vae.build_vae` or load with ``load_vae``. All
    public methods run without autograd. Latents in and out are normalised with the config's
    per-channel ``latents_mean`` / ``latents_std``.
    """

    def __init__(self, config: WanVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = WanEncoder(config)
        self.conv1 = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = WanDecoder(config)
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    @property
    def spatial_ratio(self) -> int:
        return self.config.spatial_ratio

    @property
    def temporal_ratio(self) -> int:
        return self.config.temporal_ratio

    def _param(self) -> torch.Tensor:
        return self.conv2.weight

    def _latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std as ``(1, z_dim, 1, 1, 1)`` tensors on the model's device.

        They are applied in float32 at least (float64 for a float64 model), whatever the weights'
        dtype, since bf16 would round the latents visibly.
        """
        p = self._param()
        work = torch.promote_types(p.dtype, torch.float32)
        if self._stats is None or self._stats[0].device != p.device or self._stats[0].dtype != work:
            shape = (1, self.config.z_dim, 1, 1, 1)
            mean = torch.tensor(self.config.latents_mean, dtype=torch.float64).view(shape)
            std = torch.tensor(self.config.latents_std, dtype=torch.float64).view(shape)
            self._stats = (mean.to(p.device, work), std.to(p.device, work))
        return self._stats

    # -- encoder -----------------------------------------------------------------------------

    def init_encode_state(
        self,
        batch: int,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamState:
        """A fresh encoder state for ``batch`` videos of ``height x width`` pixels."""
        r = self.spatial_ratio
        if height % r or width % r:
            raise ValueError(f"frame size {height}x{width} must be a multiple of {r}")
        p = self.config.patch_size
        return self.encoder.layout.allocate(
            batch, height // p, width // p,
            device=device or self._param().device, dtype=dtype or self._param().dtype,
        )  # fmt: skip

    @torch.no_grad()
    def encode_step(self, video: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Encode the next frames of a stream: ``(B, T, H, W, 3) -> (B, z_dim, t, H/r, W/r)``.

        The stream's first call takes ``1 + 4k`` frames (``t = 1 + k``), later calls ``4k``
        (``t = k``). Returns the normalised posterior mean.
        """
        r = self.temporal_ratio
        frames = video.shape[1]
        if (state.first and frames % r != 1 % r) or (not state.first and frames % r):
            need = f"1 + {r}k" if state.first else f"a multiple of {r}"
            raise ValueError(f"this encode step needs {need} frames, got {frames}")
        w = self._param()
        x = patchify(video_to_model(video, dtype=w.dtype, device=w.device), self.config.patch_size)
        if x.shape[-2:] != (state.height, state.width) or x.shape[0] != state.batch:
            raise ValueError("video batch or size differs from the one the state was made for")
        mu = self.conv1(self.encoder(x, state))[:, : self.config.z_dim]
        state.steps += 1
        mean, std = self._latent_stats()
        return ((mu.to(mean.dtype) - mean) / std).to(w.dtype)

    def encode(self, video: torch.Tensor, *, latents_per_step: int | None = None) -> torch.Tensor:
        """Encode a whole clip ``(B, 1 + 4k, H, W, 3) -> (B, z_dim, 1 + k, H/r, W/r)``.

        ``latents_per_step`` bounds memory by encoding that many latent frames per pass (1 is
        the official schedule: frame 0, then 4 frames at a time); None encodes in one pass.
        """
        if latents_per_step is not None and latents_per_step <= 0:
            raise ValueError("latents_per_step must be positive")
        b, t, h, w, _ = video.shape
        state = self.init_encode_state(b, h, w)
        if latents_per_step is None:
            return self.encode_step(video, state)
        r = self.temporal_ratio
        ends = [*range(1 + r * (latents_per_step - 1), t, r * latents_per_step), t]
        starts = [0, *ends[:-1]]
        return torch.cat(
            [self.encode_step(video[:, a:e], state) for a, e in zip(starts, ends, strict=True)],
            dim=2,
        )

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
        """A fresh decoder state for ``batch`` streams of ``latent_height x latent_width``."""
        return self.decoder.layout.allocate(
            batch, latent_height, latent_width,
            device=device or self._param().device, dtype=dtype or self._param().dtype,
        )  # fmt: skip

    @torch.no_grad()
    def decode_step(self, latents: torch.Tensor, state: StreamState) -> torch.Tensor:
        """Decode the next normalised latent frames ``(B, z_dim, t, h, w)`` of a stream.

        Returns ``(B, n, h * r, w * r, 3)`` float in ``[-1, 1]``, ``n = 1 + 4(t - 1)`` on the
        first call and ``4t`` later.
        """
        b, c, _, h, w = latents.shape
        if c != self.config.z_dim or (b, h, w) != (state.batch, state.height, state.width):
            raise ValueError(
                f"latents {tuple(latents.shape)} do not match the decoder "
                f"(z_dim {self.config.z_dim}) or the state (batch {state.batch}, "
                f"{state.height}x{state.width})"
            )
        param = self._param()
        mean, std = self._latent_stats()
        z = (latents.to(param.device, mean.dtype) * std + mean).to(param.dtype)
        x = self.decoder(self.conv2(z), state)
        state.steps += 1
        x = unpatchify(x, self.config.patch_size).clamp_(-1.0, 1.0)
        return model_to_frames(x)

    def decode(self, latents: torch.Tensor, *, latents_per_step: int | None = None) -> torch.Tensor:
        """Decode a whole clip ``(B, z_dim, T, h, w) -> (B, 1 + 4(T - 1), H, W, 3)`` in [-1, 1].

        ``latents_per_step`` bounds memory (1 is the official schedule); None is one pass.
        """
        return decode_clip(self, latents, latents_per_step)
