"""Wan-S2V speech features: the official whole-clip path (recorded values of the official
``linear_interpolation`` / ``get_audio_embed_bucket_fps``, ``scripts/reference/record_s2v.py``)
and the streaming definition (chunked == whole clip, nothing read beyond the context)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from s2v_pattern import wave

from liveface.engines.diffusion.audio.encoder import SpeechEncoder
from liveface.engines.diffusion.audio.s2v_features import (
    StreamingFeatures,
    bucket_official,
    clip_count,
    interpolate_official,
    whole_clip_features,
)

transformers = pytest.importorskip("transformers")

# T: (interp shape, mean, abs mean, step, picks), (clips, mean, abs mean, step, picks)
RECORDED = {
    137: ((3, 82, 5), 0.0002817703515, 0.6328786128, 153, [
        0.2955202162, -0.6428238153, -0.9812836051, -0.397367388, 0.3504196107, 0.8967145681,
        0.6864844561, -0.0106587261],
        1, -0.0002708980727, 0.3497862561, 100, [
        0.2955202162, 0.8331458569, -0.4548203051, -0.5917493105, -0.6129465103, 0.1377493143,
        0.3806215525, 0.0, 0.0, 0.0, 0.0, 0.0]),
    250: ((3, 150, 5), 0.0009889455653, 0.6307073566, 281, [
        0.2955202162, 0.9758028388, 0.0251679234, -0.9079935551, -0.5437064767, 0.8681566715,
        0.7818146944, -0.4715143144],
        2, 0.0004996616609, 0.3149214761, 200, [
        0.2955202162, 0.9595417976, 0.239038527, 0.1810778379, 0.914947629, 0.3476437032, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0]),
}  # fmt: skip


@pytest.mark.parametrize("num", sorted(RECORDED))
def test_interpolation_and_bucketing_match_the_official_code(num: int) -> None:
    shape, mean, abs_mean, step, picks, clips, bmean, babs, bstep, bpicks = RECORDED[num]
    hidden = wave((3, num, 5), 0.07, 0.3)
    feat = interpolate_official(hidden)
    assert feat.shape == shape
    assert feat.mean().item() == pytest.approx(mean, abs=1e-7)
    assert feat.abs().mean().item() == pytest.approx(abs_mean, rel=1e-6)
    assert feat.flatten()[::step][: len(picks)].tolist() == pytest.approx(picks, abs=1e-6)
    assert clip_count(shape[1], 16, 80) == clips
    bucket = bucket_official(feat, 16, 80)  # (layers, dim, frames)
    assert bucket.shape == (3, 5, clips * 80)
    official_layout = bucket.permute(2, 0, 1).flatten()  # (frames, layers, dim)
    assert official_layout.mean().item() == pytest.approx(bmean, abs=1e-7)
    assert official_layout.abs().mean().item() == pytest.approx(babs, rel=1e-6)
    assert official_layout[::bstep][:12].tolist() == pytest.approx(bpicks, abs=1e-6)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> SpeechEncoder:
    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=20, do_stable_layer_norm=True, feat_extract_norm="layer",
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wav2vec2")
    transformers.Wav2Vec2ForCTC(config).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(path)
    return SpeechEncoder.from_pretrained(path)


def test_whole_clip_features_normalise_like_the_official_processor(encoder) -> None:
    audio = np.sin(np.arange(24000) * 0.01).astype(np.float32) * 0.3 + 0.1
    processor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)
    normed = processor(audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        official = encoder.model(normed, output_hidden_states=True).hidden_states
    hidden = torch.cat(official)  # (layers, features, dim), as the official pipeline stacks them
    want = bucket_official(interpolate_official(hidden), 16, 80)[None]
    got = whole_clip_features(encoder, torch.from_numpy(audio), 16, 80)
    assert got.shape == (1, 3, 16, 80)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_streamed_features_equal_whole_clip_ones_and_read_only_their_context(encoder) -> None:
    stream = StreamingFeatures(fps=16, block_frames=4, context_features=25, lookahead_features=2)
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000 * 3) * 0.2).astype(np.float32)

    def reader(signal: np.ndarray):
        def read(begin: int, end: int) -> np.ndarray:
            out = np.zeros(end - begin, np.float32)
            lo, hi = max(begin, 0), min(end, signal.shape[0])
            out[lo - begin : hi - begin] = signal[lo:hi]
            return out

        return read

    whole = stream.features(encoder, reader(audio), 0, 40)
    parts, first = [], 0
    for size in (4, 12, 8, 16):  # chunks of 1, 3, 2 and 4 latent frames
        parts.append(stream.features(encoder, reader(audio), first, first + size))
        first += size
    # Equal up to float rounding: the blocks are batched differently (1 to 4 windows per call).
    torch.testing.assert_close(torch.cat(parts, dim=-1), whole, rtol=1e-5, atol=1e-6)
    # Frames 24..39 read only [begin, end): audio outside it changes nothing of them.
    begin, end = stream.reach(24, 40)
    assert begin > 0
    assert end < audio.shape[0]
    changed = audio.copy()
    changed[:begin] = 0.5
    changed[end:] = -0.5
    again = stream.features(encoder, reader(changed), 24, 40)
    torch.testing.assert_close(again, whole[..., 24:], rtol=1e-5, atol=1e-6)
    # ... and the audio inside does matter.
    changed[end - 2000 : end] = 0.0
    assert not torch.equal(stream.features(encoder, reader(changed), 24, 40), whole[..., 24:])
