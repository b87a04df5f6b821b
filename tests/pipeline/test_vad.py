"""Voice activity on 20 ms frames: speech-like tones are voiced, silence and faint noise are not."""

import numpy as np
import pytest

from liveface.errors import ConfigError
from liveface.pipeline.vad import VoiceActivity

RATE = 16000


def voice(seconds: float) -> np.ndarray:
    """A buzzy harmonic signal with a syllable-rate envelope (webrtcvad calls it speech)."""
    t = np.arange(int(RATE * seconds)) / RATE
    f0 = 140.0
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    return (0.3 * x / 3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def test_speech_is_voiced_silence_is_not_and_labels_survive_any_split():
    x = np.concatenate([np.zeros(RATE), voice(1.0), np.zeros(RATE)])
    vad = VoiceActivity(RATE)
    for part in np.array_split(x, 37):
        vad.push(part)
    assert vad.labelled_until == x.shape[0] // vad.frame * vad.frame
    assert not vad.voiced(0, RATE - 1)
    assert vad.voiced(RATE + 4000, 2 * RATE - 4000)
    # Hangover: a little after speech still counts; a second later does not.
    assert vad.voiced(2 * RATE, 2 * RATE + 40)
    assert not vad.voiced(2 * RATE + 6000, 3 * RATE - 1)


def test_faint_noise_stays_silent_and_truncate_relabels():
    rng = np.random.default_rng(0)
    vad = VoiceActivity(RATE)
    vad.push((0.001 * rng.standard_normal(RATE)).astype(np.float32))
    assert not vad.voiced(0, RATE)
    vad.truncate(RATE // 2)
    assert vad.labelled_until <= RATE // 2
    vad.push(voice(0.5))
    assert vad.voiced(RATE // 2 + 2000, RATE - 2000)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="rate"):
        VoiceActivity(44100)
    with pytest.raises(ConfigError, match="aggressiveness"):
        VoiceActivity(RATE, aggressiveness=7)
