"""A/V offset as a real Chromium plays it, by two independent methods, over a long session.

The server runs in this process with the pattern test engine, whose mouth brightness is exactly
each frame's own audio level (40 + 2000 RMS): a measuring instrument, so that what is measured is
the transport and the browser, not an engine's animation lag. A headless Chromium plays the avatar
with a fake microphone (espeak-ng sentences and pauses, looped) and records:

1. ``estimatedPlayoutTimestamp`` of the audio and video receivers (Chrome's own view: the capture
   time, in our RTCP sender reports' clock, of what each track is playing now);
2. the played signals: each frame's mouth brightness from its expected display time
   (``requestVideoFrameCallback``) against the level of the played voice, tapped in an audio
   worklet and placed at the time it leaves the audio output (``AudioContext.getOutputTimestamp``);
   the lag of best correlation is the offset.

Both are reported as "video ahead of audio" in ms (negative: video behind), per minute and over the
whole session (median, p95 of the absolute value).

    python bench/bench_av_sync.py --minutes 10 [--video-delay-ms N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liveface.runtime.config import ServerConfig
from liveface.runtime.runtime import Runtime
from tests.browser.harness import analyse, drive, make_speech_wav, played_offset_ms
from tests.doubles import PatternEngine
from tests.serving import serve


def window(page: dict, start: float, stop: float) -> dict:
    """The part of a page's recording between page times ``start`` and ``stop`` (ms)."""
    rec = page["rec"]

    def cut(rows: list, col: int = 0) -> list:
        return [r for r in rows if start <= r[col] < stop]

    keep = [i for i, f in enumerate(rec["frames"]) if start <= f[3] < stop]
    part = {**rec, "frames": [rec["frames"][i] for i in keep],
            "patches": [rec["patches"][i] for i in keep if i < len(rec["patches"])],
            "played": cut(rec["played"]), "sync": cut(rec["sync"])}  # fmt: skip
    return {**page, "rec": part}


async def main_async(args: argparse.Namespace) -> None:
    engine = PatternEngine(size=256, chunk_frames=1, first_chunk_frames=1)
    config = ServerConfig(width=256, height=256, video_delay_ms=args.video_delay_ms)
    runtime = Runtime(config, engine)
    with tempfile.TemporaryDirectory() as tmp:
        wav = make_speech_wav(Path(tmp) / "mic.wav", sentences=6)
        async with serve(runtime) as url:
            data = await drive(f"{url}/", wav, 1, args.minutes * 60)
    (page,) = data["results"]
    frames = np.array(page["rec"]["frames"], dtype=float).reshape(-1, 4)
    t0, t1 = frames[0, 3] + 10_000, frames[-1, 3]  # Chrome's lip sync settles in the first 10 s
    print(f"video_delay_ms {args.video_delay_ms}, {args.minutes:g} min, "
          f"{frames.shape[0]} frames played")  # fmt: skip
    step = min(60_000.0, (t1 - t0) / 2)
    est_all, played_all = [], []
    start = t0
    while start + step <= t1 + 1:
        part = window(page, start, start + step)
        est = analyse(part).sync_ms
        played = played_offset_ms(part)
        est_all += list(est)
        played_all.append(played)
        print(f"  {(start - t0) / 1000:5.0f}-{(start - t0 + step) / 1000:4.0f} s: "
              f"estimatedPlayoutTimestamp median {np.median(est):+6.1f} ms, "
              f"played {played:+6.1f} ms", flush=True)  # fmt: skip
        start += step
    est_arr, played_arr = np.array(est_all), np.array(played_all)
    latency = np.array(page["rec"]["outputLatency"], dtype=float).reshape(-1, 2)
    if latency.size:
        base, out = np.median(latency, axis=0) * 1000
        print(f"the page's audio output: baseLatency {base:.1f} ms, outputLatency {out:.1f} ms")
    print(f"estimatedPlayoutTimestamp: median {np.median(est_arr):+.1f} ms, "
          f"p95 |offset| {np.percentile(np.abs(est_arr), 95):.1f} ms")  # fmt: skip
    worst = float(np.max(np.abs(played_arr)))
    print(f"played (audio output vs video display): median {np.median(played_arr):+.1f} ms, "
          f"max |offset| {worst:.1f} ms over {len(played_arr)} windows")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--video-delay-ms", type=int, default=None)
    args = ap.parse_args()
    if args.video_delay_ms is None:
        args.video_delay_ms = ServerConfig().video_delay_ms
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
