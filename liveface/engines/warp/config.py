"""Configuration of the warp engine: frozen, typed, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass, fields

from liveface.engines.base import EngineSpec
from liveface.errors import ConfigError

#: Rate of the audio every engine consumes (see ``liveface.engines.base``).
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class WarpConfig:
    """Engine-wide defaults of the CPU warp engine; per-session values live in the session state.

    Attributes:
        width, height: output frame size in pixels (even).
        fps: output video frames per second.
        chunk_frames: video frames per chunk in steady state (1 or 2 for low latency).
        first_chunk_frames: video frames of a session's first chunk.
        lookahead_ms: audio read past each chunk's end for earlier mouth onsets; 0 is strictly
            causal.
        head_motion: default of the per-session ``head_motion`` option (idle head sway).
        seed: default per-session random seed (blink times, head-motion phases).
        max_batch: most chunks one ``generate`` call accepts.
        face_height: forehead-to-chin height of the aligned face as a fraction of the frame height.
        face_center_y: vertical position of the face centre as a fraction of the frame height.
        min_face_px: smallest accepted face (forehead-to-chin) in portrait pixels; smaller faces are
            refused because upscaling them gives a blurred avatar.
        detect_max_side: portraits larger than this are downscaled before face detection.
        blinks_per_minute: mean blink rate (people blink about 15-20 times a minute).
        attack_ms, release_ms: time constants of the jaw's opening and closing (lip spread and
            rounding use twice these).
        mouth_gain: scales how far the mouth opens for a given loudness.
        motion_scale: scales the amplitude of head sway and breathing.
    """

    width: int = 512
    height: int = 512
    fps: int = 25
    chunk_frames: int = 1
    first_chunk_frames: int = 1
    lookahead_ms: int = 0
    head_motion: bool = True
    seed: int = 0
    max_batch: int = 8
    face_height: float = 0.5
    face_center_y: float = 0.44
    min_face_px: int = 48
    detect_max_side: int = 1280
    blinks_per_minute: float = 17.0
    attack_ms: float = 30.0
    release_ms: float = 60.0
    mouth_gain: float = 1.0
    motion_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_types(self)
        rules = [
            (
                "width",
                128 <= self.width <= 4096 and self.width % 2 == 0,
                "an even number of pixels between 128 and 4096",
            ),
            (
                "height",
                128 <= self.height <= 4096 and self.height % 2 == 0,
                "an even number of pixels between 128 and 4096",
            ),
            ("fps", 1 <= self.fps <= 120, "between 1 and 120"),
            ("chunk_frames", 1 <= self.chunk_frames <= 250, "between 1 and 250"),
            ("first_chunk_frames", 1 <= self.first_chunk_frames <= 250, "between 1 and 250"),
            ("lookahead_ms", 0 <= self.lookahead_ms <= 200, "between 0 and 200 ms"),
            ("seed", self.seed >= 0, "a non-negative integer"),
            ("max_batch", 1 <= self.max_batch <= 1024, "between 1 and 1024"),
            ("face_height", 0.2 <= self.face_height <= 0.8, "between 0.2 and 0.8"),
            ("face_center_y", 0.3 <= self.face_center_y <= 0.6, "between 0.3 and 0.6"),
            ("min_face_px", 16 <= self.min_face_px <= 1024, "between 16 and 1024"),
            ("detect_max_side", 256 <= self.detect_max_side <= 8192, "between 256 and 8192"),
            ("blinks_per_minute", 0.0 <= self.blinks_per_minute <= 60.0, "between 0 and 60"),
            ("attack_ms", 1.0 <= self.attack_ms <= 500.0, "between 1 and 500 ms"),
            ("release_ms", 1.0 <= self.release_ms <= 1000.0, "between 1 and 1000 ms"),
            ("mouth_gain", 0.0 <= self.mouth_gain <= 3.0, "between 0 and 3"),
            ("motion_scale", 0.0 <= self.motion_scale <= 3.0, "between 0 and 3"),
        ]
        bad = [
            f"{name} must be {what} (got {getattr(self, name)!r})"
            for name, ok, what in rules
            if not ok
        ]
        if bad:
            raise ConfigError("invalid warp engine config: " + "; ".join(bad))

    @property
    def lookahead_samples(self) -> int:
        """``lookahead_ms`` in samples of the engine's input audio."""
        return self.lookahead_ms * SAMPLE_RATE // 1000

    def spec(self) -> EngineSpec:
        """The engine declaration derived from this config."""
        return EngineSpec(
            fps=self.fps,
            width=self.width,
            height=self.height,
            chunk_frames=self.chunk_frames,
            first_chunk_frames=self.first_chunk_frames,
            sample_rate=SAMPLE_RATE,
            left_context=0,
            lookahead=self.lookahead_samples,
            max_batch=self.max_batch,
        )


def _check_types(config: WarpConfig) -> None:
    """Refuse values of the wrong type (``"512"`` or ``True`` for a size) with a clear message."""
    for f in fields(config):
        value = getattr(config, f.name)
        want = {"int": int, "float": float, "bool": bool}[str(f.type)]
        if want is bool:
            ok = isinstance(value, bool)
        elif want is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(
                f"invalid warp engine config: {f.name} must be a {want.__name__} "
                f"(got {value!r} of type {type(value).__name__})"
            )
