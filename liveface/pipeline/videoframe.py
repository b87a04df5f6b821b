"""RGB frames to the YUV 4:2:0 frames that video encoders take."""

from __future__ import annotations

import av
import cv2
import numpy as np


def yuv420_frame(rgb: np.ndarray) -> av.VideoFrame:
    """An ``av.VideoFrame`` in ``yuv420p`` holding ``rgb (H, W, 3) uint8``.

    Every encoder here (x264, libvpx) takes 4:2:0; given RGB, PyAV converts each frame with
    swscale: 1.4 to 2.1 ms at 512x512 on one core. OpenCV's conversion, with the same matrix and
    range (BT.601, limited; luma within one level of swscale's, chroma averaged over 2x2 blocks),
    written straight into the frame's planes, costs 0.3 ms (``bench/bench_encode.py``). Odd sizes,
    which 4:2:0 cannot hold, stay RGB for the encoder to convert.
    """
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    yuv = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), np.uint8).reshape(-1)
    frame = av.VideoFrame(w, h, "yuv420p")
    offset = 0
    sizes = ((h, w), (h // 2, w // 2), (h // 2, w // 2))
    for plane, (rows, cols) in zip(frame.planes, sizes, strict=True):
        stride = plane.line_size
        dst = np.frombuffer(memoryview(plane), np.uint8, count=rows * stride).reshape(rows, stride)
        dst[:, :cols] = yuv[offset : offset + rows * cols].reshape(rows, cols)
        offset += rows * cols
    return frame
