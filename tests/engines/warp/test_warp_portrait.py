"""Portrait intake: unusable pictures give clear errors, unusual but usable ones work."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from liveface.engines.warp import WarpConfig, WarpEngine, default_portrait
from liveface.engines.warp import landmarks as L
from liveface.errors import BadInputError, NoFaceError


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return default_portrait()


def test_default_portrait_is_the_astronaut(astronaut):
    assert astronaut.shape == (512, 512, 3)
    assert astronaut.dtype == np.uint8


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.full((480, 640, 3), 128, np.uint8), id="flat-grey"),
        pytest.param(
            np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8), id="noise"
        ),
    ],
)
def test_no_face(engine, image):
    with pytest.raises(NoFaceError, match="no face"):
        engine.open(image, None, {})


def test_several_faces(engine, astronaut):
    two = np.concatenate([astronaut, astronaut], axis=1)
    with pytest.raises(NoFaceError, match="several faces"):
        engine.open(two, None, {})


def test_tiny_face(engine, astronaut):
    canvas = np.full((512, 512, 3), 128, np.uint8)
    small = cv2.resize(astronaut, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    canvas[40 : 40 + small.shape[0], 60 : 60 + small.shape[1]] = small
    with pytest.raises(NoFaceError, match="too small"):
        engine.open(canvas, None, {})


def _check_open(engine: WarpEngine, image: np.ndarray) -> None:
    state = engine.open(image, None, {"head_motion": False})
    spec = engine.spec
    assert state.portrait.shape == (spec.height, spec.width, 3)
    assert state.portrait.dtype == np.uint8
    assert state.landmarks.shape == (L.NUM_LANDMARKS, 2)
    # Aligned: eyes level, face of the configured height, centred (before the mouth is closed,
    # which raises the chin of a portrait with parted lips).
    lm = state.original_landmarks
    left, right = L.eye_centers(lm)
    assert abs(left[1] - right[1]) < 0.02 * spec.height
    face = float(np.linalg.norm(lm[L.FOREHEAD] - lm[L.CHIN]))
    assert face == pytest.approx(engine.config.face_height * spec.height, rel=0.05)
    engine.close(state)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), id="grayscale"),
        pytest.param(lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)[..., None], id="gray-1ch"),
        pytest.param(lambda a: np.dstack([a, np.full(a.shape[:2], 255, np.uint8)]), id="rgba"),
        pytest.param(lambda a: a.astype(np.float32) / 255.0, id="float01"),
        pytest.param(lambda a: a.astype(np.float64), id="float255"),
        pytest.param(lambda a: a.astype(np.uint16) * 257, id="uint16"),
        pytest.param(
            lambda a: cv2.warpAffine(
                a,
                cv2.getRotationMatrix2D((256, 256), 12, 1.0),
                (512, 512),
                borderMode=cv2.BORDER_REPLICATE,
            ),
            id="tilted",
        ),
        pytest.param(
            lambda a: cv2.copyMakeBorder(a, 0, 0, 200, 200, cv2.BORDER_REPLICATE), id="wide"
        ),
    ],
)
def test_unusual_but_usable_portraits(engine, astronaut, convert):
    _check_open(engine, convert(astronaut))


def test_huge_portrait(engine, astronaut):
    huge = cv2.resize(astronaut, (4000, 4000), interpolation=cv2.INTER_LINEAR)
    _check_open(engine, huge)


def test_rgba_transparency_is_flattened(engine, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:, :40, 3] = 0  # a transparent strip on the left
    state = engine.open(rgba, None, {})
    assert np.isfinite(state.portrait).all()


def test_other_output_size(astronaut):
    engine = WarpEngine(WarpConfig(width=720, height=720))
    _check_open(engine, astronaut)


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(np.zeros((512, 512, 2), np.uint8), id="two-channels"),
        pytest.param(np.zeros((4, 512, 512, 3), np.uint8), id="4d"),
        pytest.param(np.zeros((8, 8, 3), np.uint8), id="8x8"),
        pytest.param(np.full((64, 64, 3), np.nan, np.float32), id="nan"),
        pytest.param(np.array([["a"]]), id="strings"),
    ],
)
def test_unusable_images(engine, image):
    with pytest.raises(BadInputError):
        engine.open(image, None, {})


@pytest.mark.parametrize(
    "options",
    [
        {"head_motion": "yes"},
        {"seed": -1},
        {"seed": 1.5},
        {"blinks_per_minute": 100},
        {"nonsense": 1},
    ],
)
def test_bad_options(engine, options):
    with pytest.raises(BadInputError):
        engine.open(None, None, options)


def test_open_from_several_threads(engine):
    results: list[object] = []

    def work() -> None:
        try:
            results.append(engine.open(None, None, {"seed": len(results)}).portrait.shape)
        except Exception as e:  # collected and asserted below
            results.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [(512, 512, 3)] * 3
