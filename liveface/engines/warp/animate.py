"""One face's life frame by frame: its mouth follows its voice, it blinks, its head sways.

Shared by the single-face session (:mod:`.engine`) and by each character of a scene (:mod:`.scene`),
so that a face moves the same way in both.
"""

from __future__ import annotations

import numpy as np

from liveface.engines.base import AudioChunk, EngineSpec
from liveface.engines.warp.config import SAMPLE_RATE, WarpConfig
from liveface.engines.warp.idle import BlinkClock, HeadSway, Pose
from liveface.engines.warp.mouth import MouthDriver
from liveface.engines.warp.render import FaceRig, Renderer


def frame_samples(spec: EngineSpec, chunk: AudioChunk, frame: int) -> slice:
    """The samples of ``chunk.window`` that drive video frame ``frame`` (its own and the
    lookahead); empty where the window holds none."""
    base = chunk.context - chunk.start
    lo = max(0, base + spec.frame_start(frame))
    hi = max(lo, base + spec.frame_start(frame + 1) + spec.lookahead)
    return slice(lo, hi)


def frame_time(spec: EngineSpec, frame: int) -> float:
    """Media time of the centre of video frame ``frame``, seconds since the session began."""
    return (frame + 0.5) / spec.fps


class FaceAnimator:
    """The evolving state of one face and the renderer that draws it.

    The random draws come from ``rng`` in a fixed order (blinks, then sway phases at
    construction; then blinks as time goes on), so a seed replays the same face.

    Attributes:
        renderer: draws frames of the face's rig.
        mouth: the audio-to-mouth-shape driver.
        blinks: blink times.
        sway: head sway and breathing.
    """

    def __init__(
        self,
        rig: FaceRig,
        config: WarpConfig,
        face_height: float,
        rng: np.random.Generator,
        blinks_per_minute: float,
    ) -> None:
        self.renderer = Renderer(rig)
        self.mouth = MouthDriver(
            SAMPLE_RATE, config.fps, config.attack_ms, config.release_ms, config.mouth_gain
        )
        self.blinks = BlinkClock(blinks_per_minute, rng)
        self.sway = HeadSway(face_height, config.motion_scale, rng)

    def step(
        self, samples: np.ndarray, voiced: bool, lookahead: int, t: float, head_motion: bool
    ) -> tuple[np.ndarray, float, Pose | None]:
        """Advance one frame: ``(mouth shape, blink amount, head pose or None)`` at time ``t``.

        Args:
            samples: the frame's audio (see :func:`frame_samples`).
            voiced: whether the chunk holds speech.
            lookahead: how many of ``samples`` lie past the frame's end.
            head_motion: whether the head sways (None pose otherwise).
        """
        shape = self.mouth.step(self.mouth.targets(samples, voiced, lookahead))
        blink = self.blinks.amount(t)
        pose = self.sway.pose(t, self.mouth.talk) if head_motion else None
        return shape, blink, pose
