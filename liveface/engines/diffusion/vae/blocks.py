"""Building blocks of the Wan causal video VAEs.

Tensors are ``(batch, channels, frames, height, width)`` throughout. Parameter names and shapes
follow the official checkpoints (``residual.2.weight``, ``resample.1.weight``, ``time_conv.weight``,
``to_qkv.weight`` ...), which is why some holders keep parameter-free layers at fixed indices.

Every layer that looks back in time takes the stream's :class:`StreamState` and keeps its past in
its own slot; see :mod:`.state` for why a fresh all-zero state equals the causal zero padding.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .state import CacheLayout, CacheSpec, StreamState

# Temporal kernel of the causal convs and of the temporal resampling convs.
TIME_KERNEL = 3


def conv2d_frames(conv: nn.Module, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Apply a 2D conv to every frame: ``(B, C, T, H, W) -> (B, C', T, H', W')``.

    Runs as a 3D conv with a one-frame kernel, which avoids moving the time axis around.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected a Conv2d, got {type(conv).__name__}")
    ph, pw = cast(tuple[int, int], conv.padding)  # numeric for every conv built here
    return F.conv3d(
        x, conv.weight.unsqueeze(2), conv.bias, stride=(1, stride, stride), padding=(0, ph, pw)
    )


class CausalConv3d(nn.Conv3d):
    """3D conv, causal in time, zero "same" padding in space.

    ``(B, C_in, T, H, W) -> (B, C_out, T, H, W)``: output frame ``t`` sees input frames
    ``t - k_t + 1 .. t``; frames before the stream's start are zeros. A temporal kernel of 1
    needs no slot (and no state).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int, int],
        layout: CacheLayout | None = None,
        *,
        up: int = 1,
        down: int = 1,
    ) -> None:
        kt, kh, kw = (kernel, kernel, kernel) if isinstance(kernel, int) else kernel
        super().__init__(in_channels, out_channels, (kt, kh, kw), padding=(0, kh // 2, kw // 2))
        self.slot: int | None = None
        if kt > 1:
            if layout is None:
                raise ValueError("a causal conv with a temporal kernel needs a cache layout")
            self.slot = layout.add(CacheSpec(in_channels, kt - 1, up, down))

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.slot is not None:
            if state is None:
                raise ValueError("this causal conv looks back in time: pass the stream state")
            past = state.buffers[self.slot]
            x = torch.cat([past.to(x.dtype), x], dim=2)
            past.copy_(x[:, :, -past.shape[2] :])
        return super().forward(x)


class RMSNorm(nn.Module):
    """Scale each position's channel vector to norm ``sqrt(C)`` then by a learned gain.

    ``gamma`` has shape ``(C, 1, ..., 1)`` with ``spatial_dims`` ones (3 for video, 2 for images),
    as in the checkpoints; it broadcasts over any tensor ``(B, C, ...)``.
    """

    def __init__(self, dim: int, spatial_dims: int, eps: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))
        self.scale = dim**0.5
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = self.gamma.reshape(-1, *([1] * (x.ndim - 2)))
        return F.normalize(x, dim=1, eps=self.eps) * (self.scale * gain)


class ResidualBlock(nn.Module):
    """norm-SiLU-causal conv, twice, plus a (1x1x1 conv when widths differ) shortcut.

    ``(B, C_in, T, H, W) -> (B, C_out, T, H, W)``. Index 5 holds the (inference-time no-op)
    dropout of the original so that the second conv keeps its checkpoint name ``residual.6``.
    """

    def __init__(
        self, in_dim: int, out_dim: int, layout: CacheLayout, *, up: int, down: int, eps: float
    ) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3, eps),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, TIME_KERNEL, layout, up=up, down=down),
            RMSNorm(out_dim, 3, eps),
            nn.SiLU(),
            nn.Dropout(0.0),
            CausalConv3d(out_dim, out_dim, TIME_KERNEL, layout, up=up, down=down),
        )
        self.shortcut: nn.Module = (
            CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()
        )

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        skip = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, state) if isinstance(layer, CausalConv3d) else layer(x)
        return x + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time).

    ``(B, C, T, H, W) -> (B, C, T, H, W)``.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, 2, eps)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)
        qkv = F.linear(tokens, self.to_qkv.weight.view(3 * c, c), self.to_qkv.bias)
        q, k, v = qkv.chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = F.linear(y, self.proj.weight.view(c, c), self.proj.bias)
        return x + y.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class Downsample(nn.Module):
    """Halve height and width (zero pad right/bottom, 3x3 stride-2 conv); optionally time too.

    ``(B, C, T, H, W) -> (B, C, T', H/2, W/2)``. In time, a clip's first frame passes through
    and every later pair of frames becomes one (a stride-2 conv over the frame before the pair and
    the pair), so ``1 + 2k`` frames become ``1 + k``; later calls take an even number of frames.
    ``resample`` keeps the checkpoint's layout (pad at 0, conv at 1); forward runs both on all
    frames at once.
    """

    def __init__(self, dim: int, temporal: bool, layout: CacheLayout, *, down: int) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv: nn.Conv3d | None = None
        self.slot = -1
        if temporal:
            self.time_conv = nn.Conv3d(dim, dim, (TIME_KERNEL, 1, 1), stride=(2, 1, 1))
            # After the spatial halving, so on the grid of the next level.
            self.slot = layout.add(CacheSpec(dim, 1, down=down * 2))

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        x = conv2d_frames(self.resample[1], F.pad(x, (0, 1, 0, 1)), stride=2)
        if self.time_conv is None:
            return x
        last = state.buffers[self.slot]
        seq = x if state.first else torch.cat([last.to(x.dtype), x], dim=2)
        last.copy_(x[:, :, -1:])
        if seq.shape[2] >= TIME_KERNEL:
            y = self.time_conv(seq)
        else:
            y = seq[:, :, :0]
        return torch.cat([x[:, :, :1], y], dim=2) if state.first else y


