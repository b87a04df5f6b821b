"""Checkpoint loading: the official Wan2.2 key set, the diffusers layout, save/load, and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from liveface.engines.diffusion.checkpoint.dit import (
    INDEX_NAME,
    assign_dit_weights,
    build_dit,
    count_parameters,
    diffusers_to_wan_key,
    dit_key_shapes,
    load_audio_adapter,
    load_dit,
    read_dit_config,
    save_audio_adapter,
    save_dit,
    wan_to_diffusers_key,
)
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.errors import CheckpointError

TINY = DiTConfig.preset("tiny")
FIVE_B = DiTConfig.preset("wan2.2-ti2v-5b")

#: Parameters of the official WanModel for the TI2V-5B config. Obtained once by instantiating
#: ``WanModel`` from Wan2.2's ``wan/modules/model.py`` (github Wan-Video/Wan2.2 @ 42bf4cf, with
#: diffusers' ConfigMixin stubbed out) on the meta device, outside this repository:
#: ``sum(p.numel() for p in model.parameters())``; its state dict had 825 keys.
OFFICIAL_5B_PARAMETERS = 4_999_787_712
OFFICIAL_5B_KEYS = 825

#: The public Wan2.2-TI2V-5B ``config.json`` (the keys the official code writes).
PUBLIC_5B_CONFIG = {
    "_class_name": "WanModel", "_diffusers_version": "0.33.0", "dim": 3072, "eps": 1e-06,
    "ffn_dim": 14336, "freq_dim": 256, "in_dim": 48, "model_type": "ti2v", "num_heads": 24,
    "num_layers": 30, "out_dim": 48, "text_len": 512,
}  # fmt: skip


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def official_wan_shapes(c: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an official ``WanModel`` state dict, written out from its structure
    (wan/modules/model.py), independently of our module tree."""
    d, f = c.dim, c.ffn_dim
    out = {
        "patch_embedding.weight": (d, c.in_dim, *c.patch_size), "patch_embedding.bias": (d,),
        "text_embedding.0.weight": (d, c.text_dim), "text_embedding.0.bias": (d,),
        "text_embedding.2.weight": (d, d), "text_embedding.2.bias": (d,),
        "time_embedding.0.weight": (d, c.freq_dim), "time_embedding.0.bias": (d,),
        "time_embedding.2.weight": (d, d), "time_embedding.2.bias": (d,),
        "time_projection.1.weight": (6 * d, d), "time_projection.1.bias": (6 * d,),
        "head.head.weight": (math.prod(c.patch_size) * c.out_dim, d),
        "head.head.bias": (math.prod(c.patch_size) * c.out_dim,),
        "head.modulation": (1, 2, d),
    }  # fmt: skip
    for i in range(c.num_layers):
        b = f"blocks.{i}."
        out[b + "modulation"] = (1, 6, d)
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                out[f"{b}{attn}.{p}.weight"], out[f"{b}{attn}.{p}.bias"] = (d, d), (d,)
            out[f"{b}{attn}.norm_q.weight"] = out[f"{b}{attn}.norm_k.weight"] = (d,)
        out[b + "norm3.weight"] = out[b + "norm3.bias"] = (d,)
        out[b + "ffn.0.weight"], out[b + "ffn.0.bias"] = (f, d), (f,)
        out[b + "ffn.2.weight"], out[b + "ffn.2.bias"] = (d, f), (d,)
    return out


def tiny_model(seed: int = 0) -> WanDiT:
    torch.manual_seed(seed)
    model = WanDiT(TINY)
    model.init_weights(zero_output=False)
    return model.eval()


def same_weights(a: WanDiT, b: WanDiT) -> bool:
    sa, sb = a.base_state_dict(), b.base_state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- the official 5B checkpoint -----------------------------------------------------------------


