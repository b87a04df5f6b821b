"""Glass-to-glass latency in headless Chromium on loopback, with the CPU engine.

Speech onset at the fake microphone (measured in the page by an analyser on the microphone track)
to the first received frame whose mouth opens (mouth-box brightness of the rendered video, in the
page); p50 and p95 over all onsets of several runs. Also offer-to-first-frame time and the
audio/video playout offset Chrome reports.

    .venv/bin/python bench/bench_glass_to_glass.py [--runs 3] [--sentences 6] [--size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liveface.runtime.config import ServerConfig
from liveface.runtime.factory import create_engine
from liveface.runtime.runtime import Runtime
from tests.browser.harness import analyse, drive, make_speech_wav
from tests.serving import serve


async def one_run(config: ServerConfig, wav: Path, seconds: float, delta: float) -> dict:
    engine = create_engine(config)
    runtime = Runtime(config, engine)
    async with serve(runtime) as url:
        data = await drive(f"{url}/", wav, 1, seconds)
    page = data["results"][0]
    m = analyse(page)
    first = (page["firstFrameAt"] - page["clicked"]) if page["firstFrameAt"] else float("nan")
    return {"latencies": m.latencies(delta), "first_frame_ms": first, "sync": m.sync_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=6)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--delay-ms", type=int, default=80)
    ap.add_argument("--chunk-frames", type=int, default=1)
    ap.add_argument(
        "--delta",
        type=float,
        default=6.0,
        help="mouth change (mean grey-level difference) that counts as moving",
    )
    ap.add_argument("--video-delay-ms", type=int, default=None, help="default: the server's")
    args = ap.parse_args()
    config = ServerConfig(
        width=args.size, height=args.size, delay_ms=args.delay_ms, chunk_frames=args.chunk_frames
    )
    if args.video_delay_ms is not None:
        config = dataclasses.replace(config, video_delay_ms=args.video_delay_ms)
    with tempfile.TemporaryDirectory() as tmp:
        wav = make_speech_wav(Path(tmp) / "mic.wav", sentences=args.sentences)
        seconds = 2.0 + args.sentences * 4.0
        runs = [asyncio.run(one_run(config, wav, seconds, args.delta)) for _ in range(args.runs)]
    lat = np.concatenate([r["latencies"] for r in runs])
    first = [r["first_frame_ms"] for r in runs]
    sync = np.concatenate([r["sync"][len(r["sync"]) // 4 :] for r in runs])
    print(
        f"glass-to-glass, warp engine {args.size}x{args.size}, delay {args.delay_ms} ms, "
        f"{args.chunk_frames} frame(s)/chunk, {args.runs} runs, {lat.size} onsets"
    )
    print(
        f"  latency ms: p50 {np.percentile(lat, 50):.0f}  p95 {np.percentile(lat, 95):.0f}  "
        f"(all: {', '.join(f'{x:.0f}' for x in lat)})"
    )
    print(
        f"  click-to-first-frame ms (getUserMedia + offer + ICE + first chunk): median "
        f"{np.median(first):.0f}  (runs {', '.join(f'{x:.0f}' for x in first)})"
    )
    print(
        f"  video-audio playout offset ms (Chrome estimatedPlayoutTimestamp): median "
        f"{np.median(sync):.0f}, p95 |offset| {np.percentile(np.abs(sync), 95):.0f}"
    )


if __name__ == "__main__":
    main()
