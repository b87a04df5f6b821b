"""Recorded outputs of the official implementations on fixed weights, reproduced in float64.

How the numbers were made: the weights below (a sine pattern, no RNG) were loaded into the official
modules - ``WanVAE_`` of github.com/Wan-Video/Wan2.2 ``wan/modules/vae2_1.py`` / ``vae2_2.py`` and
``TAEHV`` of github.com/madebyollin/taehv ``taehv.py`` - run in float64 (with the reference's
float32 cast around nearest upsampling, a bfloat16 workaround, disabled), on the inputs below: the
official chunked ``decode`` / ``encode`` (Wan, mean / std applied as there, output clamped) and
``decode_video`` / ``encode_video`` with ``parallel=False`` (TAEHV). Nothing of that code is used
here; only its printed outputs are.
"""

from __future__ import annotations

import math

import pytest
import torch

from liveface.engines.diffusion.vae import build_vae

F64 = torch.float64


def fill_pattern(model: torch.nn.Module, gain: float, bias: float) -> None:
    """Deterministic weights: a sine over each tensor, tensors in sorted key order."""
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(model.state_dict().items())):
            wave = torch.sin(torch.arange(p.numel(), dtype=F64) * 0.61 + i).view(p.shape)
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.1 * wave)
            elif p.ndim == 1:
                p.copy_(bias * wave)
            else:
                p.copy_(wave * (gain / p[0].numel() ** 0.5))


def wave(shape: tuple[int, ...], freq: float) -> torch.Tensor:
    return torch.sin(torch.arange(math.prod(shape), dtype=F64) * freq).view(shape)


# name: (gain, bias, latent shape, video shape, decoded shape, decoded mean, decoded |mean|,
#        decoded[0, :, 3, 5, channel], channel, encoded latents picked as in the test)
RECORDED = {
    "wan2.1-tiny": (
        1.0, 0.05, (1, 4, 3, 2, 2), (1, 5, 8, 8, 3), (1, 9, 16, 16, 3),
        0.0185989229, 0.7295137547,
        [-0.1563001959, -0.20411995, 0.1156257281, 0.5290943115, 0.03267025472,
         -0.5937637133, -1.0, -1.0, -1.0], 0,
        [0.2944276142, 0.1910093092, 0.2973419481, 0.3153769707, 0.1662063077,
         0.2452343562, -0.0978499554, -0.08830415579],
    ),
    "wan2.2-tiny": (
        1.0, 0.05, (1, 6, 3, 2, 2), (1, 5, 16, 16, 3), (1, 9, 32, 32, 3),
        -0.03384745536, 0.2407207988,
        [-0.01680719185, 0.2703827409, 0.2642372682, -0.2273223467, -0.01588342416,
         0.7380267627, 0.820901858, 0.116138414, -0.3881116149], 0,
        [0.4609515765, 0.4911805328, 0.4252682894, 0.3819556349, 0.3478174647,
         0.2884345888, 0.1500748428, 0.1296677046, -0.1013658592, -0.07364409012,
         -0.2910793053, -0.249356671],
    ),
    "taew2_2": (
        2.5, 0.3, (1, 48, 3, 2, 3), (1, 5, 32, 32, 3), (1, 9, 32, 48, 3),
        -0.8034735212, 0.8172906812,
        [-0.352459949, -1.0, -0.3615410395, -1.0, -0.3508811968, -1.0, -0.361356498, -1.0,
         -0.3509845432], 1,
        [0.02812071756, 0.0309155508, -0.2463059095, -0.2425067575, -0.4277218528,
         -0.4238426442, -0.4710367341, -0.4680212073],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_matches_the_official_implementation(name: str) -> None:
    gain, bias, lat_shape, vid_shape, out_shape, mean, abs_mean, pick, ch, enc = RECORDED[name]
    model = build_vae(name, dtype=F64)
    fill_pattern(model, gain, bias)
    latents = wave(lat_shape, 0.37)
    video = wave(vid_shape, 0.13) * 0.9

    frames = model.decode(latents)
    assert frames.shape == out_shape
    assert frames.mean().item() == pytest.approx(mean, abs=1e-9)
    assert frames.abs().mean().item() == pytest.approx(abs_mean, abs=1e-9)
    assert frames[0, :, 3, 5, ch].tolist() == pytest.approx(pick, abs=1e-9)

    state = model.init_state(*lat_shape[:1], *lat_shape[3:])
    streamed = torch.cat(
        [model.decode_step(latents[:, :, i : i + 1], state) for i in range(lat_shape[2])], dim=1
    )
    torch.testing.assert_close(streamed, frames, atol=1e-10, rtol=0)

    z = model.encode(video)
    picked = z[0, :, :, 0, 0] if name.startswith("wan") else z[0, :4, :, 0, 0]
    assert picked.flatten().tolist() == pytest.approx(enc, abs=1e-9)