class Upsample(nn.Module):
    """Double height and width (nearest, then 3x3 conv to ``out_dim``); optionally time too.

    ``(B, C, T, H, W) -> (B, out_dim, T', 2H, 2W)``. In time, a clip's first frame stays one frame
    and every later frame becomes two (a causal conv to ``2C`` channels, split into two frames,
    over the frames after the first), so ``T`` frames become ``2T - 1`` on the first call, ``2T``
    later. ``resample`` keeps the checkpoint's layout (resize at 0, conv at 1); forward runs both
    on all frames at once.
    """

    def __init__(
        self, dim: int, out_dim: int, temporal: bool, layout: CacheLayout, *, up: int
    ) -> None:
        super().__init__()
        self.resample = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="nearest-exact"),
            nn.Conv2d(dim, out_dim, 3, padding=1),
        )
        self.time_conv: CausalConv3d | None = None
        if temporal:
            self.time_conv = CausalConv3d(dim, dim * 2, (TIME_KERNEL, 1, 1), layout, up=up)

    def forward(self, x: torch.Tensor, state: StreamState) -> torch.Tensor:
        if self.time_conv is not None:
            head, rest = (x[:, :, :1], x[:, :, 1:]) if state.first else (None, x)
            parts = [] if head is None else [head]
            if rest.shape[2]:
                y = self.time_conv(rest, state)
                b, c2, t, h, w = y.shape
                y = y.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5)
                parts.append(y.reshape(b, c2 // 2, 2 * t, h, w))
            x = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact")
        return conv2d_frames(self.resample[1], x)


class AvgDown3d(nn.Module):
    """Parameter-free shortcut: fold ``ft x fs x fs`` cells into channels, average groups.

    ``(B, C_in, T, H, W) -> (B, C_out, ceil(T / ft), H / fs, W / fs)``; time is zero-padded at
    the front to a multiple of ``ft`` (so a clip's first frame is averaged with a zero frame).
    """

    def __init__(self, in_channels: int, out_channels: int, ft: int, fs: int) -> None:
        super().__init__()
        factor = ft * fs * fs
        if in_channels * factor % out_channels:
            raise ValueError(f"cannot average {in_channels}x{factor} values into {out_channels}")
        self.out_channels, self.ft, self.fs = out_channels, ft, fs
        self.group = in_channels * factor // out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.ft, self.fs
        x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3d(nn.Module):
    """Parameter-free shortcut: repeat channels, unfold them into ``ft x fs x fs`` cells.

    ``(B, C_in, T, H, W) -> (B, C_out, T * ft, H * fs, W * fs)``; on a clip's first call the first
    ``ft - 1`` frames are dropped (the first latent frame is one video frame).
    """

    def __init__(self, in_channels: int, out_channels: int, ft: int, fs: int) -> None:
        super().__init__()
        factor = ft * fs * fs
        if out_channels * factor % in_channels:
            raise ValueError(f"cannot spread {in_channels} channels over {out_channels}x{factor}")
        self.out_channels, self.ft, self.fs = out_channels, ft, fs
        self.repeats = out_channels * factor // in_channels

    def forward(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        ft, fs = self.ft, self.fs
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1)
        x = x.view(b, self.out_channels, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if first else x
