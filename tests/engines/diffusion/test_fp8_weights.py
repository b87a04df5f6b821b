"""FP8 weight storage of the DiT's block linears (weight-only; runs wherever torch has float8)."""

from __future__ import annotations

import pytest
import torch
from s2v_pattern import fill_pattern, wave

from liveface.engines.diffusion.backends.fp8 import Fp8Linear, quantize_dit_linears
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT

pytestmark = pytest.mark.skipif(
    not hasattr(torch, "float8_e4m3fn"), reason="this torch has no float8 dtypes"
)


def linear_bytes(model: torch.nn.Module) -> int:
    return sum(
        t.numel() * t.element_size()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear | Fp8Linear)
        for t in (m.weight_fp8 if isinstance(m, Fp8Linear) else m.weight,)
    )


@torch.no_grad()
def test_fp8_weights_take_one_byte_each_and_stay_close() -> None:
    model = WanS2VDiT(S2VConfig.preset("tiny")).eval()
    fill_pattern(model)
    latents = wave((1, 16, 2, 8, 8), 0.37)
    text = model.prepare_context([wave((5, 24), 0.41)])
    clip = model.prepare_clip(wave((1, 16, 1, 8, 8), 0.23), wave((1, 16, 19, 8, 8), 0.11), 2)
    audio = model.clip_audio(wave((1, 25, 20, 8), 0.29))
    t = torch.tensor([500.0])
    before = model.denoise(latents, t, text, clip, audio)
    full = linear_bytes(model)
    count = quantize_dit_linears(model, "cpu")
    # 3 blocks x (4 self + 4 cross + 2 FFN) + 2 audio attentions x 4 + 2 AdaLN linears
    assert count == 3 * 10 + 2 * 4 + 2
    fp8 = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    assert len(fp8) == count
    assert all(m.weight_fp8.dtype == torch.float8_e4m3fn for m in fp8)
    quantized = sum(m.weight_fp8.numel() for m in fp8)
    assert linear_bytes(model) == full - 3 * quantized  # 4 bytes per weight became 1
    after = model.denoise(latents, t, text, clip, audio)
    rel = (after - before).norm() / before.norm()
    assert 0 < rel.item() < 0.1
