"""Threshold-aware codebook drift correction (Soul) and the k-means that builds the codebook.

A *feature* is the vector of latent channels at one latent cell ``(channels,)``. A codebook holds
``K`` such vectors (codes) plus a threshold ``tau``. Before a self-generated latent is reused as a
condition (the motion-frame cache), every feature farther than ``tau`` from its nearest code is
pulled back: onto the ``tau``-ball around that code (``soft``) or onto the code itself (``hard``).
Features within ``tau`` are left bit-identical, so correction only touches drifted cells.

Codebooks come from two places:

- per identity at session open: k-means over the portrait's latents and light augmentations of it
  (:func:`build_codebook` on features from the engine);
- offline over a corpus (Soul uses 40K centroids): :func:`kmeans` on a features matrix (or
  :func:`build_codebook`), saved with :func:`save_codebook` and loaded with :func:`load_codebook`.

When ``tau`` is not given it is derived from the codebook's own spread: ``tau_scale`` times the
median distance from a code to its nearest other code (:func:`spread_tau`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from liveface.engines.diffusion import json_config
from liveface.errors import CheckpointError, ConfigError

CODEBOOK_SOURCES = ("identity", "file", "off")
CORRECTION_MODES = ("soft", "hard")
CODEBOOK_FORMAT = "liveface-codebook"
#: Distances computed per block stay under this many (feature, code) pairs, bounding memory.
PAIRS_PER_BLOCK = 1 << 22


@dataclass(frozen=True)
class CodebookConfig:
    """How a session's codebook is made and applied.

    Attributes:
        source: ``identity`` (built at open from the portrait), ``file`` (the checkpoint's
            ``codebook.safetensors``) or ``off``.
        size: codes of an identity codebook (fewer when the portrait has fewer features).
        mode: ``soft`` (clamp onto the tau-ball) or ``hard`` (replace by the code).
        tau: the threshold; None derives it from the codebook (``tau_scale`` x spread).
        tau_scale: multiplier of the spread when ``tau`` is None.
        iterations: k-means iterations of an identity codebook.
        views: images encoded for an identity codebook (the portrait and augmentations of it).
    """

    source: str = "identity"
    size: int = 256
    mode: str = "soft"
    tau: float | None = None
    tau_scale: float = 1.0
    iterations: int = 10
    views: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.source not in CODEBOOK_SOURCES:
            problems.append(f"source must be one of {', '.join(CODEBOOK_SOURCES)}")
        if self.mode not in CORRECTION_MODES:
            problems.append(f"mode must be one of {', '.join(CORRECTION_MODES)}")
        if self.size < 1 or self.iterations < 1 or self.views < 1:
            problems.append("size, iterations and views must be positive")
        if self.tau is not None and self.tau <= 0:
            problems.append("tau must be positive (or null to derive it)")
        if self.tau_scale <= 0:
            problems.append("tau_scale must be positive")
        if problems:
            raise ConfigError("invalid codebook config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CodebookConfig:
        return json_config.build(cls, data, "codebook")


def _nearest(features: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Index ``(N,)`` of each feature's nearest code; features ``(N, C)``, codes ``(K, C)``."""
    sq = codes.pow(2).sum(dim=1)
    rows = max(1, PAIRS_PER_BLOCK // codes.shape[0])
    out = []
    for block in features.split(rows):
        # |f - c|^2 = |f|^2 - 2 f.c + |c|^2; |f|^2 does not change the argmin.
        out.append(torch.addmm(sq[None], block, codes.T, alpha=-2.0).argmin(dim=1))
    return torch.cat(out) if out else features.new_zeros(0, dtype=torch.long)


@dataclass(frozen=True)
class Codebook:
    """Codes ``(K, channels)`` float32 and the correction threshold ``tau``."""

    codes: torch.Tensor
    tau: float

    def __post_init__(self) -> None:
        if self.codes.dim() != 2 or self.codes.shape[0] < 1:
            raise ValueError(f"codes must be (K >= 1, channels), got {tuple(self.codes.shape)}")
        if not self.tau > 0:
            raise ValueError("tau must be positive")

    @property
    def size(self) -> int:
        return self.codes.shape[0]

    @property
    def channels(self) -> int:
        return self.codes.shape[1]

    def to(self, device: torch.device | str) -> Codebook:
        return Codebook(self.codes.to(device=device, dtype=torch.float32), self.tau)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Distance ``(N,)`` of each feature ``(N, channels)`` to its nearest code."""
        f = features.float()
        return (f - self.codes[_nearest(f, self.codes)]).norm(dim=1)

    def correct(
        self, latents: torch.Tensor, *, mode: str = "soft", tau: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pull drifted features back towards the codebook.

        Args:
            latents: ``(batch, channels, frames, height, width)``, any float dtype.
            mode: ``soft`` or ``hard`` (see the module docstring).
            tau: overrides the codebook's threshold.

        Returns:
            the corrected latents (same shape and dtype; untouched features bit-identical) and
            the number of corrected features as a 0-dim int64 tensor (read it when convenient:
            no host sync here).
        """
        if mode not in CORRECTION_MODES:
            raise ValueError(f"mode must be one of {CORRECTION_MODES}")
        if latents.shape[1] != self.channels:
            raise ValueError(f"latents have {latents.shape[1]} channels, codes {self.channels}")
        limit = self.tau if tau is None else tau
        moved = latents.movedim(1, -1)
        f = moved.reshape(-1, self.channels).float()
        code = self.codes[_nearest(f, self.codes)]
        offset = f - code
        dist = offset.norm(dim=1, keepdim=True)
        far = dist > limit
        if mode == "hard":
            pulled = code
        else:
            pulled = code + offset * (limit / dist.clamp_min(torch.finfo(f.dtype).tiny))
        flat = moved.reshape(-1, self.channels)
        fixed = torch.where(far, pulled.to(latents.dtype), flat)
        return fixed.view(moved.shape).movedim(-1, 1), far.sum()


def latent_features(latents: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, frames, height, width)`` -> float32 features ``(cells, channels)``."""
    return latents.movedim(1, -1).reshape(-1, latents.shape[1]).float()


def _seed_codes(
    f: torch.Tensor, size: int, init: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Initial codes: ``random`` distinct features, or k-means++ (each next code drawn with
    probability proportional to the squared distance to the codes so far)."""
    if init == "random":
        return f[torch.randperm(f.shape[0], generator=generator)[:size].to(f.device)].clone()
    first = int(torch.randint(f.shape[0], (1,), generator=generator))
    codes = [f[first]]
    closest = (f - f[first]).pow(2).sum(dim=1)
    for _ in range(1, size):
        weights = closest.cpu().double()
        if not weights.sum() > 0:  # every feature is already a code: take any
            weights = torch.ones_like(weights)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        codes.append(f[pick])
        closest = torch.minimum(closest, (f - f[pick]).pow(2).sum(dim=1))
    return torch.stack(codes)


def kmeans(
    features: torch.Tensor,
    size: int,
    *,
    iterations: int = 10,
    init: str = "kmeans++",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Lloyd's k-means.

    Assignment runs in blocks (:data:`PAIRS_PER_BLOCK`), so a corpus of millions of features
    against tens of thousands of codes fits in memory. A code that loses all its features keeps
    its position.

    Args:
        features: float ``(N, channels)`` with ``N >= size``.
        init: ``kmeans++`` (better codes; ``size`` passes over the features) or ``random``
            (``size`` distinct features; for very large corpora).
        generator: CPU generator of the initialisation.

    Returns:
        float32 codes ``(size, channels)`` on the features' device.
    """
    f = features.float()
    if f.dim() != 2 or f.shape[0] < size or size < 1:
        raise ValueError(f"need at least {size} features (N, channels), got {tuple(f.shape)}")
    if init not in ("kmeans++", "random"):
        raise ValueError("init must be 'kmeans++' or 'random'")
    codes = _seed_codes(f, size, init, generator)
    for _ in range(iterations):
        idx = _nearest(f, codes)
        sums = torch.zeros_like(codes).index_add_(0, idx, f)
        ones = torch.ones_like(idx, dtype=f.dtype)
        counts = torch.zeros(size, device=f.device).index_add_(0, idx, ones)
        codes = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], codes)
    return codes


def spread_tau(codes: torch.Tensor, scale: float = 1.0) -> float:
    """``scale`` x the median distance from a code ``(K, channels)`` to its nearest other code.

    With one code (or all codes equal) it falls back to the codes' RMS norm, so tau stays
    positive.
    """
    c = codes.float()
    k = c.shape[0]
    if k > 1:
        rows = max(1, PAIRS_PER_BLOCK // k)  # blocks of rows: 40K codes never need K^2 memory
        nearest = []
        for first in range(0, k, rows):
            d = torch.cdist(c[first : first + rows], c)
            own = torch.arange(d.shape[0], device=d.device)
            d[own, own + first] = float("inf")
            nearest.append(d.min(dim=1).values)
        spread = float(torch.cat(nearest).median())
        if spread > 0:
            return scale * spread
    return scale * max(float(c.pow(2).mean().sqrt()), torch.finfo(torch.float32).eps)


def build_codebook(
    features: torch.Tensor,
    size: int,
    *,
    iterations: int = 10,
    tau: float | None = None,
    tau_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> Codebook:
    """k-means codes over ``features`` ``(N, channels)`` (``min(size, N)`` of them) and tau."""
    codes = kmeans(features, min(size, features.shape[0]), iterations=iterations,
                   generator=generator)  # fmt: skip
    return Codebook(codes, tau if tau is not None else spread_tau(codes, tau_scale))


def save_codebook(path: str | Path, codebook: Codebook) -> None:
    """Write codes and tau to a safetensors file."""
    from safetensors.torch import save_file

    meta = {"format": CODEBOOK_FORMAT, "tau": repr(codebook.tau)}
    save_file({"codes": codebook.codes.detach().float().contiguous().cpu()}, str(path), meta)


def load_codebook(path: str | Path, *, tau_scale: float = 1.0) -> Codebook:
    """Read a codebook file: ``codes`` ``(K, channels)``; tau from its metadata, else derived.

    Raises:
        CheckpointError: unreadable, truncated, or not a codebook.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path).expanduser()
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            codes = f.get_tensor("codes").float()
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{p} is not a readable codebook file ({e})") from e
    if codes.dim() != 2 or codes.shape[0] < 1:
        raise CheckpointError(f"{p}: codes must be (K, channels), got {tuple(codes.shape)}")
    tau = float(meta["tau"]) if "tau" in meta else spread_tau(codes, tau_scale)
    return Codebook(codes, tau)
