"""A complete tiny Wan-S2V checkpoint directory in the official layout, for loader, engine and
render tests: the S2V DiT (``config.json`` + shard + index), a 16-channel tiny Wan2.1-layout VAE,
umT5 in Wan's module layout with a tokenizer folder, and a wav2vec2 with 25 hidden states."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from s2v_pattern import pattern_state

from liveface.engines.diffusion.checkpoint.s2v import (
    T5_FILE,
    T5_TOKENIZER,
    VAE_SAFETENSORS,
    WAV2VEC2_DIR,
    save_s2v_dit,
)
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.engines.diffusion.vae import WanVAEConfig, build_vae, save_vae

TEXT_DIM = 24  # S2VConfig.preset("tiny").dit.text_dim
#: The tiny model with a short motion history (13 frames: 4 latents, FramePack 1/2/4), so that
#: re-encoding the history with the VAE stays cheap on a CPU.
ENGINE_CONFIG = S2VConfig.preset("tiny").replace(motion_frames=13, zip_buckets=(1, 2, 4))


def tiny_vae_config() -> WanVAEConfig:
    return WanVAEConfig(
        name="wan2.1-tiny16", layout="wan2.1", z_dim=16, encoder_dim=4, decoder_dim=4,
        dim_mult=(1, 2, 2, 2), latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16,
    )  # fmt: skip


def build_tokenizer(path: Path) -> None:
    """A tiny unigram tokenizer trained offline (umT5's special tokens: <pad> 0, </s> 1)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(["a person talks to the camera", "blurry worst quality"], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(path)


def t5_shapes(dim: int = TEXT_DIM, vocab: int = 64, layers: int = 2) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (vocab, dim),
        "norm.weight": (dim,),
    }
    for i in range(layers):
        b = f"blocks.{i}."
        out |= {b + "norm1.weight": (dim,), b + "norm2.weight": (dim,)}
        out |= {b + f"attn.{n}.weight": (dim, dim) for n in "qkvo"}
        out |= {b + "ffn.gate.0.weight": (32, dim), b + "ffn.fc1.weight": (32, dim)}
        out |= {b + "ffn.fc2.weight": (dim, 32), b + "pos_embedding.embedding.weight": (32, 4)}
    return out


def write_s2v_checkpoint(root: Path, config: S2VConfig | None = None) -> Path:
    """Write the directory (random but seeded weights); returns ``root``."""
    import transformers

    cfg = config if config is not None else ENGINE_CONFIG
    torch.manual_seed(0)
    dit = WanS2VDiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():  # the official init zeroes the head: make the output move
            p.add_(torch.randn_like(p) * 0.02)
    save_s2v_dit(dit, root)
    save_vae(build_vae(tiny_vae_config()), root / VAE_SAFETENSORS)
    t5 = {k: v.float() for k, v in pattern_state(t5_shapes(cfg.dit.text_dim)).items()}
    torch.save(t5, root / T5_FILE)
    build_tokenizer(root / T5_TOKENIZER)
    w2v = transformers.Wav2Vec2Config(
        hidden_size=cfg.audio_dim, num_hidden_layers=cfg.audio_layers - 1, num_attention_heads=2,
        intermediate_size=16, conv_dim=(8,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, vocab_size=20, do_stable_layer_norm=True,
        feat_extract_norm="layer",
    )  # fmt: skip
    transformers.Wav2Vec2ForCTC(w2v).save_pretrained(root / WAV2VEC2_DIR)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(root / WAV2VEC2_DIR)
    return root


def rewrite_config(root: Path, **changes: object) -> None:
    path = root / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
