"""Mouth shapes from the audio: rounding, spreading and bilabial closure on top of opening.

The cues are checked on synthetic sounds with known formants; the shapes on rendered frames of
espeak-ng words spoken as one sentence, measured by MediaPipe's face mesh (``lips`` fixture).
Figures are printed (run with ``-s``); the bounds are generous.
"""

from __future__ import annotations

import numpy as np
import pytest

from liveface.engines.warp.mouth import MouthDriver
from liveface.engines.warp.visemes import SpectralAnalyzer

SR = 16000
SPREAD = ("me", "see", "tea")
ROUND = ("moo", "who", "two")
OPEN = ("map", "car", "father")
#: Words with a bilabial between two vowels, and controls with another consonant there.
BILABIAL = ("mama", "papa", "happy", "summer")
CONTROL = ("lala", "nana")
WORDS = SPREAD + ROUND + OPEN + BILABIAL + CONTROL
#: Word gap of the espeak-ng sentence (ms) and the shortest pause that splits two words (s).
WORD_GAP_MS = 250
SPLIT_S = 0.15
#: A bilabial must bring the lips to this share of the word's widest opening, or closer.
MAX_BILABIAL_GAP = 0.25
#: Inner-lip gap (px) over which a frame counts as a vowel's.
OPEN_PX = 3.0


def vowel(f1: float, f2: float, f3: float, n: int, level: float = 0.3, f0: float = 120.0):
    """``n`` samples of a voiced sound: harmonics of ``f0`` shaped by three formants."""
    t = np.arange(n) / SR
    formants = ((f1, 90.0, 1.0), (f2, 120.0, 0.5), (f3, 200.0, 0.2))

    def gain(f: float) -> float:
        return 0.01 + sum(a * np.exp(-(((f - c) / b) ** 2)) for c, b, a in formants)

    x = sum(gain(f0 * k) * np.sin(2 * np.pi * f0 * k * t) for k in range(1, int(4000 / f0)))
    return (level * x / np.abs(x).max()).astype(np.float32)


def level_db(x: np.ndarray) -> float:
    return 20.0 * np.log10(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))))


@pytest.mark.parametrize(
    ("name", "formants", "expect"),
    [
        (
            "ah",
            (750, 1200, 2600),
            {"openness": (0.8, 1.0), "spread": (0, 0.1), "rounding": (0, 0.2)},
        ),
        ("ee", (280, 2250, 2900), {"openness": (0, 0.2), "spread": (0.8, 1.0), "rounding": (0, 0)}),
        ("oo", (300, 870, 2250), {"openness": (0, 0.2), "spread": (0, 0), "rounding": (0.8, 1.0)}),
    ],
)
def test_vowel_cues(name, formants, expect):
    x = vowel(*formants, n=640)
    cue = SpectralAnalyzer(SR).cues(x, peak_db=level_db(x))
    print(f"\n{name}: {cue}")
    for field, (lo, hi) in expect.items():
        assert lo <= getattr(cue, field) <= hi, field
    assert cue.closure < 0.1


def test_murmur_closes_the_lips_only_when_quieter_than_the_vowels():
    hum = vowel(250, 1100, 2300, n=640, level=0.1)
    analyzer = SpectralAnalyzer(SR)
    quiet = analyzer.cues(hum, peak_db=level_db(hum) + 12.0)  # a vowel was 12 dB louder
    loud = analyzer.cues(hum, peak_db=level_db(hum))
    print(
        f"\nmurmur 12 dB under the peak: closure {quiet.closure:.2f}; "
        f"at the peak {loud.closure:.2f}"
    )
    assert quiet.closure >= 0.8
    assert loud.closure <= 0.1


def test_stop_closure_but_not_onset():
    x = vowel(750, 1200, 2600, n=640)
    gap = np.zeros(240, np.float32)
    analyzer = SpectralAnalyzer(SR)
    peak = level_db(x)
    closing = analyzer.cues(np.concatenate([x[:400], gap]), peak)  # "ap": lips shut
    onset = analyzer.cues(np.concatenate([gap, x[:400]]), peak)  # speech starting
    print(f"\nstop closure cue {closing.closure:.2f}, onset {onset.closure:.2f}")
    assert closing.closure >= 0.9
    assert onset.closure <= 0.1


def test_closure_shuts_the_jaw_within_a_frame():
    drv = MouthDriver(SR, 25, attack_ms=30.0, release_ms=60.0, gain=1.0)
    drv.shape[:] = 1.0
    shut = drv.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
    drv.shape[:] = 1.0
    released = drv.step(np.array([0.0, 0.0, 0.0, 0.0], np.float32))
    assert shut[0] < 0.05 < released[0]


