"""Codebook drift correction: k-means, tau, soft/hard pull-back, files."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.portrait import augmented_views
from liveface.engines.diffusion.streaming.codebook import (
    Codebook,
    CodebookConfig,
    build_codebook,
    kmeans,
    latent_features,
    load_codebook,
    save_codebook,
    spread_tau,
)
from liveface.errors import CheckpointError, ConfigError
from tests.engines.diffusion.stream_helpers import sample_portrait, tiny_bundle


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def clusters(n_per=200, centres=None, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    if centres is None:
        centres = torch.tensor([[0.0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 3]])
    pts = [c + spread * torch.randn(n_per, c.shape[0], generator=g) for c in centres]
    return torch.cat(pts), centres


def test_kmeans_finds_separated_clusters():
    feats, centres = clusters()
    codes = kmeans(feats, 4, iterations=10, generator=torch.Generator().manual_seed(1))
    # every true centre has a code next to it
    nearest = torch.cdist(centres, codes).min(dim=1).values
    assert nearest.max() < 0.1
    with pytest.raises(ValueError, match="at least"):
        kmeans(feats[:3], 4)


def test_tau_comes_from_the_codebook_spread():
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # nearest-other distances: 1, 1, 2 -> median 1
    assert spread_tau(codes) == pytest.approx(1.0)
    assert spread_tau(codes, 0.5) == pytest.approx(0.5)
    assert spread_tau(torch.ones(1, 2)) == pytest.approx(1.0)  # one code: its RMS norm
    cb = build_codebook(clusters()[0], 4, generator=torch.Generator().manual_seed(0))
    assert cb.size == 4
    assert cb.tau == pytest.approx(spread_tau(cb.codes))
    assert build_codebook(clusters()[0], 4, tau=0.3).tau == 0.3


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_drift_is_pulled_back_and_the_rest_is_untouched(mode):
    """A brightness/colour bias on part of a latent: those features come back within tau, every
    other feature keeps its exact bits."""
    feats, _ = clusters(spread=0.05)
    cb = build_codebook(feats, 4, tau=0.5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, feats.shape[0], (2 * 3 * 4 * 4,), generator=g)
    latents = feats[idx].T.reshape(4, 2, 3, 4, 4).transpose(0, 1).contiguous()  # (B, C, F, h, w)
    drifted = latents.clone()
    bias = torch.tensor([0.8, -0.6, 0.9, 0.4])[None, :, None, None]
    drifted[:, :, 1, :2] += bias  # a colour cast on the top half of frame 1
    fixed, count = cb.correct(drifted, mode=mode)
    assert fixed.dtype == drifted.dtype
    assert fixed.shape == drifted.shape
    hit = torch.zeros(drifted.shape[0], *drifted.shape[2:], dtype=torch.bool)
    hit[:, 1, :2] = True
    assert int(count) == int(hit.sum())
    moved = hit[:, None].expand_as(drifted)
    assert torch.equal(fixed[~moved], drifted[~moved])  # bit-identical
    dist = cb.distances(latent_features(fixed))
    assert dist.max() <= cb.tau * (1 + 1e-5)
    before = cb.distances(latent_features(drifted))
    assert before.max() > 2 * cb.tau
    if mode == "hard":
        assert dist.view(2, 3, 4, 4)[hit].max() < 1e-6
    else:  # soft: exactly on the tau-ball
        torch.testing.assert_close(dist.view(2, 3, 4, 4)[hit], torch.full((16,), 0.5))


def test_correction_keeps_bfloat16_bits():
    cb = Codebook(torch.zeros(1, 3), tau=1.0)
    x = torch.tensor([0.1, 0.2, 0.3, 5.0, 0.0, 0.0]).view(2, 3).T.reshape(1, 3, 1, 1, 2)
    x = x.to(torch.bfloat16)
    fixed, count = cb.correct(x, mode="soft")
    assert int(count) == 1
    assert fixed.dtype == torch.bfloat16
    assert torch.equal(fixed[..., 0], x[..., 0])
    assert fixed[0, :, 0, 0, 1].float().norm().item() == pytest.approx(1.0, rel=1e-2)


@torch.no_grad()
def test_identity_codebook_from_portrait_latents_corrects_a_brightness_drift():
    """Built like the engine does at open: the portrait and its augmentations through the VAE."""
    vae = tiny_bundle().vae
    views = augmented_views(sample_portrait(), 8)
    latents = vae.encode(torch.from_numpy(views)[:, None]).float()
    cb = build_codebook(latent_features(latents), 16, generator=torch.Generator().manual_seed(0))
    reference = latents[:1]
    drift = vae.encode(torch.from_numpy(views[:1] // 2)[:, None]).float()  # much darker
    biased = reference.clone()
    biased[..., :4, :] = drift[..., :4, :]  # the top half drifted
    fixed, count = cb.correct(biased)
    far = cb.distances(latent_features(biased)) > cb.tau
    assert int(count) == int(far.sum()) > 0
    assert cb.distances(latent_features(fixed)).max() <= cb.tau * (1 + 1e-5)
    untouched = ~far.view(1, 1, 8, 8).expand(1, 6, 8, 8)
    assert torch.equal(fixed[:, :, 0][untouched], biased[:, :, 0][untouched])


def test_codebook_file_round_trip_and_damage(tmp_path):
    cb = Codebook(torch.randn(10, 6), tau=0.25)
    path = tmp_path / "codebook.safetensors"
    save_codebook(path, cb)
    back = load_codebook(path)
    assert torch.equal(back.codes, cb.codes)
    assert back.tau == 0.25
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="codebook"):
        load_codebook(path)


def test_codebook_config_is_validated():
    assert CodebookConfig.from_dict(CodebookConfig().to_dict()) == CodebookConfig()
    with pytest.raises(ConfigError, match="mode"):
        CodebookConfig(mode="sometimes")
    with pytest.raises(ConfigError, match="tau"):
        CodebookConfig(tau=-1.0)
