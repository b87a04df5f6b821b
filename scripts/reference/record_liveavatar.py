"""Record reference values of the official LiveAvatar code for the liveavatar tests.

Runs the block-causal model of github.com/Alibaba-Quark/LiveAvatar (``CausalWanModel_S2V``) from a
local extraction; none of their code is copied into liveface, only the printed numbers are
committed::

    git -C /work/.mirror/Alibaba-Quark+LiveAvatar/repo archive HEAD liveavatar | tar -x -C /tmp/la
    ENABLE_COMPILE=false python scripts/reference/record_liveavatar.py /tmp/la \
        --json tests/engines/diffusion/data/liveavatar_reference.json

Needs torch, diffusers and einops (``/work/venvs/liveavatar`` has them). Everything runs on the
CPU in float32 with the deterministic weights of ``tests/engines/diffusion/s2v_pattern.py``. What
differs from a GPU run, and why:

- the model's self-attention goes to cuDNN attention (CUDA only) and its cross-attention to flash
  attention; both are replaced by ``scaled_dot_product_attention`` in float32 over the same keys;
- the constructor moves its RoPE table to ``"cuda"``: that one move is redirected to the CPU;
- the sink forward builds its empty noisy part as ``zeros([1, 5120, 0, h, w])`` (the 14B width):
  that empty tensor gets the tiny width;
- the caches of their pipeline are sized for 14B at 720x400 (40 heads of 128, 2800 sink tokens);
  here they have the tiny model's shape.

The loop over blocks below follows their ``causal_s2v_pipeline.WanS2V.generate`` step by step
(per-step caches, a sink prefilled at t = 0 through every step's cache, ``current_start`` in
tokens, the diffusers Euler scheduler with shift 3), and the sink refresh of their multi-GPU
``causal_s2v_pipeline_tpp`` (after the first clip the reference becomes the first generated latent
and the sink is prefilled again). The random sink offset (``random.randint(4, 30)``, drawn inside
every forward) is logged so the tests can replay it.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from record_s2v import TINY  # the tests' tiny S2V config, in official names

MOTION_FRAMES, MOTION_LATENTS = 73, 19
INFER_FRAMES, BLOCK = 48, 3  # their scripts: --infer_frames 48, num_frames_per_block 3
H = W = 8  # latent grid
SEED = 7
BLOCKS = 6  # one and a half clips: the rolling cache wraps at block 4


def _import_official(root: Path) -> None:
    """Make ``liveavatar.*`` importable without running package ``__init__`` files (they import
    every pipeline and trainer)."""
    names = [
        "liveavatar", "liveavatar.models", "liveavatar.models.wan", "liveavatar.models.wan.wan_2_2",
        "liveavatar.models.wan.wan_2_2.distributed", "liveavatar.models.wan.wan_2_2.modules",
        "liveavatar.models.wan.wan_2_2.modules.s2v",
    ]  # fmt: skip
    for name in names:
        mod = types.ModuleType(name)
        mod.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = mod


def _sdpa(q, k, v, q_lens=None, k_lens=None, **_: object) -> torch.Tensor:
    """float32 stand-in for their attention kernels: ``(b, l, heads, d)`` in and out."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float()
    )
    return out.transpose(1, 2)


#: Everything printed, by name, for ``--json``.
RECORDS: dict[str, object] = {}


def _show(name: str, t: torch.Tensor, picks: int = 8) -> None:
    flat = t.detach().double().flatten()
    step = max(1, flat.numel() // picks)
    RECORDS[name] = {
        "shape": list(t.shape),
        "mean": flat.mean().item(),
        "absmean": flat.abs().mean().item(),
        "step": step,
        "picks": flat[::step][:picks].tolist(),
    }
    print(
        f"{name}: shape={tuple(t.shape)} mean={flat.mean().item():.10g} "
        f"absmean={flat.abs().mean().item():.10g}"
    )
    print(f"  picks(step {step}) = {[round(v, 10) for v in flat[::step][:picks].tolist()]}")


def build_model(pattern, gain: float = 1.0):
    import liveavatar.models.wan.causal_model_s2v as causal
    import liveavatar.models.wan.wan_2_2.modules.model as base

    causal.attention = _sdpa
    base.flash_attention = _sdpa
    real_to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):  # the constructor's freqs.to("cuda")
        if args and args[0] == "cuda":
            args = ("cpu", *args[1:])
        return real_to(self, *args, **kwargs)

    torch.Tensor.to = to_cpu
    try:
        model = causal.CausalWanModel_S2V(**TINY).eval()
    finally:
        torch.Tensor.to = real_to

    class TinyWidth:  # ``torch`` as the module sees it, with the empty 14B-wide tensor resized
        def __getattr__(self, name: str):
            return getattr(torch, name)

        @staticmethod
        def zeros(shape, *args, **kwargs):
            if isinstance(shape, list) and shape[1:3] == [5120, 0]:
                shape = [shape[0], model.dim, *shape[2:]]
            return torch.zeros(shape, *args, **kwargs)

    causal.torch = TinyWidth()
    pattern.fill_pattern(model, gain=gain)
    return model


