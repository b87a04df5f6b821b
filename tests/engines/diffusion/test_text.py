"""Prompt embeddings: precomputed files and the umT5 encoder (tiny random model saved to tmp)."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.text.encoders import (
    PrecomputedTextEmbeddings,
    UMT5TextEncoder,
    save_text_embeddings,
)
from liveface.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")

TINY = DiTConfig.preset("tiny")


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def build_tokenizer(path) -> None:
    """A tiny unigram tokenizer trained offline with ``tokenizers`` (the real umT5 one cannot be
    fetched here); same special tokens as umT5: ``<pad>`` = 0, ``</s>`` = 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(["a person talks to the camera", "a smiling woman speaking"], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(path)


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory):
    config = transformers.UMT5Config(
        vocab_size=64, d_model=TINY.text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("umt5")
    transformers.UMT5EncoderModel(config).save_pretrained(path)
    try:
        build_tokenizer(path)
    except Exception as e:  # tokenizers missing or unable to train offline
        pytest.skip(f"cannot build a tokenizer offline: {e}")
    return path


def test_precomputed_embeddings_round_trip(tmp_path):
    path = tmp_path / "prompts.safetensors"
    talk = torch.randn(7, TINY.text_dim)
    save_text_embeddings(path, {"talk": talk, "negative": torch.randn(3, TINY.text_dim)})
    table = PrecomputedTextEmbeddings.load(path, text_dim=TINY.text_dim)
    assert table.names == ["negative", "talk"]
    assert torch.equal(table.get("talk"), talk)
    with pytest.raises(ConfigError, match="available: negative, talk"):
        table.get("sing")
    with pytest.raises(CheckpointError, match=r"expected \(tokens, 4096\)"):
        PrecomputedTextEmbeddings.load(path, text_dim=4096)


@torch.no_grad()
def test_umt5_encodes_token_ids_without_padding(umt5_dir):
    encoder = UMT5TextEncoder.from_pretrained(umt5_dir, load_tokenizer=False)
    ids = torch.tensor([[5, 9, 11, 1, 0, 0], [7, 1, 0, 0, 0, 0]])
    mask = (torch.arange(6) < torch.tensor([[4], [2]])).long()
    first, second = encoder.encode_ids(ids, mask)
    assert first.shape == (4, TINY.text_dim)
    assert second.shape == (2, TINY.text_dim)
    alone = encoder.encode_ids(ids[1:, :2], mask[1:, :2])[0]
    torch.testing.assert_close(second, alone, atol=1e-5, rtol=1e-5)  # padding does not leak


@torch.no_grad()
def test_umt5_with_tokenizer_feeds_the_dit(umt5_dir):
    encoder = UMT5TextEncoder.from_pretrained(umt5_dir, max_length=TINY.text_len)
    embeddings = encoder.encode(["a person  talks", "a smiling woman speaking to the camera"])
    assert all(e.shape[1] == TINY.text_dim for e in embeddings)
    assert 0 < embeddings[0].shape[0] <= TINY.text_len
    assert embeddings[1].shape[0] == TINY.text_len  # truncated to max_length
    torch.manual_seed(0)
    dit = WanDiT(TINY).eval()
    context = dit.prepare_context(embeddings)
    assert context.states.shape == (2, TINY.text_len, TINY.dim)
    assert context.kv is not None
    assert len(context.kv) == TINY.num_layers


def test_missing_umt5_path_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json"):
        UMT5TextEncoder.from_pretrained(tmp_path)
