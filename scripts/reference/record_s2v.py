"""Record reference values of the official Wan-S2V code for tests/engines/diffusion/test_s2v_*.py.

Runs the official modules of github.com/Wan-Video/Wan2.2 from a local extraction (none of their
code is copied into liveface; only the printed numbers are committed):

    git -C /work/.mirror/Wan-Video+Wan2.2/repo archive HEAD | tar -x -C /tmp/wan22
    python scripts/reference/record_s2v.py /tmp/wan22

Needs torch, diffusers, einops and easydict (a separate venv is fine). Everything runs on the CPU
in float32 with deterministic weights (``tests/engines/diffusion/s2v_pattern.py``). The official
attention kernel needs CUDA and half precision; it is replaced by
``torch.nn.functional.scaled_dot_product_attention`` in float32 (same math, full-length keys),
which is what "float32 reference" means here.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# The tiny S2V config of the tests (liveface S2VConfig.preset("tiny")), in official names.
TINY = dict(
    cond_dim=16, audio_dim=20, num_audio_token=4, enable_adain=True, adain_mode="attn_norm",
    audio_inject_layers=[0, 2], zero_init=True, zero_timestep=True, enable_motioner=False,
    add_last_motion=True, enable_tsm=False, trainable_token_pos_emb=False, enable_framepack=True,
    framepack_drop_mode="padd", model_type="s2v", patch_size=(1, 2, 2), text_len=8, in_dim=16,
    dim=48, ffn_dim=64, freq_dim=16, text_dim=24, out_dim=16, num_heads=4, num_layers=3,
    window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
)  # fmt: skip
MOTION_FRAMES = 73


def _import_official(root: Path) -> None:
    """Make ``wan.*`` importable without running its package ``__init__`` files (which pull in
    every pipeline), and stand in for the few imports only unused functions need."""
    for name in ("wan", "wan.modules", "wan.modules.s2v", "wan.distributed", "wan.utils"):
        mod = types.ModuleType(name)
        mod.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = mod
    tok = types.ModuleType("wan.modules.tokenizers")
    tok.HuggingfaceTokenizer = object  # type: ignore[attr-defined]
    sys.modules["wan.modules.tokenizers"] = tok
    import importlib.machinery

    librosa = types.ModuleType("librosa")  # only AudioEncoder.extract_audio_feat uses it
    librosa.__spec__ = importlib.machinery.ModuleSpec("librosa", None)
    sys.modules.setdefault("librosa", librosa)


def _sdpa_attention(q, k, v, q_lens=None, k_lens=None, **_: object) -> torch.Tensor:
    """float32 stand-in for the official flash attention: ``(b, l, heads, d)`` in and out."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float()
    )
    return out.transpose(1, 2).to(q.dtype)


def _show(name: str, t: torch.Tensor, picks: int = 8) -> None:
    flat = t.detach().double().flatten()
    step = max(1, flat.numel() // picks)
    print(
        f"{name}: shape={tuple(t.shape)} mean={flat.mean().item():.10g} "
        f"absmean={flat.abs().mean().item():.10g}"
    )
    print(f"  picks(step {step}) = {[round(v, 10) for v in flat[::step][:picks].tolist()]}")


def record_model(pattern) -> None:
    import wan.modules.model as base
    import wan.modules.s2v.model_s2v as s2v

    base.flash_attention = _sdpa_attention
    s2v.flash_attention = _sdpa_attention
    torch.manual_seed(0)
    model = s2v.WanModel_S2V(**TINY).eval()
    pattern.fill_pattern(model)
    frames, h, w = 3, 8, 8
    latents = pattern.wave((16, frames, h, w), 0.37)
    ref = pattern.wave((16, 1, h, w), 0.23, 1.0)
    motion = pattern.wave((16, 19, h, w), 0.11, 2.0)
    pose = pattern.wave((16, frames, h, w), 0.05, 3.0) * 0.5
    audio = pattern.wave((1, 25, 20, 4 * frames), 0.29, 0.5)
    context = pattern.wave((5, 24), 0.41)
    for drop in (False, True):
        with torch.no_grad():
            out = model(
                [latents], t=torch.tensor([700.0]), context=[context], seq_len=None,
                ref_latents=[ref], motion_latents=[motion], cond_states=[pose],
                audio_input=audio, motion_frames=[MOTION_FRAMES, 19], drop_motion_frames=drop,
            )[0]  # fmt: skip
        _show(f"model drop_motion={drop}", out)
    with torch.no_grad():
        prefixed = torch.cat([audio[..., :1].repeat(1, 1, 1, MOTION_FRAMES), audio], dim=-1)
        glob, local = model.casual_audio_encoder(prefixed)
    _show("audio local (after drop)", local[:, 19:])
    _show("audio global (after drop)", glob[:, 19:])
    with torch.no_grad():
        mot, remb = model.frame_packer([motion], 2)
    _show("frame packer tokens", mot[0])
    # Rotation angles of the motion tokens (head 0, every 3rd complex channel).
    _show("frame packer rope angles", torch.angle(remb[0][0, :, 0, ::3]), picks=16)


def record_audio_features(pattern) -> None:
    from wan.modules.s2v.audio_encoder import AudioEncoder, linear_interpolation

    enc = object.__new__(AudioEncoder)
    enc.video_rate = 30
    for num in (137, 250):
        hidden = pattern.wave((3, num, 5), 0.07, 0.3)
        feat = linear_interpolation(hidden, input_fps=50, output_fps=30)
        bucket, repeats = enc.get_audio_embed_bucket_fps(feat, fps=16, batch_frames=80, m=0)
        _show(f"interp T={num}", feat)
        _show(f"bucket T={num} repeats={repeats}", bucket, picks=12)


def record_unipc() -> None:
    from wan.utils.fm_solvers_unipc import FlowUniPCMultistepScheduler

    for steps, shift in ((40, 3.0), (6, 5.0)):
        sched = FlowUniPCMultistepScheduler(
            num_train_timesteps=1000, shift=1, use_dynamic_shifting=False
        )
        sched.set_timesteps(steps, shift=shift)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 4, generator=g)
        target = torch.linspace(-1, 1, 24).view(2, 3, 4)
        for t in sched.timesteps:
            # A toy flow towards ``target`` that also depends on t (exercises every coefficient).
            tf = t.float()
            v = (x - target * torch.cos(tf / 250)) / (tf / 1000 + 0.05) + 0.3 * torch.sin(3 * x)
            x = sched.step(v, t, x, return_dict=False)[0]
        print(f"unipc steps={steps} shift={shift} timesteps={sched.timesteps[:4].tolist()}...")
        _show(f"unipc steps={steps} shift={shift}", x, picks=12)