def _split_words(audio: np.ndarray, count: int) -> list[tuple[int, int]]:
    """``(start, end)`` samples of each word: sound separated by at least SPLIT_S of silence."""
    block = SR // 100
    energy = np.sqrt(np.mean(audio[: audio.size // block * block].reshape(-1, block) ** 2, 1))
    loud = np.nonzero(energy > 0.003)[0]
    breaks = np.nonzero(np.diff(loud) > SPLIT_S * 100)[0]
    starts = np.r_[loud[0], loud[breaks + 1]]
    ends = np.r_[loud[breaks], loud[-1]] + 1
    assert len(starts) == count, f"found {len(starts)} words in the espeak-ng sentence"
    return [(int(a) * block, int(b) * block) for a, b in zip(starts, ends, strict=True)]


@pytest.fixture(scope="module")
def words(engine, render, lips, say):
    """Per word: the lip measurements ``(frames, 2)`` (inner width, inner gap) while it is said."""
    speech = say(", ".join(WORDS), word_gap_ms=WORD_GAP_MS)
    lead = np.zeros(SR // 2, np.float32)
    audio = np.concatenate([lead, speech, np.zeros(SR // 2, np.float32)])
    spans = _split_words(audio, len(WORDS))
    state = engine.open(None, None, {"head_motion": False, "seed": 2})
    measured, _, _ = render(engine, state, audio, keep=lips.measure)
    rest = lips.measure(state.portrait[None])[0]
    spec = engine.spec
    pairs = zip(WORDS, spans, strict=True)
    out = {w: measured[spec.frame_at(a) : spec.frame_at(b) + 2] for w, (a, b) in pairs}
    return out, rest


def _shape(m: np.ndarray) -> tuple[float, float]:
    """Width and gap over the most open third of a word's frames."""
    m = m[np.isfinite(m).all(axis=1)]
    top = m[np.argsort(m[:, 1])[-max(2, len(m) // 3) :]]
    return float(top[:, 0].mean()), float(top[:, 1].mean())


def test_rounding_and_spreading_order_the_lip_shape(words):
    measured, rest = words
    rows, ratio, width = [], {}, {}
    for group, names in (("spread", SPREAD), ("round", ROUND), ("open", OPEN)):
        shapes = [_shape(measured[w]) for w in names]
        for w, (wd, gap) in zip(names, shapes, strict=True):
            rows.append(
                f"  {w:7s} {group:6s} width {wd:5.1f} px ({wd / rest[0]:.2f} of rest)  "
                f"gap {gap:5.2f} px  width/height {wd / gap:5.2f}"
            )
        ratio[group] = float(np.median([wd / gap for wd, gap in shapes]))
        width[group] = float(np.median([wd for wd, _ in shapes]))
    print(f"\nrest mouth: inner width {rest[0]:.1f} px, gap {rest[1]:.2f} px")
    print("\n".join(rows))
    print("median width/height: " + ", ".join(f"{g} {r:.2f}" for g, r in ratio.items()))
    print("median width: " + ", ".join(f"{g} {r:.1f}" for g, r in width.items()))
    # Spread lips are wide with a slit; rounded ones narrow with a small opening; open vowels
    # have the tallest opening.
    assert ratio["spread"] > ratio["round"] > ratio["open"]
    assert width["spread"] > width["open"] > width["round"]
    assert width["spread"] > 1.08 * width["round"]


def test_bilabials_close_the_lips(words):
    measured, _ = words
    closing = {}
    for w in BILABIAL + CONTROL:
        gap = measured[w][:, 1]
        gap = np.where(np.isfinite(gap), gap, 0.0)
        peak = float(gap.max())
        # From the first vowel's opening to the last visibly open frame (the second vowel may
        # be a close one, as in "happy").
        first = int(np.argmax(gap > 0.5 * peak))
        last = int(np.nonzero(gap > OPEN_PX)[0][-1])
        between = gap[first : last + 1]
        closing[w] = max(float(between.min()), 0.0) / peak
    print(
        "\nnarrowest gap between the vowels, share of the widest: "
        + ", ".join(f"{w} {v:.2f}" for w, v in closing.items())
    )
    for w in BILABIAL:
        assert closing[w] <= MAX_BILABIAL_GAP, w
    # The closing is the bilabials' own: "l" and "n" leave the lips apart.
    assert min(closing[w] for w in CONTROL) > max(closing[w] for w in BILABIAL) + 0.1
