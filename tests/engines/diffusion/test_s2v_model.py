"""Wan-S2V model: recorded outputs of the official code, the 14B key set, audio causality.

The recorded numbers come from ``scripts/reference/record_s2v.py``, which loads the same
deterministic weights (``s2v_pattern.fill_pattern``) into the official ``WanModel_S2V`` of
Wan-Video/Wan2.2 and runs it in float32 on the inputs built below. Every S2V part is active in the
tiny config: causal audio encoder with the global (AdaLN) branch, audio injection after two of
three blocks, FramePack motion (all three buckets), pose ``cond_encoder``, ``trainable_cond_mask``
and zero-timestep modulation.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from s2v_pattern import fill_pattern, wave

from liveface.engines.diffusion.dit.attention import KeyValue
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.rope import rotary_tables
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.frame_packer import motion_positions
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.errors import ConfigError

FRAMES, H, W = 3, 8, 8
# (mean, abs mean, every 384th value) of the official output, by drop_motion_frames.
RECORDED_OUTPUT = {
    False: (-0.01109403925, 0.553929533, [
        -0.019257823, 0.790802002, -0.6145135164, -0.1913283616, 0.7888373733, -0.5491541028,
        -0.3781876564, 0.8997607827]),
    True: (-0.01109421974, 0.5539516852, [
        -0.0190318972, 0.7906901836, -0.6146441102, -0.1911051422, 0.788777411, -0.5493263602,
        -0.3779809773, 0.8997567892]),
}  # fmt: skip
RECORDED_AUDIO_LOCAL = (0.170923713, 0.362086323, [
    0.068221353, -0.0305302758, 0.5073309541, -0.2473549992, 0.0408705026, 0.0448956825,
    -0.2783255577, 1.5165168047])  # fmt: skip
RECORDED_AUDIO_GLOBAL = (-0.01787990195, 0.6951123195, [
    -0.8520754576, -0.5162688494, 0.1692832708, -0.5777284503, -0.1192110628, 0.334063679,
    -1.1323812008, -0.0701660365])  # fmt: skip
RECORDED_PACKER = (0.002701036304, 0.3225599522, [
    0.5921863317, 0.2361145467, -0.6784040332, -0.3138894439, 0.6230767965, 0.681596458,
    0.0300926212, -0.0134071345])  # fmt: skip
# Rotation angles of the FramePack tokens (head dim 12: frame channel 0 and row channel 3).
RECORDED_PACKER_ANGLES = [
    -1.0, 0.0, -1.0, 0.01, -1.0, 0.01, -1.0, 0.02, -1.0, 0.03, -1.0, 0.0, -3.0, 0.03,
    -1.4336293856, 0.0]  # fmt: skip
# The official WanModel_S2V of wan_s2v_14B.py built on the meta device.
OFFICIAL_14B_KEYS = 1260
OFFICIAL_14B_PARAMETERS = 16_295_755_609
OFFICIAL_14B_DIGEST = "eb1539e1a1450d39ff5bcd2353753e243dba90975a633485da60e0efcc02d2eb"


def summary_close(t: torch.Tensor, recorded: tuple, step: int, rtol: float = 1e-5) -> None:
    mean, abs_mean, picks = recorded
    flat = t.detach().double().flatten()
    scale = flat.abs().mean().item()
    assert flat.mean().item() == pytest.approx(mean, abs=rtol * scale)
    assert flat.abs().mean().item() == pytest.approx(abs_mean, rel=rtol)
    assert flat[::step][: len(picks)].tolist() == pytest.approx(picks, abs=rtol * scale)


@pytest.fixture(scope="module")
def model() -> WanS2VDiT:
    m = WanS2VDiT(S2VConfig.preset("tiny")).eval()
    fill_pattern(m)
    return m


def inputs() -> dict[str, torch.Tensor]:
    return {
        "latents": wave((16, FRAMES, H, W), 0.37)[None],
        "reference": wave((16, 1, H, W), 0.23, 1.0)[None],
        "motion": wave((16, 19, H, W), 0.11, 2.0)[None],
        "pose": (wave((16, FRAMES, H, W), 0.05, 3.0) * 0.5)[None],
        "audio": wave((1, 25, 20, 4 * FRAMES), 0.29, 0.5),
        "context": wave((5, 24), 0.41),
    }


@pytest.mark.parametrize("drop_motion", [False, True])
@torch.no_grad()
def test_forward_matches_the_official_model(model: WanS2VDiT, drop_motion: bool) -> None:
    x = inputs()
    text = model.prepare_context([x["context"]])
    clip = model.prepare_clip(
        x["reference"], None if drop_motion else x["motion"], FRAMES, pose=x["pose"]
    )
    out = model.denoise(
        x["latents"], torch.tensor([700.0]), text, clip, model.clip_audio(x["audio"])
    )
    assert out.shape == (1, 16, FRAMES, H, W)
    summary_close(out, RECORDED_OUTPUT[drop_motion], 384)


@torch.no_grad()
def test_audio_tokens_and_frame_packer_match(model: WanS2VDiT) -> None:
    x = inputs()
    tokens = model.clip_audio(x["audio"]).tokens
    assert tokens.shape == (1, FRAMES, 4 + 1 + 1, 48)
    summary_close(tokens[:, :, :5], RECORDED_AUDIO_LOCAL, 90)
    summary_close(tokens[:, :, 5:], RECORDED_AUDIO_GLOBAL, 18)
    summary_close(model.frame_packer(x["motion"]), RECORDED_PACKER, 144)
    # The packer's positions, as rotation angles of a 12-channel head (the official module's).
    tables = rotary_tables(motion_positions((1, 2, 16), 4, 4), 12)
    angles = torch.atan2(tables.sin, tables.cos)[0, :, 0, ::3]
    assert angles.flatten()[::3][:16].tolist() == pytest.approx(RECORDED_PACKER_ANGLES, abs=1e-6)


def test_the_14b_key_set_and_parameter_count_are_the_official_ones() -> None:
    with torch.device("meta"):
        m = WanS2VDiT(S2VConfig.preset("s2v-14b"))
    state = m.state_dict()
    lines = "".join(f"{k}:{','.join(map(str, v.shape))}\n" for k, v in sorted(state.items()))
    assert len(state) == OFFICIAL_14B_KEYS
    assert sum(v.numel() for v in state.values()) == OFFICIAL_14B_PARAMETERS
    assert hashlib.sha256(lines.encode()).hexdigest() == OFFICIAL_14B_DIGEST


@torch.no_grad()
def test_audio_tokens_of_a_latent_frame_ignore_later_audio(model: WanS2VDiT) -> None:
    audio = inputs()["audio"]
    base = model.clip_audio(audio).tokens
    for k in range(FRAMES - 1):
        later = audio.clone()
        later[..., 4 * (k + 1) :] += torch.randn_like(later[..., 4 * (k + 1) :])
        changed = model.clip_audio(later).tokens
        torch.testing.assert_close(changed[:, : k + 1], base[:, : k + 1], rtol=0, atol=0)
        assert not torch.allclose(changed[:, k + 1 :], base[:, k + 1 :])


@torch.no_grad()
def test_audio_injection_is_per_latent_frame(model: WanS2VDiT) -> None:
    tokens = torch.randn(1, FRAMES, 6, 48)
    frames = torch.randn(1, FRAMES, 16, 48)
    base = model.audio_injector.residual(0, frames, tokens)
    other = tokens.clone()
    other[:, 2] = torch.randn(6, 48)
    moved = model.audio_injector.residual(0, frames, other)
    torch.testing.assert_close(moved[:, :2], base[:, :2], rtol=0, atol=0)
    assert not torch.allclose(moved[:, 2], base[:, 2])


@torch.no_grad()
def test_an_empty_key_value_prefix_changes_nothing(model: WanS2VDiT) -> None:
    x = inputs()
    text = model.prepare_context([x["context"]])
    clip = model.prepare_clip(x["reference"], x["motion"], FRAMES)
    audio = model.clip_audio(x["audio"])
    t = torch.tensor([300.0])
    heads, head_dim = model.config.num_heads, model.config.head_dim
    empty = KeyValue(k=torch.zeros(1, heads, 0, head_dim), v=torch.zeros(1, heads, 0, head_dim))
    prefix = PrefixCache((empty,) * model.config.num_layers)
    plain = model.denoise(x["latents"], t, text, clip, audio)
    torch.testing.assert_close(
        model.denoise(x["latents"], t, text, clip, audio, prefix=prefix), plain
    )


def test_official_config_json_is_read_and_other_variants_are_refused() -> None:
    c = S2VConfig.preset("s2v-14b")
    assert S2VConfig.from_wan_dict(c.to_wan_dict()) == c
    assert S2VConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="enable_motioner"):
        S2VConfig.from_wan_dict({**c.to_wan_dict(), "enable_motioner": True})
    with pytest.raises(ConfigError, match="inject_layers"):
        S2VConfig.preset("tiny").replace(inject_layers=(0, 7))