def record_t5(pattern) -> None:
    current = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0  # a default argument of an unused class reads it
    try:
        from wan.modules.t5 import T5Encoder
    finally:
        torch.cuda.current_device = current

    model = T5Encoder(
        vocab=64,
        dim=32,
        dim_attn=32,
        dim_ffn=48,
        num_heads=4,
        num_layers=2,
        num_buckets=32,
        shared_pos=False,
        dropout=0.0,
    ).eval()
    pattern.fill_pattern(model)
    ids = torch.tensor([[5, 9, 33, 2, 1, 0, 0, 0, 0, 0, 0, 0]])
    mask = (torch.arange(12) < 5).long()[None]
    with torch.no_grad():
        out = model(ids, mask)
    _show("t5 encoder (first 5 tokens)", out[:, :5])


def record_14b_keys() -> None:
    """The official S2V-14B built on the meta device: key/shape digest and parameter count."""
    import hashlib

    import wan.modules.s2v.model_s2v as s2v
    from wan.configs.wan_s2v_14B import s2v_14B

    cfg = dict(s2v_14B.transformer)
    cfg.pop("__name__", None)
    with torch.device("meta"):
        model = s2v.WanModel_S2V(**cfg)
    state = model.state_dict()
    lines = "".join(f"{k}:{','.join(map(str, v.shape))}\n" for k, v in sorted(state.items()))
    print(f"s2v-14b keys={len(state)} parameters={sum(v.numel() for v in state.values())}")
    print(f"  sha256(key:shape lines)={hashlib.sha256(lines.encode()).hexdigest()}")


def _stand_in_torchvision_transforms() -> dict:
    """torchvision's compiled ops do not load against this CPU torch; the pipeline only needs
    ``Resize``/``CenterCrop``/``ToTensor`` on an image already of the target size, where the
    first two are the identity. These stand-ins refuse any other case."""
    from PIL import Image

    def resize(size):
        def run(img):
            if min(img.size) != size:
                raise ValueError("the stand-in Resize only passes images of that size")
            return img

        return run

    def center_crop(size):
        def run(img):
            if tuple(img.size[::-1]) != tuple(size):
                raise ValueError("the stand-in CenterCrop only passes that size")
            return img

        return run

    def to_tensor():
        def run(img):
            assert isinstance(img, Image.Image)
            return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0

        return run

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tr.Resize, tr.CenterCrop, tr.ToTensor = resize, center_crop, to_tensor
    tr.functional = types.ModuleType("torchvision.transforms.functional")
    tv.transforms = tr
    return {
        "torchvision": tv,
        "torchvision.transforms": tr,
        "torchvision.transforms.functional": tr.functional,
    }


def _import_speech2video():
    """``wan.speech2video`` with the stand-in transforms bound into it; they are removed from
    ``sys.modules`` again so that transformers does not take them for torchvision."""
    stand_ins = _stand_in_torchvision_transforms()
    decord = types.ModuleType("decord")
    decord.VideoReader = None  # only pose videos use it
    sys.modules.update(stand_ins, decord=decord)
    try:
        import wan.speech2video as module
    finally:
        for name in stand_ins:
            sys.modules.pop(name)
    return module


