"""One scene's outgoing media shared by several WebRTC peers.

A session's output buffer has one video and one audio consumer (its pacers hand each frame out
once). A scene is watched by every peer that drives one of its characters, so its media is pulled
once, through the usual :class:`AvatarVideoTrack` and :class:`AvatarAudioTrack`, and every peer's
tracks get what they yield: the same frames, with the same media-clock pts, so all peers see and
hear the scene on the one clock. Every peer beyond the first gets its own copy of each frame:
encoders run on executor threads and an av frame is not safe to share between them. Each peer's
queue is bounded: a peer whose encoder falls behind
loses its oldest frames (counted), never server memory, and never slows the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from liveface.pipeline.pacer import PacerStats
from liveface.runtime.session import Session
from liveface.runtime.tasks import TaskSet
from liveface.signaling.tracks import AvatarAudioTrack, AvatarVideoTrack

#: Frames (video) and 20 ms blocks (audio) one peer may have waiting.
VIDEO_QUEUE = 8
AUDIO_QUEUE = 25


class FeedTrack(MediaStreamTrack):
    """One peer's copy of a scene track: what the feed pulled, from a bounded queue."""

    def __init__(self, feed: SceneFeed, kind: str, limit: int) -> None:
        super().__init__()
        self.kind = kind
        self.stats = PacerStats()  # ``sent``: frames handed to this peer's encoder
        self.dropped = 0
        self._feed = feed
        self._items: deque[Any] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._ended = False

    def put(self, frame: Any) -> None:
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(frame)
        self._ready.set()

    def end(self) -> None:
        self._ended = True
        self._ready.set()

    async def recv(self) -> Any:
        while not self._items:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self.stats.sent += 1
        return self._items.popleft()

    def stop(self) -> None:
        super().stop()
        self._feed.unsubscribe(self)
        self.end()


class SceneFeed:
    """Pulls a session's video and audio once and hands them to every subscribed peer."""

    def __init__(self, session: Session, video_delay_ms: int = 0) -> None:
        self.session = session
        self.video = AvatarVideoTrack(session, video_delay_ms)
        self.audio = AvatarAudioTrack(session)
        self._subs: set[FeedTrack] = set()
        self._tasks = TaskSet()
        self._started = False
        self._ended = False

    def subscribe(self) -> tuple[FeedTrack, FeedTrack]:
        """``(audio, video)`` tracks for one more peer; the feed starts with the first."""
        audio = FeedTrack(self, "audio", AUDIO_QUEUE)
        video = FeedTrack(self, "video", VIDEO_QUEUE)
        if self._ended:
            audio.end()
            video.end()
            return audio, video
        self._subs |= {audio, video}
        if not self._started:
            self._started = True
            self._tasks.spawn(self._pump(self.video))
            self._tasks.spawn(self._pump(self.audio))
        return audio, video

    def unsubscribe(self, track: FeedTrack) -> None:
        self._subs.discard(track)

    async def _pump(self, source: MediaStreamTrack) -> None:
        try:
            while True:
                try:
                    frame = await source.recv()
                except MediaStreamError:
                    return
                subs = [sub for sub in self._subs if sub.kind == source.kind]
                for i, sub in enumerate(subs):
                    sub.put(frame if i == 0 else _copy(frame))
        finally:
            for sub in list(self._subs):
                if sub.kind == source.kind:
                    sub.end()

    async def aclose(self) -> None:
        """Stop pulling; every peer's tracks end."""
        self._ended = True
        self.video.stop()
        self.audio.stop()
        await self._tasks.aclose()
        for sub in list(self._subs):
            sub.end()
        self._subs.clear()


def _copy(frame: Any) -> Any:
    """An independent copy of an av video or audio frame, with its timing."""
    if isinstance(frame, VideoFrame):
        out: Any = VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)
    else:
        assert isinstance(frame, AudioFrame)
        out = AudioFrame.from_ndarray(
            frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
        )
        out.sample_rate = frame.sample_rate
    out.pts, out.time_base = frame.pts, frame.time_base
    return out
