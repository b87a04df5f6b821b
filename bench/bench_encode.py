"""x264 settings for offline render: cost, size and quality on warp-engine frames.

Renders ``--frames`` frames of the default portrait talking (random mouth amplitudes with pauses,
head sway), encodes them with each preset/CRF the way ``liveface render`` does, decodes the file
and compares luma with the source (converted to yuv420p the same way). First it times the
RGB -> yuv420p conversion both ways: swscale's (what an encoder does given RGB) and
:func:`~liveface.pipeline.videoframe.yuv420_frame` (what render and the WebRTC track hand over),
and the WebRTC track's VP8 encoder fed either way.

    python bench/bench_encode.py --size 512
"""

from __future__ import annotations

import argparse
import fractions
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liveface.engines.warp.config import WarpConfig
from liveface.engines.warp.engine import WarpEngine, WarpState
from liveface.pipeline.videoframe import yuv420_frame
from liveface.signaling.video_encoder import AvatarVp8Encoder

SETTINGS = [("ultrafast", 20), ("ultrafast", 23), ("superfast", 23), ("veryfast", 20)]


def talking_frames(size: int, count: int) -> list[np.ndarray]:
    engine = WarpEngine(WarpConfig(width=size, height=size))
    state = engine.open(None, None, {})
    assert isinstance(state, WarpState)
    rng = np.random.default_rng(0)
    out = np.empty((size, size, 3), np.uint8)
    frames, amp = [], 0.0
    for i in range(count):
        amp = 0.6 * amp + 0.4 * rng.uniform(0, 1) * (i % 50 < 35)
        shape = np.array([amp, 0.2 * amp, 0.1], np.float32)
        state.anim.renderer.render(shape, 0.0, state.anim.sway.pose(i / 25, amp), out)
        frames.append(out.copy())
    engine.close(state)
    return frames


def luma(frame: np.ndarray) -> np.ndarray:
    yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
    return yuv.to_ndarray()[: frame.shape[0]].astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=250)
    args = ap.parse_args()
    frames = talking_frames(args.size, args.frames)
    reference = [luma(f) for f in frames]
    for name, convert in (
        (
            "swscale",
            lambda f: av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p"),
        ),
        ("yuv420_frame", yuv420_frame),
    ):
        cpu = time.process_time()
        for f in frames:
            convert(f)
        cpu = (time.process_time() - cpu) / len(frames) * 1000
        print(f"RGB -> yuv420p by {name}: {cpu:.2f} ms CPU a frame")
        vp8 = AvatarVp8Encoder()
        cpu = time.process_time()
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24") if name == "swscale" else convert(f)
            vf.pts, vf.time_base = i * 3600, fractions.Fraction(1, 90000)
            vp8.encode(vf, force_keyframe=i == 0)
        cpu = (time.process_time() - cpu) / len(frames) * 1000
        print(f"  WebRTC VP8 encode, conversion included: {cpu:.2f} ms CPU a frame")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.mp4"
        for preset, crf in SETTINGS:
            with av.open(str(path), "w") as c:
                v = c.add_stream("libx264", rate=25)
                v.width = v.height = args.size
                v.pix_fmt = "yuv420p"
                v.options = {"preset": preset, "crf": str(crf)}
                cpu = time.process_time()
                for i, f in enumerate(frames):
                    vf = yuv420_frame(f)
                    vf.pts = i
                    c.mux(v.encode(vf))
                c.mux(v.encode(None))
                cpu = (time.process_time() - cpu) / len(frames) * 1000
            kbits = path.stat().st_size * 8 / (len(frames) / 25) / 1000
            with av.open(str(path)) as c:
                psnr = [
                    10 * np.log10(255**2 / np.mean((luma(f.to_ndarray(format="rgb24")) - ref) ** 2))
                    for f, ref in zip(c.decode(video=0), reference, strict=False)
                ]
            print(f"{preset:9s} CRF {crf}: {cpu:.2f} ms CPU a frame, {kbits:.0f} kbit/s, luma PSNR "
                  f"median {statistics.median(psnr):.1f} dB (min {min(psnr):.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
