"""The clip pipeline end to end against the official ``WanS2V.generate``.

``scripts/reference/record_s2v.py`` (``record_pipeline``) runs the official pipeline on the tiny
model with pattern weights: the official wav2vec2 front end (processor, all hidden states, 50 ->
30 fps, bucketing), two clips of 8 frames, UniPC 3 steps with shift 3 and guidance 4.5, seed 7,
the first clip without motion and trimmed, the second with the first clip's frames re-encoded as
motion by a tiny 16-channel Wan2.1-layout VAE. Here the same inputs go through liveface's
speech encoder, features, model, sampler and clip loop.
"""

from __future__ import annotations

import pytest
import torch
from s2v_pattern import (
    PIPELINE,
    fill_pattern,
    pipeline_audio,
    pipeline_contexts,
    pipeline_image,
    write_wav2vec2,
)

from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.audio.s2v_features import whole_clip_features
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.streaming.s2v_clips import ClipGenerator, S2VSampling
from liveface.engines.diffusion.vae import WanVAEConfig, build_vae
from liveface.engines.diffusion.vae.config import WAN21_LATENT_MEAN, WAN21_LATENT_STD

pytest.importorskip("transformers")

# The official pipeline's values: each clip's denoised latents (channels, frames, h, w) as it hands
# them to the VAE, the output video (channels, frames, height, width) and its last frame:
# mean, abs mean, every n-th value.
RECORDED_LATENTS = [
    (0.0295939075, 0.9569143478, [
        -0.8549461961, 0.2563605309, 0.5471082926, -1.3795208931, -0.9989570379, 2.3839631081,
        1.1225831509, -0.711184144, -1.624448657, -0.8440697789, 1.4207671881, -1.5783922672]),
    (0.04733719672, 0.9206388069, [
        -1.0972652435, 0.6791094542, -2.0298690796, -0.4372776151, 0.6840280294, -2.0611045361,
        2.4368946552, 2.3321325779, 0.6058697701, -1.5255641937, 0.2831585407, -0.887444973]),
]  # fmt: skip
RECORDED_VIDEO = (-0.003855273096, 0.01482103387, [
    0.0442438424, 0.0105653591, 0.0115875527, 0.0107368995, 0.0428076647, 0.0204322487,
    0.0214587133, 0.0208629183, 0.0240693465, 0.0137762576, 0.0147712566, 0.0144510604,
])  # fmt: skip
RECORDED_LAST = (-0.003516410512, 0.01552348702, [
    -0.0089583732, 0.0110023022, 0.0106333196, 0.0113437548, -0.0082118027, 0.0209934544,
    0.0205194, 0.0211960841, -0.0229905248, 0.0144421943, 0.013879545, 0.0144989341])  # fmt: skip


def close(t: torch.Tensor, recorded: tuple, step: int, rtol: float = 1e-5) -> None:
    """Equal to the recorded summary within ``rtol`` of the tensor's mean magnitude."""
    mean, abs_mean, picks = recorded
    flat = t.double().flatten()
    tol = rtol * abs_mean
    assert flat.mean().item() == pytest.approx(mean, abs=tol)
    assert flat.abs().mean().item() == pytest.approx(abs_mean, rel=rtol)
    assert flat[::step][: len(picks)].tolist() == pytest.approx(picks, abs=tol)


@torch.no_grad()
def test_two_clips_equal_the_official_pipeline(tmp_path) -> None:
    write_wav2vec2(tmp_path)
    speech = SpeechEncoder.from_pretrained(tmp_path)
    vae = build_vae(
        WanVAEConfig(
            name="wan2.1-pattern", layout="wan2.1", z_dim=16, encoder_dim=PIPELINE["vae_dim"],
            decoder_dim=PIPELINE["vae_dim"],
            dim_mult=(1, 2, 2, 2), latents_mean=WAN21_LATENT_MEAN, latents_std=WAN21_LATENT_STD,
        )
    )  # fmt: skip
    fill_pattern(vae, gain=PIPELINE["vae_gain"])
    dit = WanS2VDiT(S2VConfig.preset("tiny")).eval()
    fill_pattern(dit)
    p = PIPELINE
    sampling = S2VSampling(
        infer_frames=p["infer_frames"], steps=p["steps"], shift=p["shift"],
        guidance=p["guidance"], seed=p["seed"],
    )  # fmt: skip
    generator = ClipGenerator(dit, vae.eval(), sampling)
    decoded: list[torch.Tensor] = []
    decode = vae.decode

    def spy(z: torch.Tensor, **kwargs: object) -> torch.Tensor:
        decoded.append(z[0].clone())
        return decode(z, **kwargs)  # type: ignore[arg-type]

    vae.decode = spy  # type: ignore[method-assign]
    context, context_null = pipeline_contexts()
    pixels = pipeline_image().float() / 255.0 * 2 - 1
    state = generator.start(
        pixels, dit.prepare_context([context]), dit.prepare_context([context_null])
    )
    features = whole_clip_features(speech, pipeline_audio(), 16, p["infer_frames"])
    assert features.shape[-1] == 2 * p["infer_frames"]  # two clips, as the official count
    clips = [generator.clip(state, features[..., r * 8 : (r + 1) * 8]) for r in range(2)]
    assert [c.shape[1] for c in clips] == [5, 8]
    for z, recorded in zip(decoded, RECORDED_LATENTS, strict=True):
        close(z[:, -2:], recorded, 170)
    video = torch.cat(clips, dim=1)[0].permute(3, 0, 1, 2)  # (channels, frames, height, width)
    close(video, RECORDED_VIDEO, 13312, rtol=1e-4)
    close(video[:, -1], RECORDED_LAST, 1024, rtol=1e-4)
