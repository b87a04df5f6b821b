"""RGB to yuv420p frames: the encoders' own conversion, cheaper."""

from __future__ import annotations

import av
import numpy as np
import pytest

from liveface.pipeline.videoframe import yuv420_frame


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([255 * x / w, 255 * y / h, 255 - 255 * x / w], axis=-1)
    return rgb.astype(np.uint8)


def test_matches_swscale_on_smooth_images():
    rgb = _smooth(64, 96)
    ours = yuv420_frame(rgb)
    assert ours.format.name == "yuv420p"
    theirs = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    a, b = ours.to_ndarray().astype(int), theirs.to_ndarray().astype(int)
    assert a.shape == b.shape == (96, 96)
    assert np.abs(a[:64] - b[:64]).max() <= 1  # luma
    assert np.abs(a[64:] - b[64:]).max() <= 3  # chroma
    back = ours.to_ndarray(format="rgb24").astype(int)
    assert np.abs(back - rgb).mean() < 2


@pytest.mark.parametrize("shape", [(63, 64, 3), (64, 63, 3)])
def test_odd_sizes_stay_rgb(shape):
    rgb = np.zeros(shape, np.uint8)
    frame = yuv420_frame(rgb[..., :])
    assert frame.format.name == "rgb24"
    assert (frame.height, frame.width) == shape[:2]


def test_encodes_with_x264_at_the_same_colours(tmp_path):
    rgb = _smooth(128, 128)
    path = tmp_path / "x.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width = v.height = 128
        v.pix_fmt = "yuv420p"
        v.options = {"crf": "10"}
        for i in range(3):
            f = yuv420_frame(rgb)
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
    with av.open(str(path)) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(got) == 3
    assert np.abs(got[-1].astype(int) - rgb).mean() < 3


@pytest.mark.parametrize("shape", [(100, 62), (98, 130), (512, 512)])
def test_planes_hold_opencvs_conversion_whatever_the_row_padding(shape):
    import cv2

    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), np.uint8)
    frame = yuv420_frame(rgb)
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    np.testing.assert_array_equal(frame.to_ndarray(), want)
