"""The warp engine: a CPU talking portrait from a landmark mesh, no weights, no GPU."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from liveface.engines.base import (
    AudioChunk,
    Character,
    ChunkInfo,
    Engine,
    EngineSpec,
    EngineState,
    SceneRequest,
    VideoChunk,
)
from liveface.engines.warp import landmarks as L
from liveface.engines.warp import scene as S
from liveface.engines.warp.animate import FaceAnimator, frame_samples, frame_time
from liveface.engines.warp.config import WarpConfig
from liveface.engines.warp.face import align_face, default_portrait, detect_landmarks, to_rgb_uint8
from liveface.engines.warp.render import FaceRig, build_rig
from liveface.errors import BadInputError, SessionClosedError

#: Per-session options ``open`` accepts, with what each must be.
OPTIONS = {
    "head_motion": "a bool: idle head sway and breathing on or off",
    "seed": "a non-negative int: blink times and head-motion phases",
    "blinks_per_minute": "a number from 0 to 60",
}


class WarpState(EngineState):
    """One session of the warp engine: the portrait's rig and everything that evolves per frame.

    Attributes:
        rig: the precomputed portrait (read-only).
        head_motion: whether the head sways and breathes.
        seed: the session's random seed.
    """

    def __init__(
        self,
        rig: FaceRig,
        config: WarpConfig,
        head_motion: bool,
        seed: int,
        blinks_per_minute: float,
    ) -> None:
        face = float(np.linalg.norm(rig.landmarks[L.FOREHEAD] - rig.landmarks[L.CHIN]))
        self.rig: FaceRig | None = rig
        self.head_motion = head_motion
        self.seed = seed
        self.closed = False
        self.anim = FaceAnimator(rig, config, face, np.random.default_rng(seed), blinks_per_minute)

    @property
    def portrait(self) -> np.ndarray:
        """The aligned rest frame (lips closed), uint8 ``(H, W, 3)``."""
        return self._rig().portrait

    @property
    def original(self) -> np.ndarray:
        """The aligned portrait before its lips were closed, uint8 ``(H, W, 3)``."""
        return self._rig().original

    @property
    def original_landmarks(self) -> np.ndarray:
        """Landmarks of :attr:`original`, float32 ``(478, 2)`` output pixels."""
        return self._rig().original_landmarks

    @property
    def rest_gap(self) -> float:
        """How far apart the portrait's own lips were, output pixels (0 for a closed mouth)."""
        return self._rig().rest_gap

    @property
    def landmarks(self) -> np.ndarray:
        """Rest landmarks of the aligned portrait, float32 ``(478, 2)`` output pixels."""
        return self._rig().landmarks

    @property
    def mouth_box(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: output pixels where the mouth interior can appear."""
        return self._rig().mouth_box

    @property
    def jaw_box(self) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)``: output pixels the mouth shapes may move (the lower face)."""
        return self._rig().mesh.roi

    @property
    def eye_boxes(self) -> list[tuple[int, int, int, int]]:
        """``(y0, y1, x0, x1)`` of each eye region that blinks change."""
        return [eye.box for eye in self._rig().eyes]

    def _rig(self) -> FaceRig:
        if self.rig is None:
            raise SessionClosedError("the warp engine session is closed")
        return self.rig


class WarpEngine(Engine):
    """CPU engine: piecewise-affine landmark warping of a portrait, driven by audio features."""

    name = "warp"

    def __init__(self, config: WarpConfig | None = None) -> None:
        self.config = config if config is not None else WarpConfig()
        self._spec = self.config.spec()

    @property
    def spec(self) -> EngineSpec:
        return self._spec

    def open(
        self, portrait: np.ndarray | None, prompt: str | None, options: Mapping[str, Any] | None
    ) -> WarpState:
        """Find and align the face, precompute the rig; the prompt is ignored.

        Args:
            portrait: an image (grayscale, RGB or RGBA; any numeric dtype), or None for
                :func:`default_portrait`.
            prompt: unused by this engine.
            options: per-session options, see :data:`OPTIONS`.

        Raises:
            NoFaceError: no face, several faces, or a face too small.
            BadInputError: an unusable image or option.
        """
        cfg = self.config
        head_motion, seed, blinks = _parse_options(options or {}, cfg)
        image = default_portrait() if portrait is None else to_rgb_uint8(portrait)
        lm = detect_landmarks(image, cfg.min_face_px, cfg.detect_max_side)
        face = align_face(image, lm, cfg.width, cfg.height, cfg.face_height, cfg.face_center_y)
        return WarpState(build_rig(face), cfg, head_motion, seed, blinks)

    def open_scene(
        self,
        portrait: np.ndarray | None,
        prompt: str | None,
        options: Mapping[str, Any] | None,
        scene: SceneRequest,
    ) -> tuple[S.WarpScene, tuple[Character, ...]]:
        """Several characters in one picture, each animated from its own voice (see
        :mod:`liveface.engines.warp.scene`); the options are those of :meth:`open`.

        Raises:
            NoFaceError: fewer faces than characters, none in a box, or a face too small.
            BadInputError: an unusable image or option, or faces too close side by side.
        """
        head_motion, seed, blinks = _parse_options(options or {}, self.config)
        image = default_portrait() if portrait is None else to_rgb_uint8(portrait)
        state = S.open_scene(image, scene, self.config, head_motion, seed, blinks)
        return state, state.characters

    def generate(self, batch: Sequence[tuple[EngineState, AudioChunk]]) -> list[VideoChunk]:
        """Render each chunk of the batch in order (sessions may be mixed)."""
        if len(batch) > self._spec.max_batch:
            raise ValueError(f"batch of {len(batch)} exceeds max_batch {self._spec.max_batch}")
        return [self._generate_one(state, chunk) for state, chunk in batch]

    def _generate_one(self, state: EngineState, chunk: AudioChunk) -> VideoChunk:
        t0 = time.perf_counter()
        if isinstance(state, S.WarpScene):
            return self._generate_scene(state, chunk, t0)
        if not isinstance(state, WarpState):
            raise TypeError(f"warp engine got a {type(state).__name__}, not a WarpState")
        if state.closed:
            raise SessionClosedError("the warp engine session is closed")
        spec = self._spec
        height, width = spec.height, spec.width
        n = max(0, int(chunk.num_frames))
        frames = np.empty((n, height, width, 3), np.uint8)
        window = np.asarray(chunk.window, dtype=np.float32).reshape(-1)
        anim = state.anim
        for i in range(n):
            f = chunk.first_frame + i
            samples = window[frame_samples(spec, chunk, f)]
            shape, blink, pose = anim.step(
                samples, chunk.voiced, spec.lookahead, frame_time(spec, f), state.head_motion
            )
            anim.renderer.render(shape, blink, pose, frames[i])
        audio = _chunk_audio(chunk)
        return VideoChunk(
            frames=frames,
            first_frame=chunk.first_frame,
            start=spec.frame_start(chunk.first_frame),
            audio=audio,
            voiced=chunk.voiced,
            epoch=chunk.epoch,
            info=ChunkInfo(engine_ms=(time.perf_counter() - t0) * 1000.0),
        )

    def _generate_scene(self, state: S.WarpScene, chunk: AudioChunk, t0: float) -> VideoChunk:
        spec = self._spec
        frames = np.empty((max(0, chunk.num_frames), spec.height, spec.width, 3), np.uint8)
        S.render_chunk(state, chunk, spec, frames)
        return VideoChunk(
            frames=frames,
            first_frame=chunk.first_frame,
            start=spec.frame_start(chunk.first_frame),
            audio=_chunk_audio(chunk),
            voiced=chunk.voiced,
            epoch=chunk.epoch,
            info=ChunkInfo(engine_ms=(time.perf_counter() - t0) * 1000.0),
        )

    def describe(self, state: EngineState) -> dict[str, Any]:
        """``{"mouth_box": [x0, y0, x1, y1]}`` as fractions of the frame (where the mouth moves);
        a scene: ``{"characters": [{"id", "box", "mouth_box"}, ...]}``."""
        if isinstance(state, S.WarpScene):
            return S.describe(state)
        assert isinstance(state, WarpState)
        y0, y1, x0, x1 = state.mouth_box
        w, h = self._spec.width, self._spec.height
        return {"mouth_box": [x0 / w, y0 / h, x1 / w, y1 / h]}

    def interrupt(self, state: EngineState) -> None:
        """Forget the in-flight speech: the mouth restarts from rest; blinks and sway go on."""
        if isinstance(state, WarpState) and not state.closed:
            state.anim.mouth.reset()
        elif isinstance(state, S.WarpScene) and not state.closed:
            S.interrupt(state)

    def close(self, state: EngineState) -> None:
        """Drop the session's rig and buffers (idempotent)."""
        if isinstance(state, WarpState) and not state.closed:
            state.closed = True
            state.rig = None
            del state.anim
        elif isinstance(state, S.WarpScene):
            S.close(state)


def _chunk_audio(chunk: AudioChunk) -> np.ndarray:
    """A float32 copy ``(end - start,)`` of the chunk's own samples; NaN/inf become silence.

    A malformed (short) window is padded with silence so the audio always spans the frames.
    """
    want = max(0, chunk.end - chunk.start)
    window = np.asarray(chunk.window, dtype=np.float32).reshape(-1)
    own = window[chunk.context : chunk.context + want]
    audio = np.zeros(want, np.float32)
    audio[: own.size] = own
    if not np.isfinite(audio).all():
        audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    return audio


def _parse_options(options: Mapping[str, Any], cfg: WarpConfig) -> tuple[bool, int, float]:
    """``(head_motion, seed, blinks_per_minute)`` from the per-session options and defaults."""
    if not isinstance(options, Mapping):
        raise BadInputError("warp engine options must be a mapping of name to value")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
        raise BadInputError(f"unknown warp engine option(s) {unknown}; known options are {known}")
    head_motion = options.get("head_motion", cfg.head_motion)
    seed = options.get("seed", cfg.seed)
    blinks = options.get("blinks_per_minute", cfg.blinks_per_minute)
    if not isinstance(head_motion, bool | np.bool_):
        raise BadInputError(f"option head_motion must be {OPTIONS['head_motion']}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise BadInputError(f"option seed must be {OPTIONS['seed']}")
    if (
        isinstance(blinks, bool)
        or not isinstance(blinks, int | float | np.number)
        or not 0.0 <= float(blinks) <= 60.0
    ):
        raise BadInputError(f"option blinks_per_minute must be {OPTIONS['blinks_per_minute']}")
    return bool(head_motion), int(seed), float(blinks)
