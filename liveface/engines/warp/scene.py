"""Several characters in one picture on the CPU engine: each face animated in its own tile.

The portrait is fitted into the output frame (scaled, centred, edges extended). Each character
gets the single-face machinery on its tile of the frame (:mod:`.scene_faces`): a rig (mouth mesh,
interior, eyes, head fields pinned at the tile's edges), its own mouth driver fed by its own voice,
its own blinks and head sway (seeded per character, so characters never move in lockstep) and,
while another character speaks and it does not, listening nods (:mod:`.listen`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from liveface.engines.base import (
    AudioChunk,
    Character,
    EngineSpec,
    EngineState,
    SceneRequest,
    Voice,
)
from liveface.engines.warp.animate import FaceAnimator, frame_samples, frame_time
from liveface.engines.warp.config import WarpConfig
from liveface.engines.warp.face import AlignedFace
from liveface.engines.warp.listen import ListenerNods
from liveface.engines.warp.render import FaceRig, build_rig
from liveface.engines.warp.scene_faces import find_scene_faces, scene_tiles
from liveface.errors import NoFaceError, SessionClosedError


@dataclass
class Actor:
    """One character of a warp scene.

    Attributes:
        tile: ``(x0, x1)`` output columns of its full-height tile.
        rig: the tile's precomputed rig (its ``portrait`` is the tile with the lips closed).
        anim, nods: its animation state.
        out: uint8 ``(H, tile width, 3)`` scratch the tile is drawn into.
    """

    tile: tuple[int, int]
    rig: FaceRig
    anim: FaceAnimator
    nods: ListenerNods
    out: np.ndarray


class WarpScene(EngineState):
    """A warp engine session with several characters.

    Attributes:
        base: uint8 ``(H, W, 3)`` the rest frame (every mouth closed).
        actors: the characters, in character order.
        characters: what the runtime is told about them (boxes as fractions of the frame).
        head_motion: whether heads sway, breathe and nod.
    """

    def __init__(
        self,
        base: np.ndarray,
        actors: list[Actor],
        characters: tuple[Character, ...],
        head_motion: bool,
    ) -> None:
        self.base = base
        self.actors = actors
        self.characters = characters
        self.head_motion = head_motion
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise SessionClosedError("the warp engine session is closed")


def fit_frame(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, float, float]:
    """``image`` scaled to fit ``width x height``, centred, its edges extended into the margins.

    Returns:
        ``(frame, scale, x_offset, y_offset)``: a source pixel ``p`` lands at
        ``p * scale + offset``.
    """
    h, w = image.shape[:2]
    s = min(width / w, height / h)
    ox, oy = (width - w * s) / 2, (height - h * s) / 2
    small = image
    if s < 0.7:  # shrink with area averaging first, as the single-face alignment does
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    kx, ky = small.shape[1] / w, small.shape[0] / h
    m = np.array([[s / kx, 0.0, ox], [0.0, s / ky, oy]])
    flags = cv2.INTER_CUBIC if s > 1.0 else cv2.INTER_LINEAR
    frame = cv2.warpAffine(small, m, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(frame), s, ox, oy


def open_scene(
    image: np.ndarray, scene: SceneRequest, config: WarpConfig, head_motion: bool, seed: int,
    blinks_per_minute: float,
) -> WarpScene:  # fmt: skip
    """Find the characters of ``image (h, w, 3) uint8`` and build each one's tile and rig.

    Raises:
        NoFaceError: fewer faces than characters, none in a box, or a face too small.
        BadInputError: faces too close side by side.
    """
    width, height = config.width, config.height
    faces = find_scene_faces(image, scene, config.detect_max_side)
    frame, s, ox, oy = fit_frame(image, width, height)
    shift = np.array([ox, oy], np.float32)
    faces = [dataclasses.replace(f, landmarks=f.landmarks * s + shift) for f in faces]
    for i, face in enumerate(faces):
        if face.height < config.min_face_px:
            raise NoFaceError(
                f"character {i}'s face is {face.height:.0f} px tall in the {width}x{height} "
                f"frame; it needs {config.min_face_px} px (a larger output size or a closer "
                "picture)"
            )
    tiles = scene_tiles(faces, width)
    base = frame.copy()
    actors, characters = [], []
    for i, (face, (x0, x1)) in enumerate(zip(faces, tiles, strict=True)):
        lm: np.ndarray = face.landmarks - np.array([x0, 0], np.float32)
        tile = np.ascontiguousarray(frame[:, x0:x1])
        rig = build_rig(AlignedFace(tile, lm, face.height / s))
        base[:, x0:x1] = rig.portrait
        rng = np.random.default_rng([seed, i])
        actors.append(
            Actor(
                tile=(x0, x1),
                rig=rig,
                anim=FaceAnimator(rig, config, face.height, rng, blinks_per_minute),
                nods=ListenerNods(face.height, config.motion_scale, rng),
                out=np.empty_like(tile),
            )
        )
        characters.append(_character(face.landmarks, rig, x0, width, height))
    return WarpScene(base, actors, tuple(characters), head_motion)


def _character(lm: np.ndarray, rig: FaceRig, x0: int, width: int, height: int) -> Character:
    """Face and mouth boxes of a character as fractions of the frame."""
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    y0, y1, mx0, mx1 = rig.mouth_box
    return Character(
        box=(
            max(0.0, float(lo[0]) / width),
            max(0.0, float(lo[1]) / height),
            min(1.0, float(hi[0]) / width),
            min(1.0, float(hi[1]) / height),
        ),
        mouth_box=((x0 + mx0) / width, y0 / height, (x0 + mx1) / width, y1 / height),
    )


def render_chunk(scene: WarpScene, chunk: AudioChunk, spec: EngineSpec, frames: np.ndarray) -> None:
    """Draw the chunk's frames into ``frames (num_frames, H, W, 3) uint8``.

    Each character's mouth follows its own voice (``chunk.voices``; a chunk without voices, from a
    single stream, drives every character with its one window).
    """
    scene.check_open()
    window = np.asarray(chunk.window, dtype=np.float32).reshape(-1)
    voices = chunk.voices or tuple(Voice(window, chunk.voiced) for _ in scene.actors)
    if len(voices) != len(scene.actors):
        raise ValueError(f"chunk has {len(voices)} voices for {len(scene.actors)} characters")
    speaking = [v.voiced for v in voices]
    for i in range(frames.shape[0]):
        f = chunk.first_frame + i
        own = frame_samples(spec, chunk, f)
        t = frame_time(spec, f)
        np.copyto(frames[i], scene.base)
        for k, (actor, voice) in enumerate(zip(scene.actors, voices, strict=True)):
            samples = np.asarray(voice.window, dtype=np.float32).reshape(-1)[own]
            anim = actor.anim
            shape, blink, pose = anim.step(
                samples, voice.voiced, spec.lookahead, t, scene.head_motion
            )
            if pose is not None:
                listening = not speaking[k] and any(speaking[:k] + speaking[k + 1 :])
                pose = dataclasses.replace(pose, ty=pose.ty + actor.nods.offset(t, listening))
            anim.renderer.render(shape, blink, pose, actor.out)
            x0, x1 = actor.tile
            frames[i, :, x0:x1] = actor.out


def describe(scene: WarpScene) -> dict[str, Any]:
    """``{"characters": [{"id", "box", "mouth_box"}, ...]}`` (fractions of the frame)."""
    return {"characters": [c.to_json(i) for i, c in enumerate(scene.characters)]}


def interrupt(scene: WarpScene) -> None:
    """Every mouth restarts from rest (the runtime re-renders the others' speech from the cut)."""
    for actor in scene.actors:
        actor.anim.mouth.reset()


def close(scene: WarpScene) -> None:
    scene.closed = True
    scene.actors = []
