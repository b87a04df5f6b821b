"""Streaming voice activity on the session's media clock (webrtcvad plus an energy floor)."""

from __future__ import annotations

import numpy as np

from liveface.errors import ConfigError

VAD_RATES = (8000, 16000, 32000, 48000)


class VoiceActivity:
    """Labels fixed 20 ms frames of a mono float stream as speech or not, as audio arrives.

    A frame counts as speech when webrtcvad says so *and* its RMS is above ``energy_floor`` (the
    VAD alone fires on loud noise bursts). ``hangover_frames`` keeps the label on for a short while
    after speech so that word gaps do not close the mouth mid-sentence.

    Args:
        sample_rate: input rate; one of 8, 16, 32, 48 kHz (webrtcvad's rates).
        aggressiveness: webrtcvad mode 0..3.
        energy_floor: RMS below which a frame is silence, on float audio in [-1, 1].
        hangover_frames: frames kept voiced after the last speech frame.
        history_frames: labels remembered (older queries read as silence).
    """

    FRAME_MS = 20

    def __init__(
        self,
        sample_rate: int = 16000,
        aggressiveness: int = 2,
        energy_floor: float = 0.004,
        hangover_frames: int = 5,
        history_frames: int = 3000,
    ) -> None:
        if sample_rate not in VAD_RATES:
            raise ConfigError(f"VAD sample rate must be one of {VAD_RATES}, got {sample_rate}")
        if not 0 <= aggressiveness <= 3:
            raise ConfigError(f"VAD aggressiveness must be 0..3, got {aggressiveness}")
        import webrtcvad  # deferred: keeps import of the package free of native loads

        self._vad = webrtcvad.Vad(aggressiveness)
        self.sample_rate = sample_rate
        self.frame = sample_rate * self.FRAME_MS // 1000
        self._floor = energy_floor
        self._hang = hangover_frames
        self._labels = np.zeros(history_frames, dtype=bool)
        self._count = 0  # frames labelled so far
        self._pending = np.zeros(0, dtype=np.float32)
        self._since_speech = hangover_frames + 1

    @property
    def labelled_until(self) -> int:
        """Media-clock sample up to which labels exist."""
        return self._count * self.frame

    def push(self, samples: np.ndarray) -> None:
        """Label the complete 20 ms frames in ``samples`` (mono float32), keeping the remainder."""
        x = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        n = x.shape[0] // self.frame
        for i in range(n):
            seg = x[i * self.frame : (i + 1) * self.frame]
            self._label(seg)
        self._pending = x[n * self.frame :]

    def _label(self, seg: np.ndarray) -> None:
        seg = np.nan_to_num(seg, nan=0.0, posinf=0.0, neginf=0.0)
        rms = float(np.sqrt(np.mean(seg * seg)))
        speech = False
        if rms >= self._floor:
            pcm = (np.clip(seg, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
            speech = self._vad.is_speech(pcm, self.sample_rate)
        self._since_speech = 0 if speech else self._since_speech + 1
        self._labels[self._count % self._labels.shape[0]] = self._since_speech <= self._hang
        self._count += 1

    def voiced(self, start: int, end: int) -> bool:
        """True when any labelled frame overlapping ``[start, end)`` is speech."""
        first = max(start // self.frame, self._count - self._labels.shape[0], 0)
        last = min((end - 1) // self.frame, self._count - 1)
        if last < first:
            return False
        idx = np.arange(first, last + 1) % self._labels.shape[0]
        return bool(self._labels[idx].any())

    def truncate(self, sample: int) -> None:
        """Forget labels and pending audio at and after ``sample`` (the input was cut there)."""
        keep = min(self._count, sample // self.frame)
        self._count = keep
        self._pending = np.zeros(0, dtype=np.float32)
        self._since_speech = self._hang + 1