def record_pipeline(pattern) -> None:
    """The official ``WanS2V.generate`` end to end on the tiny model: two clips of 8 frames,
    UniPC 3 steps, CFG 4.5, seed 7, motion re-encoded by a tiny 16-channel Wan2.1-layout VAE
    (pattern weights, the official latent statistics). The text encoder is replaced by fixed
    embeddings (it is recorded on its own above)."""
    import tempfile
    import wave as wavfile

    from PIL import Image

    current = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0  # a default argument of an unused class reads it
    try:
        import wan.modules.model as base
        import wan.modules.s2v.model_s2v as s2v
        import wan.modules.vae2_1 as vae2_1
        from wan.configs.wan_s2v_14B import s2v_14B
        from wan.modules.s2v.audio_encoder import AudioEncoder

        WanS2V = _import_speech2video().WanS2V
    finally:
        torch.cuda.current_device = current
    base.flash_attention = _sdpa_attention
    s2v.flash_attention = _sdpa_attention
    p = pattern.PIPELINE
    tmp = Path(tempfile.mkdtemp())
    (tmp / "w2v").mkdir()
    pattern.write_wav2vec2(tmp / "w2v")
    audio = pattern.pipeline_audio()
    with wavfile.open(str(tmp / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((audio * 32768).round().to(torch.int16).numpy().tobytes())
    Image.fromarray(pattern.pipeline_image().numpy()).save(tmp / "p.png")

    def load(path, sr):  # librosa.load of a 16 kHz 16-bit wav at 16 kHz: samples / 32768
        with wavfile.open(path, "rb") as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return pcm.astype(np.float32) / 32768.0, sr

    sys.modules["librosa"].load = load
    tiny_vae = vae2_1.WanVAE_(
        dim=p["vae_dim"], z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=2, attn_scales=[],
        temperal_downsample=[False, True, True], dropout=0.0,
    ).eval()  # fmt: skip
    pattern.fill_pattern(tiny_vae, gain=p["vae_gain"])
    vae2_1._video_vae = lambda pretrained_path=None, z_dim=None, **_: tiny_vae
    context, context_null = pattern.pipeline_contexts()

    def text_encoder(texts, device):
        return [context_null if texts == ["negative"] else context]

    torch.manual_seed(0)
    model = s2v.WanModel_S2V(**TINY).eval()
    pattern.fill_pattern(model)
    pipe = object.__new__(WanS2V)
    cfg = s2v_14B
    pipe.device, pipe.config, pipe.rank = torch.device("cpu"), cfg, 0
    pipe.t5_cpu, pipe.init_on_cpu = True, False
    pipe.num_train_timesteps, pipe.param_dtype = 1000, torch.float32
    pipe.text_encoder = text_encoder
    pipe.vae = vae2_1.Wan2_1_VAE(vae_pth="(pattern)", device="cpu")
    pipe.noise_model = model
    pipe.audio_encoder = AudioEncoder(device="cpu", model_id=str(tmp / "w2v"))
    pipe.sp_size, pipe.sample_neg_prompt = 1, "negative"
    pipe.motion_frames, pipe.drop_first_motion = MOTION_FRAMES, True
    pipe.fps, pipe.audio_sample_m = 16, 0
    decoded = []  # the latents each clip decodes: [reference or motion ; the clip's]
    decode = pipe.vae.decode
    pipe.vae.decode = lambda zs: decoded.append(zs[0].clone()) or decode(zs)
    with torch.no_grad():
        video = pipe.generate(
            input_prompt="prompt", ref_image_path=str(tmp / "p.png"),
            audio_path=str(tmp / "a.wav"), enable_tts=False, tts_prompt_audio=None,
            tts_prompt_text=None, tts_text=None, num_repeat=None, pose_video=None,
            max_area=p["size"] ** 2, infer_frames=p["infer_frames"], shift=p["shift"],
            sample_solver="unipc", sampling_steps=p["steps"], guide_scale=p["guidance"],
            n_prompt="negative", seed=p["seed"], offload_model=False,
        )  # fmt: skip
    for r, z in enumerate(decoded):
        _show(f"pipeline clip {r} latents (C, F, h, w)", z[:, -p["infer_frames"] // 4 :], picks=12)
    _show("pipeline video (C, N, H, W)", video, picks=12)
    _show("pipeline video, last frame", video[:, -1], picks=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("official", type=Path, help="extracted Wan2.2 tree (holds wan/)")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(args.official))
    sys.path.insert(0, str(repo / "tests" / "engines" / "diffusion"))
    _import_official(args.official)
    import s2v_pattern as pattern

    torch.set_printoptions(precision=10)
    np.set_printoptions(precision=10)
    record_14b_keys()
    record_model(pattern)
    record_audio_features(pattern)
    record_unipc()
    record_t5(pattern)
    record_pipeline(pattern)


if __name__ == "__main__":
    main()
