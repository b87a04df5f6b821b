"""Wan-S2V on CUDA: the tiny folder in bfloat16 runs a clip, and FP8 block weights follow
bfloat16 within FP8's reach (skipped without a CUDA device). Noise is drawn in the model's dtype,
as the official pipeline does, so only runs of one dtype share their noise."""

from __future__ import annotations

import pytest
import torch
from s2v_checkpoint import write_s2v_checkpoint

from liveface.engines.diffusion.checkpoint.s2v_loading import load_s2v_bundle
from liveface.engines.diffusion.streaming.s2v_clips import ClipGenerator, S2VSampling

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@torch.no_grad()
def latents_of_one_clip(folder, dtype: str, fp8: bool) -> torch.Tensor:
    bundle = load_s2v_bundle(folder, device="cuda", dtype=dtype, fp8=fp8)
    assert bundle.dit.patch_embedding.weight.dtype == getattr(torch, dtype)
    sampling = S2VSampling(infer_frames=8, steps=4, guidance=2.0, seed=1)
    generator = ClipGenerator(bundle.dit, bundle.vae, sampling)
    text = bundle.dit.prepare_context(
        [torch.randn(5, 24, generator=torch.Generator().manual_seed(0)).cuda()]
    )
    image = torch.linspace(-1, 1, 64 * 64 * 3).view(64, 64, 3)
    state = generator.start(image, text, text)
    features = torch.randn(1, 25, 20, 8, generator=torch.Generator().manual_seed(1)).cuda()
    decoded: list[torch.Tensor] = []
    decode = bundle.vae.decode
    bundle.vae.decode = lambda z, **kw: decoded.append(z) or decode(z, **kw)  # type: ignore[method-assign]
    video = generator.clip(state, features)
    assert video.shape == (1, 5, 64, 64, 3)
    assert torch.isfinite(video).all()
    return decoded[0][:, :, -2:].float().cpu()


def test_fp8_weights_follow_bfloat16(tmp_path) -> None:
    folder = write_s2v_checkpoint(tmp_path)
    bf16 = latents_of_one_clip(folder, "bfloat16", fp8=False)
    fp8 = latents_of_one_clip(folder, "bfloat16", fp8=True)
    rel = ((fp8 - bf16).norm() / bf16.norm()).item()
    assert 0 < rel < 0.1
