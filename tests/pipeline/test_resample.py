import numpy as np
import pytest
from scipy.signal import upfirdn

from liveface.errors import AudioFormatError
from liveface.pipeline.resample import StreamingResampler


@pytest.mark.parametrize(
    ("src", "dst"), [(48000, 16000), (16000, 48000), (44100, 16000), (22050, 16000), (16000, 16000)]
)
def test_any_block_split_gives_the_whole_signal_result(src, dst):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(src // 2).astype(np.float32) * 0.1
    whole = StreamingResampler(src, dst).push(x)
    r = StreamingResampler(src, dst)
    parts, pos = [], 0
    while pos < x.shape[0]:
        n = int(rng.integers(1, 1500))
        parts.append(r.push(x[pos : pos + n]))
        pos += n
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    # Every output the input determines is released: none held back for later.
    assert abs(whole.shape[0] - x.shape[0] * dst / src) <= 1


def test_matches_the_textbook_filter_and_keeps_a_tone():
    r = StreamingResampler(48000, 16000)
    t = np.arange(48000) / 48000
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    y = r.push(x)
    bank = r._bank
    h = np.zeros(bank.size, np.float64)
    for p in range(r.up):
        h[p :: r.up] = bank[p]
    ref = upfirdn(h, x.astype(np.float64), r.up, r.down)[: y.shape[0]]
    np.testing.assert_allclose(y, ref, atol=1e-5)
    # A 440 Hz tone passes at unit gain, delayed by under a millisecond.
    assert r.delay_in / 48000 < 0.001
    assert abs(np.sqrt(np.mean(y[1000:] ** 2)) - np.sqrt(0.5)) < 0.01


def test_live_packets_come_out_at_once():
    r = StreamingResampler(48000, 16000)
    outs = [r.push(np.zeros(960, np.float32)).shape[0] for _ in range(5)]
    assert outs == [320] * 5


def test_bad_rates_are_refused():
    with pytest.raises(AudioFormatError, match="out of range"):
        StreamingResampler(1000, 16000)


def test_the_filter_is_scipys_firwin():
    from scipy.signal import firwin

    from liveface.pipeline.resample import kaiser_lowpass

    for taps, cutoff in ((48, 0.3), (16 * 3, 0.95 / 3), (161, 0.1)):
        np.testing.assert_allclose(
            kaiser_lowpass(taps, cutoff, 7.0), firwin(taps, cutoff, window=("kaiser", 7.0)),
            atol=1e-12,
        )  # fmt: skip