def caches(model, sink_tokens: int, capacity: int) -> tuple[list, list]:
    """Four per-step caches sharing one sink (``shared_cond_cache``), as their single-GPU
    pipeline allocates them, and the (unused) cross-attention cache."""
    heads, hd = model.num_heads, model.dim // model.num_heads
    shared = [
        {
            "cond_k": torch.zeros(1, sink_tokens, heads, hd),
            "cond_v": torch.zeros(1, sink_tokens, heads, hd),
            "cond_end": torch.tensor([0], dtype=torch.long),
        }
        for _ in range(model.num_layers)
    ]
    steps = [
        [
            {"k": torch.zeros(1, capacity, heads, hd), "v": torch.zeros(1, capacity, heads, hd)}
            | shared[i]
            for i in range(model.num_layers)
        ]
        for _ in range(4)
    ]
    cross = [{"k": None, "v": None, "is_init": False} for _ in range(model.num_layers)]
    return steps, cross


def record_schedule() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3)
    sched.set_timesteps(4)
    print(f"euler shift 3, 4 steps: timesteps={sched.timesteps.tolist()}")
    print(f"  sigmas={sched.sigmas.tolist()}")
    RECORDS["euler timesteps"] = sched.timesteps.tolist()
    RECORDS["euler sigmas"] = sched.sigmas.tolist()


