"""``codebook``: the offline k-means drift-correction codebook over the cached latents (Soul).

Every latent cell of the training clips is a feature ``(channels,)``; a random subset (at most
``max_features``, drawn evenly over the clips) is clustered with the engine's own k-means
(:func:`liveface.engines.diffusion.streaming.codebook.kmeans`, blocked so that 40K codes fit in
memory; on a GPU when one is there) and written with ``save_codebook``, which the engine reads as
``codebook.safetensors`` (``stream.codebook.source = "file"``). Without an explicit ``tau`` the
threshold is the codebook's spread (median nearest-code distance) times ``tau_scale``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from liveface.engines.diffusion.streaming.codebook import (
    Codebook,
    kmeans,
    latent_features,
    save_codebook,
    spread_tau,
)
from liveface.errors import ConfigError
from liveface.training.data.shards import ShardDataset

#: Above this many codes k-means++ seeding (one pass per code) is replaced by random seeding.
KMEANS_PP_MAX = 4096


def sample_features(
    datasets: list[ShardDataset], max_features: int, generator: torch.Generator
) -> torch.Tensor:
    """float32 ``(N, channels)`` latent cells of the training clips, ``N <= max_features``."""
    clips = [(ds, i) for ds in datasets for i in ds.training_clips()]
    if not clips:
        raise ConfigError("the datasets hold no training clips")
    per_clip = max(1, max_features // len(clips))
    parts = []
    for ds, i in clips:
        f = latent_features(ds.tensor(i, "latents")[None])
        if f.shape[0] > per_clip:
            f = f[torch.randperm(f.shape[0], generator=generator)[:per_clip]]
        parts.append(f)
    return torch.cat(parts)[:max_features]


def build_offline_codebook(
    datasets: list[ShardDataset],
    size: int,
    *,
    max_features: int = 2_000_000,
    iterations: int = 20,
    tau: float | None = None,
    tau_scale: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Codebook:
    """k-means codes over the datasets' latent cells (see the module docstring).

    Raises:
        ConfigError: fewer features than codes, or bad sizes.
    """
    if size < 1 or max_features < size or iterations < 1:
        raise ConfigError("need size >= 1, max_features >= size and iterations >= 1")
    g = torch.Generator().manual_seed(seed)
    features = sample_features(datasets, max_features, g)
    if features.shape[0] < size:
        raise ConfigError(f"the data has {features.shape[0]} latent cells, fewer than {size} codes")
    init = "kmeans++" if size <= KMEANS_PP_MAX else "random"
    codes = kmeans(features.to(device), size, iterations=iterations, init=init, generator=g)
    codes = codes.cpu()
    return Codebook(codes, tau if tau is not None else spread_tau(codes, tau_scale))


def write_codebook(path: str | Path, codebook: Codebook) -> Path:
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    save_codebook(p, codebook)
    return p
