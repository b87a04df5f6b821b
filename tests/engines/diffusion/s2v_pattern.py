"""Deterministic weights and inputs shared by the S2V reference tests and
``scripts/reference/record_s2v.py`` (which loads the same values into the official modules)."""

from __future__ import annotations

import math

import torch


def fill_pattern(module: torch.nn.Module, gain: float = 1.0, bias: float = 0.05) -> None:
    """:func:`pattern_state` loaded into ``module``."""
    state = module.state_dict()
    values = pattern_state({k: tuple(v.shape) for k, v in state.items()}, gain, bias)
    with torch.no_grad():
        for name, p in state.items():
            p.copy_(values[name].to(p.dtype))


def pattern_state(
    shapes: dict[str, tuple[int, ...]], gain: float = 1.0, bias: float = 0.05
) -> dict[str, torch.Tensor]:
    """A float64 sine pattern for every named shape, in sorted key order.

    Matrices get ``gain / sqrt(fan_in)``; vectors named ``weight`` (norm scales) ``1 + 0.1 x``;
    other vectors ``bias x``; the audio layer weights ``0.5 + 0.3 x`` (positive before the SiLU, so
    their normalising sum stays away from zero)."""
    out = {}
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        w = torch.sin(torch.arange(math.prod(shape), dtype=torch.float64) * 0.61 + i).view(shape)
        if name.endswith("casual_audio_encoder.weights"):
            out[name] = 0.5 + 0.3 * w
        elif len(shape) == 1 and name.endswith("weight"):
            out[name] = 1.0 + 0.1 * w
        elif len(shape) == 1:
            out[name] = bias * w
        else:
            out[name] = w * (gain / math.prod(shape[1:]) ** 0.5)
    return out


def wave(shape: tuple[int, ...], freq: float, phase: float = 0.0) -> torch.Tensor:
    """float32 ``sin(freq * i + phase)`` over ``shape``."""
    i = torch.arange(math.prod(shape), dtype=torch.float64)
    return torch.sin(i * freq + phase).view(shape).float()


# -- the end-to-end clip pipeline fixture (tests and scripts/reference/record_s2v.py) -----------
#: The pipeline test: clips of 8 frames, 3 UniPC steps, guidance 4.5, seed 7, 64x64; a Wan2.1-layout
#: VAE of width 8 with pattern gain 0.7 (narrower or stronger pattern VAEs amplify float32
#: rounding chaotically, which would hide what the test compares).
PIPELINE = {
    "infer_frames": 8, "steps": 3, "shift": 3.0, "guidance": 4.5, "seed": 7, "size": 64,
    "vae_dim": 8, "vae_gain": 0.7,
}  # fmt: skip


def pipeline_audio() -> torch.Tensor:
    """0.8 s of 16 kHz audio (two clips of 8 frames), float32 exactly representable in int16."""
    t = torch.arange(12800, dtype=torch.float64)
    x = 0.3 * torch.sin(t * 0.05) + 0.2 * torch.sin(t * 0.013 + 1.0) * torch.sin(t * 0.0007)
    return (torch.round(x * 32767) / 32768).float()


def pipeline_image() -> torch.Tensor:
    """A uint8 ``(64, 64, 3)`` portrait."""
    return (wave((64, 64, 3), 0.071, 0.2) * 120 + 128).round().clamp(0, 255).to(torch.uint8)


def pipeline_contexts(text_dim: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt and negative-prompt embeddings ``(tokens, text_dim)`` (the text encoder is tested
    on its own)."""
    return wave((5, text_dim), 0.41), wave((7, text_dim), 0.19, 0.7)


def write_wav2vec2(path) -> None:
    """A wav2vec2 (stable layer norm, 25 hidden states of width 20) with pattern weights, its
    feature extractor (normalising) and a CTC tokenizer, as ``from_pretrained`` folders."""
    import json

    import transformers

    config = transformers.Wav2Vec2Config(
        hidden_size=20, num_hidden_layers=24, num_attention_heads=2, intermediate_size=16,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=6, do_stable_layer_norm=True, feat_extract_norm="layer",
    )  # fmt: skip
    model = transformers.Wav2Vec2ForCTC(config)
    fill_pattern(model, gain=1.0, bias=0.02)
    model.save_pretrained(path)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5}
    (path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(path / "vocab.json"))
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    transformers.Wav2Vec2Processor(
        feature_extractor=extractor, tokenizer=tokenizer
    ).save_pretrained(path)