def test_public_5b_key_set_loads_strictly_on_meta():
    shapes = official_wan_shapes(FIVE_B)
    assert len(shapes) == OFFICIAL_5B_KEYS
    assert sum(math.prod(s) for s in shapes.values()) == OFFICIAL_5B_PARAMETERS
    state = {k: torch.empty(s, device="meta", dtype=torch.bfloat16) for k, s in shapes.items()}
    model = build_dit(FIVE_B)
    assign_dit_weights(model, state, device="meta", dtype=torch.bfloat16)
    assert dit_key_shapes(FIVE_B) == shapes
    assert count_parameters(FIVE_B) == OFFICIAL_5B_PARAMETERS
    # The timestep path and modulation tables stay float32, the rest takes the requested dtype.
    assert model.blocks[0].modulation.dtype == torch.float32
    assert model.blocks[0].ffn[0].weight.dtype == torch.bfloat16


def test_public_config_json_reads_as_the_5b_preset(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(PUBLIC_5B_CONFIG))
    assert read_dit_config(tmp_path) == FIVE_B


# -- save / load --------------------------------------------------------------------------------


def test_save_then_load_is_bit_exact_across_shards(tmp_path):
    model = tiny_model()
    index = save_dit(model, tmp_path, max_shard_bytes=64 * 1024)
    weight_map = json.loads(index.read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "WanModel"
    loaded = load_dit(tmp_path)
    assert loaded.config == TINY
    assert same_weights(model, loaded)


def test_load_in_bfloat16_keeps_the_timestep_path_in_float32(tmp_path):
    save_dit(tiny_model(), tmp_path)
    model = load_dit(tmp_path, dtype=torch.bfloat16)
    assert model.patch_embedding.weight.dtype == torch.bfloat16
    assert model.time_projection[1].weight.dtype == torch.float32
    assert model.head.modulation.dtype == torch.float32


# -- diffusers layout ---------------------------------------------------------------------------

#: diffusers WanTransformer3DModel names (models/transformers/transformer_wan.py) of the
#: top-level parameters and block 0.
DIFFUSERS_NAMES = [
    "patch_embedding.weight", "patch_embedding.bias",
    "condition_embedder.time_embedder.linear_1.weight",
    "condition_embedder.time_embedder.linear_1.bias",
    "condition_embedder.time_embedder.linear_2.weight",
    "condition_embedder.time_embedder.linear_2.bias",
    "condition_embedder.time_proj.weight", "condition_embedder.time_proj.bias",
    "condition_embedder.text_embedder.linear_1.weight",
    "condition_embedder.text_embedder.linear_1.bias",
    "condition_embedder.text_embedder.linear_2.weight",
    "condition_embedder.text_embedder.linear_2.bias",
    "scale_shift_table", "proj_out.weight", "proj_out.bias",
    "blocks.0.scale_shift_table",
    *[f"blocks.0.attn{n}.{p}.{w}" for n in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")
      for w in ("weight", "bias")],
    *[f"blocks.0.attn{n}.{p}.weight" for n in (1, 2) for p in ("norm_q", "norm_k")],
    "blocks.0.norm2.weight", "blocks.0.norm2.bias",
    "blocks.0.ffn.net.0.proj.weight", "blocks.0.ffn.net.0.proj.bias",
    "blocks.0.ffn.net.2.weight", "blocks.0.ffn.net.2.bias",
]  # fmt: skip


def test_diffusers_names_map_onto_the_official_ones():
    official = official_wan_shapes(TINY.replace(num_layers=1))
    mapped = [diffusers_to_wan_key(k) for k in DIFFUSERS_NAMES]
    assert sorted(mapped) == sorted(official)
    assert diffusers_to_wan_key("blocks.0.norm2.weight") == "blocks.0.norm3.weight"
    assert diffusers_to_wan_key("scale_shift_table") == "head.modulation"
    assert [wan_to_diffusers_key(k) for k in mapped] == DIFFUSERS_NAMES


def test_diffusers_layout_loads_bit_exact(tmp_path):
    model = tiny_model()
    save_dit(model, tmp_path / "transformer", layout="diffusers")
    keys = json.loads((tmp_path / "transformer" / INDEX_NAME).read_text())["weight_map"]
    assert "blocks.1.attn2.to_out.0.weight" in keys
    assert "self_attn" not in " ".join(keys)
    loaded = load_dit(tmp_path)  # a pipeline root: descends into transformer/
    assert loaded.config == TINY
    assert same_weights(model, loaded)


# -- errors -------------------------------------------------------------------------------------


def test_missing_shard_is_named(tmp_path):
    save_dit(tiny_model(), tmp_path, max_shard_bytes=64 * 1024)
    victim = sorted(tmp_path.glob("*-of-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_dit(tmp_path)


def _rewrite(directory: Path, edit) -> None:
    """Apply ``edit`` to the state dict of a single-shard checkpoint in ``directory``."""
    shard = next(directory.glob("*-of-*.safetensors"))
    state = load_file(str(shard))
    edit(state)
    save_file(state, str(shard))
    index = directory / INDEX_NAME
    data = json.loads(index.read_text())
    data["weight_map"] = dict.fromkeys(state, shard.name)
    index.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("blocks.1.cross_attn.norm_k.weight"),
         r"missing keys: blocks\.1\.cross_attn\.norm_k\.weight"),
        (lambda s: s.__setitem__("blocks.0.extra.weight", torch.zeros(2)),
         r"unexpected keys: blocks\.0\.extra\.weight"),
        (lambda s: s.__setitem__("head.modulation", torch.zeros(1, 3, TINY.dim)),
         r"wrong shapes: head\.modulation \(checkpoint \(1, 3, 48\), model \(1, 2, 48\)\)"),
    ],
)  # fmt: skip
def test_key_problems_are_listed_by_name(tmp_path, edit, message):
    save_dit(tiny_model(), tmp_path)
    _rewrite(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        load_dit(tmp_path)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    save_dit(tiny_model(), tmp_path)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_dit(tmp_path, config=TINY.replace(ffn_dim=64))


def test_missing_path_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_dit(tmp_path / "nowhere")
    save_dit(tiny_model(), tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_dit(tmp_path)


# -- the audio part lives apart -----------------------------------------------------------------


def test_audio_adapter_loads_from_its_own_file_next_to_a_strict_base(tmp_path):
    base = tiny_model()
    save_dit(base, tmp_path / "dit")
    audio_config = AudioConfig.for_dit(TINY, feature_dim=16, num_feature_layers=3, hidden_dim=32)
    torch.manual_seed(3)
    adapter = AudioAdapter(audio_config)
    base.attach_audio(adapter)
    assert any(k.startswith("audio.layers.1.") for k in base.state_dict())
    assert base.base_state_dict().keys() == official_wan_shapes(TINY).keys()
    save_audio_adapter(adapter, tmp_path / "audio.safetensors")

    model = load_dit(tmp_path / "dit")
    loaded = load_audio_adapter(tmp_path / "audio.safetensors", dit=model)
    assert model.audio is loaded
    assert loaded.config == audio_config
    for k, v in adapter.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # Reloading base weights into a model with audio attached checks only the official keys.
    assign_dit_weights(model, load_dit(tmp_path / "dit").base_state_dict())
    assert model.audio is loaded


def test_audio_adapter_file_is_checked(tmp_path):
    adapter = AudioAdapter(AudioConfig.for_dit(TINY, feature_dim=16, num_feature_layers=3))
    path = tmp_path / "audio.safetensors"
    save_audio_adapter(adapter, path)
    state = load_file(str(path))
    state.pop("layers.0.q.weight")
    with safe_open(str(path), framework="pt") as f:  # keep the metadata, drop one tensor
        meta = f.metadata()
    save_file(state, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"missing keys: layers\.0\.q\.weight"):
        load_audio_adapter(path)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="not an audio adapter"):
        load_audio_adapter(path)
    wide = AudioConfig.for_dit(TINY.replace(num_layers=4), feature_dim=16, num_feature_layers=3)
    save_audio_adapter(AudioAdapter(wide), path)
    with pytest.raises(CheckpointError, match="exceed"):
        load_audio_adapter(path, dit=tiny_model())
