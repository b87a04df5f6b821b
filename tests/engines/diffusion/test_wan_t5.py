"""umT5 from Wan's own encoder file, run by transformers, against the official ``T5Encoder``
(values recorded by ``scripts/reference/record_s2v.py`` with the same pattern weights)."""

from __future__ import annotations

import pytest
import torch
from s2v_pattern import pattern_state

from liveface.engines.diffusion.text.wan_t5 import clean_prompt, load_wan_umt5
from liveface.errors import CheckpointError

pytest.importorskip("transformers")

VOCAB, DIM, FFN, HEADS, LAYERS, BUCKETS = 64, 32, 48, 4, 2, 32
RECORDED = (0.03524695411, 0.8513206485, [
    2.0046312809, 0.8133943677, -0.2457463741, 0.3677425086, -1.2428494692, 0.1374356896,
    -0.7021164894, 0.5963594317])  # fmt: skip


def wan_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official ``T5Encoder`` (``shared_pos=False``), tiny."""
    out: dict[str, tuple[int, ...]] = {
        "token_embedding.weight": (VOCAB, DIM),
        "norm.weight": (DIM,),
    }
    for i in range(LAYERS):
        b = f"blocks.{i}."
        out |= {b + "norm1.weight": (DIM,), b + "norm2.weight": (DIM,)}
        out |= {b + f"attn.{n}.weight": (DIM, DIM) for n in "qkvo"}
        out |= {b + "ffn.gate.0.weight": (FFN, DIM), b + "ffn.fc1.weight": (FFN, DIM)}
        out |= {b + "ffn.fc2.weight": (DIM, FFN)}
        out |= {b + "pos_embedding.embedding.weight": (BUCKETS, HEADS)}
    return out


@pytest.fixture
def wan_file(tmp_path):
    state = {k: v.float() for k, v in pattern_state(wan_shapes()).items()}
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(state, path)
    return path


def test_encoder_matches_the_official_one(wan_file) -> None:
    encoder = load_wan_umt5(wan_file, None, max_length=12)
    ids = torch.tensor([[5, 9, 33, 2, 1, 0, 0, 0, 0, 0, 0, 0]])
    mask = (torch.arange(12) < 5).long()[None]
    (out,) = encoder.encode_ids(ids, mask)
    assert out.shape == (5, DIM)
    mean, abs_mean, picks = RECORDED
    assert out.mean().item() == pytest.approx(mean, abs=1e-5)
    assert out.abs().mean().item() == pytest.approx(abs_mean, rel=1e-5)
    assert out.flatten()[::20].tolist() == pytest.approx(picks, abs=1e-5)


def test_a_renamed_or_missing_key_is_named(tmp_path, wan_file) -> None:
    state = torch.load(wan_file)
    state["blocks.1.attn.qq.weight"] = state.pop("blocks.1.attn.q.weight")
    torch.save(state, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qq\.weight"):
        load_wan_umt5(tmp_path / "renamed.pth", None)
    del state["blocks.1.attn.qq.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"block\.1\.layer\.0\.SelfAttention\.q\.weight"):
        load_wan_umt5(tmp_path / "missing.pth", None)


def test_prompt_cleaning() -> None:
    assert clean_prompt("  a &amp;amp; b\n\tc ") == "a & b c"
