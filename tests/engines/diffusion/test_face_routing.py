"""Face-masked audio routing (AnyAvatar's face-aware audio adapter), on tiny random models.

The property under test: a character's audio changes nothing outside its face mask (exactly),
and the tokens of the other characters' masks only hear their own character.
"""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.face_routing import (
    FaceMaskedAudio,
    FaceRouting,
    scene_audio_tokens,
)
from liveface.engines.diffusion.dit.model import WanDiT

TINY = DiTConfig.preset("tiny")
LAYERS, FEAT = 3, 16
GRID_H, GRID_W = 4, 6  # one latent frame's token grid in these tests
#: Character 0 on the left, character 1 on the right, a gap between (columns 2 and 3).
BOXES = [(0.0, 0.1, 0.33, 0.9), (0.67, 0.0, 1.0, 1.0)]


def adapter(layers: tuple[int, ...] = (0, 1), seed: int = 0) -> AudioAdapter:
    """An adapter with every parameter random (a trained one has a non-zero output)."""
    config = AudioConfig.for_dit(
        TINY, feature_dim=FEAT, num_feature_layers=LAYERS, hidden_dim=32, layers=layers
    )
    module = AudioAdapter(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_masks_from_boxes_and_the_owner_of_each_audio_token():
    routing = FaceRouting.from_boxes(BOXES, GRID_H, GRID_W, tokens_per_character=3)
    masks = routing.masks.view(1, 2, GRID_H, GRID_W)
    assert masks[0, 0, :, :2].all()
    assert not masks[0, 0, :, 2:].any()
    assert masks[0, 1, :, 4:].all()
    assert not masks[0, 1, :, :4].any()
    # A face smaller than a token still owns the token it lies in.
    tiny = FaceRouting.from_boxes([(0.5, 0.5, 0.51, 0.51)], GRID_H, GRID_W, 1)
    assert int(tiny.masks.sum()) == 1
    # Two latent frames per token frame: each frame's tokens in character blocks.
    assert routing.key_owners(12).tolist() == [0, 0, 0, 1, 1, 1] * 2
    with pytest.raises(ValueError, match="whole blocks"):
        routing.key_owners(7)
    with pytest.raises(ValueError, match="fractions"):
        FaceRouting.from_boxes([(0.5, 0.0, 0.2, 1.0)], GRID_H, GRID_W, 1)


@torch.no_grad()
def test_a_characters_audio_changes_nothing_outside_its_mask():
    router = FaceMaskedAudio(adapter())
    routing = FaceRouting.from_boxes(BOXES, GRID_H, GRID_W, tokens_per_character=4)
    frames = randn(2, 3, GRID_H * GRID_W, TINY.dim, seed=1)
    audio = randn(2, 3, 8, TINY.dim, seed=2)  # per frame: 4 tokens of character 0, 4 of 1
    m0, m1 = routing.masks[0]
    neither = ~(m0 | m1)
    with router.routed(routing):
        base = router.residual(0, frames, audio)
        for who, keys in ((0, slice(0, 4)), (1, slice(4, 8))):
            changed = audio.clone()
            changed[:, :, keys] += randn(2, 3, 4, TINY.dim, seed=3 + who)
            out = router.residual(0, frames, changed)
            mine = routing.masks[0, who]
            # Outside the speaker's mask: bit for bit the same.
            torch.testing.assert_close(out[:, :, ~mine], base[:, :, ~mine], atol=0, rtol=0)
            assert (out[:, :, mine] - base[:, :, mine]).abs().amin(dim=-1).gt(0).all()
    # Outside every mask there is no audio update at all.
    assert torch.count_nonzero(base[:, :, neither]) == 0
    assert torch.count_nonzero(base[:, :, m0]) > 0
    # Outside a routing the router is its adapter.
    torch.testing.assert_close(
        router.residual(0, frames, audio), router.adapter.residual(0, frames, audio)
    )


@torch.no_grad()
def test_one_character_over_the_whole_frame_is_the_plain_adapter():
    router = FaceMaskedAudio(adapter(seed=4))
    routing = FaceRouting.from_boxes([(0.0, 0.0, 1.0, 1.0)], GRID_H, GRID_W, 5)
    frames = randn(1, 2, GRID_H * GRID_W, TINY.dim, seed=5)
    audio = randn(1, 2, 5, TINY.dim, seed=6)
    with router.routed(routing):
        routed = router.residual(1, frames, audio)
    torch.testing.assert_close(routed, router.adapter.residual(1, frames, audio))


@torch.no_grad()
def test_in_the_dit_a_characters_voice_moves_only_its_face():
    """Audio in the last block only (AFTER_CROSS_ATTN): what follows it (the FFN, the head) is
    per token, so the DiT's output is where the routing's locality can be seen whole; in earlier
    blocks the self-attention of the blocks after spreads any audio everywhere, by design."""
    torch.manual_seed(0)
    dit = WanDiT(TINY)
    dit.init_weights(zero_output=False)
    dit.eval()
    inner = adapter(layers=(TINY.num_layers - 1,), seed=7)
    router = FaceMaskedAudio(inner)
    dit.attach_audio(router)
    ph, pw = TINY.patch_size[1:]
    latents = randn(1, TINY.in_dim, 3, GRID_H * ph, GRID_W * pw, seed=8)
    prompt = [randn(5, TINY.text_dim, seed=9)]
    t = torch.tensor([[0.0, 600.0, 600.0]])
    voices = [inner.encode(randn(1, LAYERS, 16, FEAT, seed=10 + c), first_frame=1) for c in (0, 1)]
    scene = scene_audio_tokens(voices)
    per = voices[0].tokens.shape[2]
    assert scene.tokens.shape[2] == 2 * per
    routing = FaceRouting.from_boxes(BOXES, GRID_H, GRID_W, tokens_per_character=per)
    with router.routed(routing):
        base = dit(latents, t, prompt, audio=scene)
        louder = scene.tokens.clone()
        louder[:, :, :per] *= 3.0  # character 0 speaks up
        out = dit(latents, t, prompt, audio=AudioTokens(louder, first_frame=1))
    # Latent cells under character 0's tokens, in every frame that has audio.
    face = routing.masks[0, 0].view(GRID_H, GRID_W)
    cells = face.repeat_interleave(ph, 0).repeat_interleave(pw, 1)
    diff = (out - base).abs()
    assert torch.count_nonzero(diff[:, :, :, ~cells]) == 0
    assert torch.count_nonzero(diff[:, :, 0]) == 0  # the reference frame gets no audio
    assert diff[:, :, 1:, cells].amax() > 1e-3


def test_scene_tokens_must_cover_the_same_frames():
    a = AudioTokens(torch.zeros(1, 2, 3, 4), first_frame=1)
    with pytest.raises(ValueError, match="same frames"):
        scene_audio_tokens([a, AudioTokens(torch.zeros(1, 2, 3, 4), first_frame=0)])
    with pytest.raises(ValueError, match="at least one"):
        scene_audio_tokens([])
    router = FaceMaskedAudio(adapter())
    with (
        router.routed(FaceRouting.from_boxes(BOXES, 2, 2, 3)),
        pytest.raises(ValueError, match="cover"),
    ):
        router.residual(0, torch.zeros(1, 1, GRID_H * GRID_W, TINY.dim), torch.zeros(1, 1, 6, 48))
