"""Speech encoders through transformers from a local path (tiny random models saved to tmp)."""

from __future__ import annotations

import pytest
import torch

from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.errors import CheckpointError

transformers = pytest.importorskip("transformers")

SR = 16000
HIDDEN, LAYERS = 32, 2


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory):
    config = transformers.Wav2Vec2Config(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=20,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wav2vec2")
    # A CTC checkpoint, like the public ones: its lm_head is ignored, the encoder loads.
    transformers.Wav2Vec2ForCTC(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    config = transformers.WhisperConfig(
        d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
        max_source_positions=50, max_target_positions=16, vocab_size=100, pad_token_id=1,
        bos_token_id=2, eos_token_id=3, decoder_start_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("whisper")
    model = transformers.WhisperForConditionalGeneration(config)
    model.save_pretrained(path)
    return path, model


def wave(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, int(SR * seconds), generator=torch.Generator().manual_seed(seed)) * 0.1


@torch.no_grad()
def test_wav2vec2_returns_all_hidden_states_at_50hz(wav2vec2_dir):
    encoder = SpeechEncoder.from_pretrained(wav2vec2_dir)
    assert encoder.kind == "wav2vec2"
    assert encoder.num_hidden_states == LAYERS + 1
    states = encoder(wave(0.5))
    # The conv front end gives floor((samples - 400) / 320) + 1 features.
    assert states.shape == (1, LAYERS + 1, 24, HIDDEN)
    assert not torch.equal(states[:, 0], states[:, -1])


@torch.no_grad()
def test_whisper_loads_only_the_encoder_with_the_checkpoints_weights(whisper_dir):
    path, reference = whisper_dir
    encoder = SpeechEncoder.from_pretrained(path)
    assert encoder.kind == "whisper"
    assert encoder.hidden_size == HIDDEN
    assert not any("decoder" in k for k in encoder.state_dict())
    ours, theirs = encoder.model.state_dict(), reference.model.encoder.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    states = encoder(wave(0.6))
    assert states.shape == (1, LAYERS + 1, 30, HIDDEN)  # 0.6 s at 50 features/s


def test_weights_missing_from_the_checkpoint_are_an_error(tmp_path, wav2vec2_dir):
    from safetensors.torch import load_file, save_file

    for f in wav2vec2_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    victim = next(k for k in state if "feature_projection.projection.weight" in k)
    state.pop(victim)
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="feature_projection"):
        SpeechEncoder.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        SpeechEncoder.from_pretrained(tmp_path / "nowhere")


@torch.no_grad()
def test_encoder_feeds_the_adapter(wav2vec2_dir):
    encoder = SpeechEncoder.from_pretrained(wav2vec2_dir)
    tiny = DiTConfig.preset("tiny")
    config = AudioConfig.for_dit(
        tiny, feature_dim=encoder.hidden_size, num_feature_layers=encoder.num_hidden_states,
        hidden_dim=32,
    )  # fmt: skip
    adapter = AudioAdapter(config)
    states = encoder(wave(0.64))  # 16 video frames at 25 fps, 4 latent frames
    # wav2vec2 returns 31 features for 0.64 s (its 400-sample receptive field): ask for the frames
    # explicitly and the last feature is repeated; by default only fully covered frames count.
    tokens = adapter.encode(states, num_latent_frames=4, first_frame=1)
    assert tokens.tokens.shape == (1, 4, config.tokens_per_frame, tiny.dim)
    assert adapter.encode(states).num_frames == 3


def test_loading_a_ctc_checkpoint_prints_nothing(wav2vec2_dir, capfd):
    from transformers.utils import logging as tf_logging

    before = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    capfd.readouterr()
    SpeechEncoder.from_pretrained(wav2vec2_dir)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err  # transformers reports the CTC head as unexpected
    assert "lm_head" not in out + err
    assert "Loading weights" not in err  # nor a progress bar
    assert (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()) == before
