"""The LoRA merge against PEFT's own ``merge_and_unload`` on the tiny S2V model, and bad files.

PEFT (the ``dev`` extra) wraps the model exactly as LiveAvatar does (``get_peft_model`` with their
target modules); its adapters are random (``init_lora_weights=False``) so that every merged layer
changes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from liveface.engines.diffusion.checkpoint.lora import (
    LIVEAVATAR_LORA,
    LoraSettings,
    is_target,
    load_and_merge,
    merge_lora,
    read_lora,
    split_lora,
)
from liveface.engines.diffusion.dit.s2v.config import S2VConfig
from liveface.engines.diffusion.dit.s2v.model import WanS2VDiT
from liveface.errors import CheckpointError

TARGETS = ["q", "k", "v", "o", "ffn.0", "ffn.2"]


def tiny(dtype: torch.dtype = torch.float32) -> WanS2VDiT:
    torch.manual_seed(0)
    return WanS2VDiT(S2VConfig.preset("tiny")).eval().to(dtype)


def peft_lora(model: WanS2VDiT, rank: int, alpha: float):
    """PEFT's wrapped copy of ``model`` and the LoRA tensors it holds (PEFT's key layout)."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=TARGETS, init_lora_weights=False
    )
    wrapped = peft.get_peft_model(copy.deepcopy(model), config)
    state = {k: v.detach().clone() for k, v in wrapped.state_dict().items() if "lora_" in k}
    return wrapped, state


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_equals_peft_merge_and_unload(dtype: torch.dtype, tmp_path: Path) -> None:
    base = tiny(dtype)
    wrapped, state = peft_lora(base, rank=4, alpha=8.0)
    assert all(".lora_A.default.weight" in k or ".lora_B.default.weight" in k for k in state)
    save_file(state, str(tmp_path / "liveavatar.safetensors"))
    merged_by_peft = wrapped.merge_and_unload()
    ours = copy.deepcopy(base)
    count = load_and_merge(ours, tmp_path / "liveavatar.safetensors", LoraSettings(alpha=8.0))
    assert count == 3 * 10 + 2 * 4  # q/k/v/o of both attentions + ffn.0/ffn.2, audio injectors
    assert_same_weights(ours, merged_by_peft)
    changed = [k for k, v in ours.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert len(changed) == count
    assert "audio_injector.injector.1.o.weight" in changed


def test_peft_saved_layout_and_its_adapter_config(tmp_path: Path) -> None:
    """``get_peft_model_state_dict`` keys (no adapter name) and alpha from adapter_config.json."""
    peft = pytest.importorskip("peft")
    base = tiny()
    wrapped, _ = peft_lora(base, rank=2, alpha=6.0)
    state = peft.get_peft_model_state_dict(wrapped)
    assert any(k.endswith(".lora_A.weight") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "a.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 6.0}))
    lora = read_lora(tmp_path / "a.safetensors")
    assert lora.alpha == 6.0
    ours = copy.deepcopy(base)
    merge_lora(ours, lora, LoraSettings(alpha=1.0))  # the file's alpha wins
    assert_same_weights(ours, wrapped.merge_and_unload())


def pair(module: str, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    return {f"{module}.lora_A.weight": a, f"{module}.lora_B.weight": b}


def test_alpha_from_safetensors_metadata_and_full_tensors(tmp_path: Path) -> None:
    base = tiny()
    a, b = torch.randn(2, 48), torch.randn(48, 2)
    state = pair("blocks.1.ffn.2", torch.randn(2, 64), torch.randn(48, 2))
    state |= pair("blocks.0.self_attn.q", a, b)
    norm = torch.full((48,), 0.5)
    state["base_model.model.blocks.0.norm3.weight"] = norm
    save_file(state, str(tmp_path / "l.safetensors"), metadata={"lora_alpha": "4"})
    ours = copy.deepcopy(base)
    load_and_merge(ours, tmp_path / "l.safetensors", LoraSettings(alpha=99.0))
    want = base.blocks[0].self_attn.q.weight + (b @ a) * 2.0  # alpha 4 / rank 2
    assert torch.allclose(ours.blocks[0].self_attn.q.weight, want)
    assert torch.equal(ours.blocks[0].norm3.weight, norm)


Z = torch.zeros
BAD = [
    (pair("blocks.0.self_attn.q", Z(2, 47), Z(48, 2)), "blocks.0.self_attn.q (A (2, 47)"),
    (pair("blocks.0.ffn.0", Z(2, 48), Z(48, 2)), "B (48, 2); the layer is 48 -> 64)"),
    (pair("blocks.0.self_attn.k", Z(2, 48), Z(48, 3)), "A has rank 2, B rank 3"),
    (pair("blocks.9.self_attn.q", Z(2, 48), Z(48, 2)), "have: blocks.9.self_attn.q.lora_A"),
    (pair("text_embedding.0", Z(2, 24), Z(48, 2)), "ffn.0, ffn.2: text_embedding.0.lora_A"),
    ({"blocks.0.self_attn.q.lora_A.weight": Z(2, 48)}, "pair: blocks.0.self_attn.q.lora_B"),
    ({"blocks.0.norm3.weight": Z(47)}, "blocks.0.norm3.weight (file (47,), model (48,))"),
    ({"blocks.0.nonsense": Z(3)}, "does not have: blocks.0.nonsense"),
]


@pytest.mark.parametrize(("state", "named"), BAD)
def test_a_lora_that_does_not_fit_is_refused_by_name_and_changes_nothing(state, named) -> None:
    model = tiny()
    good = pair("blocks.1.self_attn.v", torch.ones(2, 48), torch.ones(48, 2))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError) as err:
        merge_lora(model, split_lora(good | state), LoraSettings(alpha=1.0))
    assert named in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_rank_other_than_the_configured_one_is_refused() -> None:
    model = tiny()
    lora = split_lora(pair("blocks.0.self_attn.q", torch.zeros(4, 48), torch.zeros(48, 4)))
    with pytest.raises(CheckpointError, match=r"ranks \[4\] \(the settings say 128\)"):
        merge_lora(model, lora, LIVEAVATAR_LORA)


def test_missing_or_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_lora(tmp_path / "liveavatar.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_lora(tmp_path / "broken.safetensors")


def test_liveavatar_targets_cover_896_tensors_of_the_14b_model() -> None:
    """Their file has 896 tensors: 40 blocks x 10 linears + 12 audio injectors x 4, A and B."""
    with torch.device("meta"):
        model = WanS2VDiT(S2VConfig.preset("s2v-14b"))
    names = [
        n for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and is_target(n, LIVEAVATAR_LORA.targets)
    ]  # fmt: skip
    assert 2 * len(names) == 896