def record_causal(pattern, refresh: bool) -> None:
    """``BLOCKS`` blocks of their streaming loop on the tiny model."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = build_model(pattern)
    context = pattern.wave((5, 24), 0.41)
    ref = pattern.wave((1, 16, 1, H, W), 0.23, 1.0)
    motion = pattern.wave((1, 16, MOTION_LATENTS, H, W), 0.11, 2.0)
    clips = -(-BLOCKS * BLOCK // (INFER_FRAMES // 4))
    audio_emb = pattern.wave((1, 25, 20, clips * INFER_FRAMES), 0.29, 0.5)
    fsl = (H // 2) * (W // 2)
    latents_per_clip = INFER_FRAMES // 4
    steps, cross = caches(model, sink_tokens=64, capacity=latents_per_clip * fsl)
    offsets: list[int] = []
    draw = random.randint

    def logged(a: int, b: int) -> int:
        offsets.append(draw(a, b))
        return offsets[-1]

    random.seed(1234)
    random.randint = logged
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3)
    sched.set_timesteps(4)
    cond = torch.zeros(1, 16, latents_per_clip, H, W)  # COND[0] * 0: no pose
    mode = "refresh" if refresh else "fixed"
    first_latent = None
    block = 0
    with torch.no_grad():
        for r in range(clips):
            g = torch.Generator().manual_seed(SEED + r)
            noise = torch.randn(16, latents_per_clip, H, W, generator=g)
            audio_clip = audio_emb[..., r * INFER_FRAMES : (r + 1) * INFER_FRAMES]
            if r == 1 and refresh:
                ref = first_latent  # their TPP pipeline: the sink anchor becomes latent 0
            if r == 0 or (r == 1 and refresh):
                for i in range(4):  # prefill the (shared) sink through every step's cache
                    model(
                        [noise[:, :BLOCK]], t=torch.zeros(1, BLOCK), context=[context],
                        seq_len=None, cond_states=cond[:, :, :BLOCK], motion_latents=motion,
                        ref_latents=ref, audio_input=audio_clip[..., : 4 * BLOCK],
                        motion_frames=[MOTION_FRAMES, MOTION_LATENTS], drop_motion_frames=False,
                        sink_flag=True, kv_cache=steps[i], crossattn_cache=cross,
                        current_start=0, current_end=BLOCK * fsl,
                    )  # fmt: skip
            for b in range(latents_per_clip // BLOCK):
                if block == BLOCKS:
                    break
                x = noise[:, b * BLOCK : (b + 1) * BLOCK]
                sched._step_index, sched._begin_index = 0, 0
                start = (b * BLOCK + r * latents_per_clip) * fsl
                for i, t in enumerate(sched.timesteps):
                    flow = model(
                        [x], t=torch.tensor([t] * BLOCK).unsqueeze(0), context=[context],
                        seq_len=None, cond_states=cond[:, :, b * BLOCK : (b + 1) * BLOCK],
                        motion_latents=motion, ref_latents=ref,
                        audio_input=audio_clip[..., 4 * BLOCK * b : 4 * BLOCK * (b + 1)],
                        motion_frames=[MOTION_FRAMES, MOTION_LATENTS], drop_motion_frames=False,
                        kv_cache=steps[i], crossattn_cache=cross, current_start=start,
                        current_end=start + BLOCK * fsl, mask=None,
                    )[0]  # fmt: skip
                    _show(f"{mode} block {block} step {i} flow", flow, picks=6)
                    x = sched.step(flow[None], t, x[None], return_dict=False)[0][0]
                _show(f"{mode} block {block} latents", x, picks=12)
                if block == 0:
                    first_latent = x[None, :, 0:1].clone()
                block += 1
    random.randint = draw
    print(f"{mode} sink offsets drawn (one per step, in call order) = {offsets}")
    RECORDS[f"{mode} offsets"] = offsets


def record_strong(pattern) -> None:
    """Weights of gain 4 (peaked attention), two blocks through step 0's cache, the second at a
    late stream position so the sink is re-roped: the whole second flow is recorded, finely
    enough to tell the float16 RoPE table and the bfloat16 cross-attention input apart."""
    model = build_model(pattern, gain=4.0)
    context = pattern.wave((5, 24), 0.41)
    ref = pattern.wave((1, 16, 1, H, W), 0.23, 1.0)
    motion = pattern.wave((1, 16, MOTION_LATENTS, H, W), 0.11, 2.0)
    audio = pattern.wave((1, 25, 20, 4 * BLOCK), 0.29, 0.5)
    fsl = (H // 2) * (W // 2)
    steps, cross = caches(model, sink_tokens=64, capacity=(INFER_FRAMES // 4) * fsl)
    cond = torch.zeros(1, 16, BLOCK, H, W)
    x = torch.randn(16, BLOCK, H, W, generator=torch.Generator().manual_seed(SEED))
    common = dict(
        context=[context], seq_len=None, cond_states=cond, motion_latents=motion,
        ref_latents=ref, audio_input=audio, motion_frames=[MOTION_FRAMES, MOTION_LATENTS],
        drop_motion_frames=False, kv_cache=steps[0], crossattn_cache=cross,
    )  # fmt: skip
    offsets: list[int] = []
    draw = random.randint
    random.randint = lambda a, b: offsets.append(draw(a, b)) or offsets[-1]
    random.seed(99)
    with torch.no_grad():
        model([x], t=torch.zeros(1, BLOCK), sink_flag=True, current_start=0,
              current_end=BLOCK * fsl, **common)  # fmt: skip
        for block in (0, 9):  # the second one at latent frame 27: the reference moves
            start = block * BLOCK * fsl
            flow = model([x], t=torch.full((1, BLOCK), 700.0), current_start=start,
                         current_end=start + BLOCK * fsl, mask=None, **common)[0]  # fmt: skip
    random.randint = draw
    RECORDS["strong flow"] = flow.flatten().tolist()
    RECORDS["strong offsets"] = offsets
    _show("strong flow (block at frame 27)", flow)
    print(f"strong offsets = {offsets}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("official", type=Path, help="extracted LiveAvatar tree (holds liveavatar/)")
    parser.add_argument("--json", type=Path, help="also write every recorded value here")
    args = parser.parse_args()
    if os.environ.get("ENABLE_COMPILE", "true").lower() == "true":
        sys.exit("set ENABLE_COMPILE=false: their model is torch.compile'd otherwise")
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(args.official))
    sys.path.insert(0, str(repo / "tests" / "engines" / "diffusion"))
    _import_official(args.official)
    import s2v_pattern as pattern

    torch.set_printoptions(precision=10)
    record_schedule()
    record_causal(pattern, refresh=False)
    record_causal(pattern, refresh=True)
    record_strong(pattern)
    if args.json is not None:
        import json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(RECORDS, indent=1) + "\n")


if __name__ == "__main__":
    main()
