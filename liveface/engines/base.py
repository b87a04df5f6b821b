"""The engine contract: every avatar generator implements :class:`Engine`.

Time is counted in samples of the engine's input audio (``EngineSpec.sample_rate``, 16 kHz for every
engine here) on one media clock per session. Video frame ``n`` of a session starts at sample
``frame_start(n) = n * sample_rate // fps``; the frame animates the samples
``[frame_start(n), frame_start(n + 1))``. Integer arithmetic only, so any fps works.

Engines know nothing about asyncio or transports. ``open``/``close``/``interrupt`` may be called
from any thread; ``generate`` only from the EngineWorker's thread.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from liveface.errors import BadInputError, ConfigError


@dataclass(frozen=True)
class EngineSpec:
    """What an engine declares about its timing and output.

    Attributes:
        fps: output video frames per second.
        width, height: output frame size in pixels.
        chunk_frames: video frames per chunk in steady state.
        first_chunk_frames: video frames of a session's first chunk (may be shorter for a fast
            first frame); equal to ``chunk_frames`` when the engine has no such preference.
        sample_rate: rate of the audio the engine consumes (Hz).
        left_context: samples before the chunk's first sample that the engine reads.
        lookahead: samples after the chunk's last sample that the engine reads (0: strictly
            causal).
        max_batch: most chunks (of any sessions) one ``generate`` call accepts.
    """

    fps: int
    width: int
    height: int
    chunk_frames: int
    first_chunk_frames: int
    sample_rate: int = 16000
    left_context: int = 0
    lookahead: int = 0
    max_batch: int = 8

    def __post_init__(self) -> None:
        checks = {
            "fps": self.fps > 0,
            "width": self.width > 0 and self.width % 2 == 0,
            "height": self.height > 0 and self.height % 2 == 0,
            "chunk_frames": self.chunk_frames > 0,
            "first_chunk_frames": self.first_chunk_frames > 0,
            "sample_rate": self.sample_rate > 0,
            "left_context": self.left_context >= 0,
            "lookahead": self.lookahead >= 0,
            "max_batch": self.max_batch > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"engine spec has invalid {', '.join(bad)}: sizes must be positive and even, "
                f"counts positive, context and lookahead non-negative ({self})"
            )

    def frame_start(self, frame: int) -> int:
        """Media-clock sample at which video frame ``frame`` starts."""
        return frame * self.sample_rate // self.fps

    def frame_at(self, sample: int) -> int:
        """Index of the video frame whose span contains ``sample``."""
        # frame_start(n) <= sample < frame_start(n + 1)
        return ((sample + 1) * self.fps - 1) // self.sample_rate

    def chunk_frames_at(self, index: int) -> int:
        """Frames of the ``index``-th chunk of a session (0-based)."""
        return self.first_chunk_frames if index == 0 else self.chunk_frames


#: Most characters one scene may hold (each has its own audio stream, mouth and idle state).
MAX_CHARACTERS = 8


@dataclass
class Voice:
    """One character's own audio in a scene chunk (see :attr:`AudioChunk.voices`).

    Attributes:
        window: float32 mono, the character's samples over the same span as the chunk's
            ``window`` (``context`` samples of left context, the chunk's samples, the lookahead).
        voiced: whether this character's voice was detected in the chunk's ``[start, end)``.
    """

    window: np.ndarray
    voiced: bool


@dataclass
class AudioChunk:
    """One chunk of a session's audio, ready for an engine.

    Attributes:
        index: 0-based chunk number within the session.
        first_frame: media-clock index of the chunk's first video frame.
        num_frames: video frames to produce.
        start, end: media-clock samples ``[start, end)`` that the chunk's frames animate.
        window: float32 mono audio ``(left_context + (end - start) + lookahead,)`` covering
            ``[start - left_context, end + lookahead)``; samples before the session began are 0.
        context: samples of left context at the head of ``window`` (the chunk's own samples start
            at ``window[context]``).
        voiced: whether voice activity was detected in ``[start, end)``.
        epoch: the session's interrupt epoch when the chunk was cut; engines and buffers drop work
            of older epochs.
        voices: scene sessions only (:class:`SceneEngine`): each character's own audio, in
            character order; ``window`` is then their mix and ``voiced`` says whether anyone
            spoke. Empty for a single-character session.
    """

    index: int
    first_frame: int
    num_frames: int
    start: int
    end: int
    window: np.ndarray
    context: int
    voiced: bool
    epoch: int = 0
    voices: tuple[Voice, ...] = ()

    @property
    def samples(self) -> np.ndarray:
        """The chunk's own samples ``[start, end)`` taken from the window, ``(end - start,)``."""
        return self.window[self.context : self.context + (self.end - self.start)]

    def read(self, begin: int, end: int) -> np.ndarray:
        """Media-clock samples ``[begin, end)`` from the window.

        Raises:
            BadInputError: the window does not hold them (an engine asked past its context or
                lookahead).
        """
        origin = self.start - self.context
        lo, hi = begin - origin, end - origin
        if lo < 0 or hi > self.window.shape[0]:
            raise BadInputError(
                f"the chunk's audio window [{origin}, {origin + self.window.shape[0]}) does not "
                f"hold [{begin}, {end})"
            )
        return self.window[lo:hi]


@dataclass
class ChunkInfo:
    """Measurements of one chunk, for metrics and benchmarks (times in milliseconds).

    Attributes:
        engine_ms: wall time of the ``generate`` call that made the chunk (the worker sets it
            when the engine does not).
        generate_ms: the engine's own time for the batch the chunk was in.
        stages_ms: time per stage when the engine profiles (stage names are the engine's, e.g. the
            diffusion engine's ``Stage`` values), summed over the batch.
        steps_ms: time per denoising step when the engine profiles.
        latent_frames: latent frames generated (latent engines).
        steps: denoising steps the chunk took (diffusion engines).
        codebook_corrected: features the drift-correction codebook pulled back (None: no
            codebook in use).
    """

    engine_ms: float | None = None
    generate_ms: float | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    steps_ms: list[float] = field(default_factory=list)
    latent_frames: int | None = None
    steps: int | None = None
    codebook_corrected: float | None = None


@dataclass
class VideoChunk:
    """An engine's output for one :class:`AudioChunk`.

    Attributes:
        frames: uint8 RGB ``(num_frames, height, width, 3)``.
        first_frame: media-clock index of ``frames[0]``.
        start: media-clock sample of the first frame (``spec.frame_start(first_frame)``).
        audio: float32 mono ``(end - start,)``, the exact samples these frames animate.
        voiced: the chunk's voice flag.
        epoch: copied from the chunk.
        info: the chunk's measurements.
    """

    frames: np.ndarray
    first_frame: int
    start: int
    audio: np.ndarray
    voiced: bool
    epoch: int = 0
    info: ChunkInfo = field(default_factory=ChunkInfo)


class EngineState(abc.ABC):  # noqa: B024 - a marker base; each engine defines its own fields
    """Per-session state returned by :meth:`Engine.open`; owned by exactly one session."""


class Engine(abc.ABC):
    """An avatar generator. See the module docstring for the time conventions."""

    #: Registry name, e.g. ``"warp"``.
    name: str = ""

    @property
    @abc.abstractmethod
    def spec(self) -> EngineSpec:
        """Timing and output declaration."""

    @abc.abstractmethod
    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any]
    ) -> EngineState:
        """Do the per-identity work once (landmarks, reference latents, ...).

        Args:
            portrait: uint8 RGB ``(height, width, 3)``, or None for the engine's default portrait.
            prompt: optional text prompt (engines that take none ignore it).
            options: engine-specific per-session options.

        Raises:
            BadInputError: the portrait or an option is unusable (e.g. :class:`NoFaceError`).
        """

    @abc.abstractmethod
    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        """Turn a batch of chunks (possibly of several sessions) into video chunks, in order.

        Blocking; called only from the EngineWorker's thread. ``len(batch) <= spec.max_batch``.
        """

    @abc.abstractmethod
    def interrupt(self, state: EngineState) -> None:
        """Drop what is in flight for this session and fall back to idle motion."""

    @abc.abstractmethod
    def close(self, state: EngineState) -> None:
        """Free everything the session held."""

    def describe(self, state: EngineState) -> dict[str, Any]:
        """Facts about the session's avatar a client may use, e.g. ``{"mouth_box": [x0, y0, x1,
        y1]}`` as fractions of the frame. Engines with nothing to say return ``{}``."""
        return {}

    def quality_levels(self) -> list[str]:
        """Names of the engine's quality levels, best first (e.g. ``["4 steps", "2 steps",
        "2 steps + light decoder"]``). The runtime's degradation policy steps down this list when
        the engine cannot keep real time, and back up when it can. One level: nothing to trade."""
        return ["full"]

    def set_quality(self, level: int) -> None:  # noqa: B027 - engines with one level ignore it
        """Switch to ``quality_levels()[level]`` for chunks generated from now on.

        Called on the EngineWorker's thread between batches; must not change ``spec``."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing global
        """Release engine-wide resources when the server stops."""


@runtime_checkable
class ClipRenderer(Protocol):
    """An engine that renders a whole audio file better offline than chunk by chunk (e.g. with
    speech features computed over the whole clip, as its official pipeline does). Offline
    rendering uses it instead of :meth:`Engine.generate` when the engine has it."""

    def render_clips(
        self,
        audio: np.ndarray,
        portrait: np.ndarray | None,
        prompt: str | None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[VideoChunk]:
        """Video chunks for ``audio`` (float32 mono at ``spec.sample_rate``), frames from 0 on,
        each with the samples it spans; ``progress(done_frames, total_frames)`` as it goes."""
        ...


Box = tuple[float, float, float, float]


def check_box(box: object, what: str) -> Box:
    """``box`` as ``(x0, y0, x1, y1)`` fractions of an image, checked.

    Raises:
        BadInputError: not four numbers in [0, 1] with ``x0 < x1`` and ``y0 < y1``.
    """
    bad = BadInputError(f"{what} must be [x0, y0, x1, y1], fractions of the image in [0, 1]")
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise bad
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
        raise bad
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise bad
    if not (x0 < x1 and y0 < y1):
        raise BadInputError(f"{what} must have x0 < x1 and y0 < y1 (got {[x0, y0, x1, y1]})")
    return x0, y0, x1, y1


@dataclass(frozen=True)
class SceneRequest:
    """Which characters a scene holds: found in the portrait, or declared by boxes.

    Attributes:
        count: find this many faces (the largest ones) and number them left to right; None with
            ``boxes``: one character per box.
        boxes: ``(x0, y0, x1, y1)`` fractions of the portrait, one character per box, numbered in
            the order given; the face inside each box is the character's.

    Raises:
        BadInputError: neither or both given, a count outside 1..MAX_CHARACTERS, or a bad box.
    """

    count: int | None = None
    boxes: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        if (self.count is None) == (not self.boxes):
            raise BadInputError("a scene takes either a character count or boxes (one of them)")
        n = len(self.boxes) if self.boxes else self.count
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHARACTERS:
            raise BadInputError(f"a scene holds 1 to {MAX_CHARACTERS} characters (got {n!r})")
        boxes = tuple(check_box(b, f"boxes[{i}]") for i, b in enumerate(self.boxes))
        object.__setattr__(self, "boxes", boxes)

    @property
    def size(self) -> int:
        """Number of characters."""
        return len(self.boxes) if self.boxes else int(self.count or 0)


@dataclass(frozen=True)
class Character:
    """One character of an opened scene.

    Attributes:
        box: ``(x0, y0, x1, y1)``: where its face is, as fractions of the output frame.
        mouth_box: where its mouth moves, as fractions of the output frame (None if unknown).
    """

    box: Box
    mouth_box: Box | None = None

    def to_json(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": index, "box": [round(v, 5) for v in self.box]}
        if self.mouth_box is not None:
            out["mouth_box"] = [round(v, 5) for v in self.mouth_box]
        return out


@runtime_checkable
class SceneEngine(Protocol):
    """An engine that animates several characters in one picture, each from its own audio.

    A scene session's chunks carry :attr:`AudioChunk.voices` (one per character, in character
    order); ``generate``, ``interrupt`` and ``close`` take the scene's state as any other.
    """

    def open_scene(
        self,
        portrait: np.ndarray | None,
        prompt: str | None,
        options: Mapping[str, Any],
        scene: SceneRequest,
    ) -> tuple[EngineState, tuple[Character, ...]]:
        """Find or place the characters and do the per-identity work once.

        Returns:
            the scene's state and its characters (``scene.size`` of them, in character order).

        Raises:
            NoFaceError: fewer faces than characters, or none inside a box.
            BadInputError: an unusable portrait, option or layout.
        """
        ...
