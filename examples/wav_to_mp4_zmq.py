#!/usr/bin/env python3
"""Turn a WAV file (or any audio PyAV reads) into an mp4 through the server's ZeroMQ endpoint.

    python run_avatar.py serve --zmq tcp://127.0.0.1:5555 --no-http &
    python examples/wav_to_mp4_zmq.py speech.wav talk.mp4 --portrait me.jpg

The audio is sent at its own rate as 16-bit PCM (the server resamples it), a little ahead of real
time; the frames come back on the server's media clock, each with the audio it animates, and are
written to the mp4 (H.264 video, AAC audio) as they arrive. The server plays in real time, so a
10 s file takes about 10 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BLOCK_S = 0.5  # audio sent per request
AHEAD_S = 2.0  # audio kept queued on the server
TAIL_S = 0.3  # idle video kept after the speech ends


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Decode any audio file to mono int16 ``(samples,)`` at its own sample rate."""
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono")
        blocks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                blocks.append(out.to_ndarray().reshape(-1))
        rate = stream.rate
    if not blocks:
        raise SystemExit(f"{path} has no audio")
    return np.concatenate(blocks).astype(np.int16), int(rate)


class Mp4Writer:
    """Streams frames (and the audio they animate) into an mp4 file."""

    def __init__(self, path: str, width: int, height: int, fps: int, rate: int) -> None:
        import av

        self._av = av
        self.out = av.open(path, "w")
        self.video = self.out.add_stream("libx264", rate=fps, options={"crf": "20"})
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.audio = self.out.add_stream("aac", rate=rate, layout="mono")
        self.rate = rate
        self.first: tuple[int, int] | None = None  # (frame index, pts) of the first frame
        self.frames = 0

    def write(self, frame) -> None:  # liveface.client.Frame
        if self.first is None:
            self.first = (frame.index, frame.pts)
        index0, pts0 = self.first
        vf = self._av.VideoFrame.from_ndarray(frame.image(), format="rgb24")
        vf.pts = frame.index - index0  # the video stream's time base is 1/fps
        self.out.mux(self.video.encode(vf))
        af = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(frame.audio, np.float32).reshape(1, -1),
            format="flt",
            layout="mono",
        )
        af.sample_rate = self.rate
        af.pts = frame.pts - pts0  # samples on the same media clock as the video
        self.out.mux(self.audio.encode(af))
        self.frames += 1

    def close(self) -> None:
        self.out.mux(self.video.encode(None))
        self.out.mux(self.audio.encode(None))
        self.out.close()


def run(args: argparse.Namespace) -> int:
    from liveface.client import CurveKeys, Event, Frame, SyncClient

    pcm, rate = read_audio(args.audio)
    curve = None
    if args.curve_key:
        curve = CurveKeys.from_files(args.curve_key, args.server_key)
    portrait = Path(args.portrait).read_bytes() if args.portrait else None
    with SyncClient(args.address, curve=curve) as client:
        session = client.open(portrait=portrait, format=args.format)
        writer = Mp4Writer(
            args.out, session.width, session.height, session.fps, session.sample_rate
        )
        block = int(BLOCK_S * rate)
        sent, queued, acked_at = 0, 0.0, time.monotonic()
        finished_at: int | None = None
        try:
            for item in session:
                # Keep about AHEAD_S of audio queued: the server paces it to real time.
                while sent < len(pcm) and queued - (time.monotonic() - acked_at) < AHEAD_S:
                    ack = session.push(pcm[sent : sent + block], rate=rate)
                    assert ack is not None
                    if ack["dropped"]:
                        print(
                            f"server queue full: {ack['dropped']} samples dropped", file=sys.stderr
                        )
                    sent += block
                    queued, acked_at = ack["queued_s"], time.monotonic()
                    if sent >= len(pcm):
                        session.end_segment()
                if isinstance(item, Frame):
                    writer.write(item)
                    if finished_at is not None and item.index >= finished_at:
                        break
                elif isinstance(item, Event) and item.kind == "playback_finished":
                    last = writer.first[0] + writer.frames if writer.first else 0
                    finished_at = last + int(TAIL_S * session.fps)
                elif isinstance(item, Event) and item.kind in ("error", "closed"):
                    print(f"session ended early: {item.data}", file=sys.stderr)
                    break
        finally:
            writer.close()
            if not session.closed:
                info = session.close()
                print(
                    f"server: {info['frames_sent']} frames sent, "
                    f"{info['frames_dropped']} dropped, {info['frames_repeated']} repeated"
                )
    print(f"wrote {args.out}: {writer.frames} frames at {session.fps} fps")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("audio", help="input audio (WAV or anything ffmpeg reads)")
    p.add_argument("out", help="output .mp4")
    p.add_argument("--address", default="tcp://127.0.0.1:5555", help="server ZeroMQ address")
    p.add_argument("--portrait", help="portrait image (default: the server's)")
    p.add_argument(
        "--format",
        choices=["jpeg", "rgb"],
        default="jpeg",
        help="frame encoding on the wire (jpeg: less bandwidth)",
    )
    p.add_argument("--curve-key", help="this client's CURVE *.key_secret file (CURVE servers)")
    p.add_argument("--server-key", help="the server's public server.key (with --curve-key)")
    args = p.parse_args(argv)
    if bool(args.curve_key) != bool(args.server_key):
        p.error("--curve-key and --server-key go together")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
