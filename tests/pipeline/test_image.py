"""Portrait decoding and normalisation: every accepted form to uint8 RGB, everything else a 400."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from liveface.errors import BadInputError
from liveface.pipeline.image import MIN_SIDE, decode_image, load_image, to_rgb


def png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_png_jpeg_and_data_urls_decode_to_rgb():
    bgr = np.zeros((40, 50, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's BGR order
    rgb = decode_image(png(bgr))
    assert rgb.shape == (40, 50, 3)
    assert rgb.dtype == np.uint8
    assert (rgb[0, 0] == [200, 0, 0]).all()
    url = b"data:image/png;base64," + base64.b64encode(png(bgr))
    np.testing.assert_array_equal(decode_image(url), rgb)
    _ok, jpg = cv2.imencode(".jpg", bgr)
    assert abs(int(decode_image(jpg.tobytes())[0, 0, 0]) - 200) < 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello", "not an image"),
        (b"data:image/png;base64,@@@", "base64"),
        # OpenCV refuses to shrink these; their headers give the size.
        (png(np.zeros((1, 1, 3), np.uint8)), "is 1x1 pixels; send at least"),
        (cv2.imencode(".webp", np.zeros((1, 3, 3), np.uint8))[1].tobytes(), "is 3x1 pixels"),
        (cv2.imencode(".bmp", np.zeros((2, 1, 3), np.uint8))[1].tobytes(), "is 1x2 pixels"),
        (png(np.zeros((MIN_SIDE - 1, 200, 3), np.uint8)), "at least"),
    ],
)
def test_bad_uploads_are_bad_input(data, message):
    with pytest.raises(BadInputError, match=message):
        decode_image(data)


def test_normalisation_of_arrays():
    grey = np.full((4, 5), 7, np.uint8)
    assert to_rgb(grey).shape == (4, 5, 3)
    assert to_rgb(np.ones((4, 5, 3), np.float32))[0, 0, 0] == 255
    assert to_rgb(np.full((4, 5, 3), 65535, np.uint16))[0, 0, 0] == 255
    rgba = np.zeros((4, 5, 4), np.uint8)  # fully transparent: the neutral grey background
    assert to_rgb(rgba)[0, 0, 0] == 180
    for bad in (np.zeros((4, 5, 2)), np.array(["x"]), [[1, 2], [3]], np.full((4, 5), np.nan)):
        with pytest.raises(BadInputError):
            to_rgb(bad)


def test_load_image_names_what_is_wrong(tmp_path):
    with pytest.raises(BadInputError, match="cannot read"):
        load_image(tmp_path / "missing.png")
    p = tmp_path / "ok.png"
    p.write_bytes(png(np.full((64, 64, 3), 90, np.uint8)))
    assert load_image(p).shape == (64, 64, 3)
