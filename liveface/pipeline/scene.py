"""A scene's media path: several characters' audio streams on one media clock.

Each character has a :class:`Lane`: its own ring, voice activity, segments and output audio. Audio
pushed for a character lands at the end of its lane, under the same rules as a single stream
(live input placed at the wall and dropped when stale, pushed input bounded); lanes with nothing
to say are filled with silence, so every lane keeps up with the clock. The scene's own ring holds
the lanes' mix up to where every lane has arrived, and the one chunker cuts chunks from it: each
chunk carries the mix as its ``window`` and, in :attr:`AudioChunk.voices`, each character's own
window over the same span. So every character's samples are cut at the same boundaries, and the
frames (the whole scene) and the mixed audio go out on the one clock.

Clearing one character drops only its queued audio: the mix from the cut on is made again from
what the other lanes still hold.
"""

from __future__ import annotations

import numpy as np

from liveface.engines.base import AudioChunk, EngineSpec, Voice
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker
from liveface.pipeline.output import OutputBuffer
from liveface.pipeline.segments import PlaybackEvent, SegmentTracker
from liveface.pipeline.stream import StreamConfig, StreamPipeline
from liveface.pipeline.vad import VoiceActivity


class Lane:
    """One character's input on the scene's clock, and its own output audio.

    Attributes:
        ring: the character's input audio, on the scene's clock.
        vad: its voice activity.
        segments: its speech segments (events carry ``character``).
        audio: its own output audio by sample range (the frame store is unused).
        filled: silence was filled since its source's last block (that block is not a lateness
            observation).
        driven: a live source feeds it; a live scene's undriven lanes follow the wall.
    """

    def __init__(
        self, index: int, spec: EngineSpec, config: StreamConfig, capacity: int, frames: int
    ) -> None:
        rate = spec.sample_rate
        self.index = index
        self.ring = AudioRing(capacity)
        self.vad = VoiceActivity(rate, config.vad_aggressiveness)
        self.segments = SegmentTracker(rate, index)
        self.audio = OutputBuffer(spec, max_frames=frames)
        self.filled = False
        self.driven = False

    def append(self, x: np.ndarray) -> None:
        self.ring.append(x)
        self.vad.push(x)

    def truncate(self, cut: int) -> None:
        """Forget the input from sample ``cut`` on (a barge-in)."""
        if self.ring.end > cut:
            self.ring.truncate(max(cut, self.ring.begin))
            # Relabel from the last whole VAD frame before the cut.
            self.vad.truncate(self.ring.end)
            self.vad.push(self.ring.read(self.vad.labelled_until, self.ring.end))


class ScenePipeline(StreamPipeline):
    """:class:`StreamPipeline` for ``characters`` audio streams animating one picture.

    The clock (anchor, jitter allowance, ``due``), the chunker, the output buffer (frames and the
    mixed audio) and the pacers are the single stream's; the input side is one :class:`Lane` per
    character. Methods that take ``character`` expect a valid index (the session checks it).
    """

    def __init__(self, spec: EngineSpec, config: StreamConfig, characters: int) -> None:
        super().__init__(spec, config)
        if characters < 1:
            raise ValueError("a scene has at least one character")
        # Each lane holds what the mixed ring holds (small for live input, see StreamPipeline).
        capacity = self.ring.capacity
        # Each character's own output audio is kept only for a consumer that asked for it (a
        # pacer with voices); it is stored as chunks are cut, which offline is all at once.
        self.keep_voices = False
        frames = spec.frame_at(capacity) + 1
        self.lanes = [Lane(i, spec, config, capacity, frames) for i in range(characters)]
        # The scene's ring holds the mix; a chunk is voiced when any character speaks in it.
        self.chunker = Chunker(spec, self.ring, self._anyone_voiced)

    @property
    def characters(self) -> int:
        return len(self.lanes)

    # -- input ---------------------------------------------------------------------------------

    def push(self, audio: np.ndarray, now: float, character: int = 0) -> int:
        """Append ``character``'s mono float32 audio at the engine's rate; returns samples kept."""
        lane = self.lanes[character]
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if x.shape[0] == 0:
            return 0
        x = self._admit(x, now, lane.ring.end, observe=not lane.filled)
        lane.filled = False
        lane.driven = True
        if x.shape[0]:
            lane.segments.on_push(lane.ring.end)
            lane.append(x)
            self._mix()
        return int(x.shape[0])

    def release(self, character: int) -> None:
        """``character``'s live source has gone: its lane idles on the wall clock from now on."""
        self.lanes[character].driven = False

    def pending_samples(self, character: int | None = None) -> int:
        """``character``'s audio appended but not yet played (None: the most of any)."""
        lanes = self.lanes if character is None else [self.lanes[character]]
        return max(0, max(lane.ring.end for lane in lanes) - self.output.audio_head)

    def end_segment(self, character: int = 0) -> int | None:
        lane = self.lanes[character]
        return lane.segments.end_segment(lane.ring.end)

    def _anyone_voiced(self, start: int, end: int) -> bool:
        return any(lane.vad.voiced(start, end) for lane in self.lanes)

    def _mix(self) -> None:
        """Extend the mix up to where every lane has arrived."""
        start, until = self.ring.end, min(lane.ring.end for lane in self.lanes)
        if until <= start:
            return
        mix = self.lanes[0].ring.read(start, until)
        for lane in self.lanes[1:]:
            mix += lane.ring.read(start, until)
        self.ring.append(np.clip(mix, -1.0, 1.0, out=mix))

    # -- chunks --------------------------------------------------------------------------------

    def tick(self, now: float) -> list[AudioChunk]:
        """Keep every lane up with the clock, mix, and cut the chunks that are ready."""
        if self.anchor is None:
            return []
        wall = self.wall_sample(now)
        for lane in self.lanes:
            if self.config.live and not lane.driven:
                fill = max(0, wall - lane.ring.end)  # nobody speaks here: silence up to now
            else:
                fill = self._silence_due(lane.ring.end, wall, lane.segments.open)
            if fill > 0:
                lane.append(np.zeros(fill, dtype=np.float32))
                self.stats.silence_filled_samples += fill
                lane.filled = True
        self._mix()
        chunks = self.chunker.pop_ready(release_until=wall + self._delay + self._lead)
        for chunk in chunks:
            chunk.voices = self._voices(chunk)
        self.stats.chunks_cut += len(chunks)
        return chunks

    def _voices(self, chunk: AudioChunk) -> tuple[Voice, ...]:
        """Each character's window over the chunk's span; their samples go to its output."""
        lo = chunk.start - chunk.context
        hi = lo + chunk.window.shape[0]
        own = slice(chunk.context, chunk.context + (chunk.end - chunk.start))
        voices = []
        for lane in self.lanes:
            window = lane.ring.read(lo, hi)
            if self.keep_voices:
                lane.audio.put_audio_only(chunk.start, window[own].copy())
            voices.append(Voice(window, lane.vad.voiced(chunk.start, chunk.end)))
        return tuple(voices)

    # -- output --------------------------------------------------------------------------------

    def take_voices(self, start: int, count: int) -> tuple[np.ndarray, ...]:
        """Each character's own output samples ``[start, start + count)`` (silence where none)."""
        return tuple(lane.audio.take_audio(start, count) for lane in self.lanes)

    def playback_events(self) -> list[PlaybackEvent]:
        head = self.output.audio_head
        return [e for lane in self.lanes for e in lane.segments.advance(head)]

    def clear(self, character: int | None = None) -> tuple[int, list[PlaybackEvent]]:
        """Barge-in of one character (None: all): its queued speech and the pending output go;
        the others' audio is mixed and rendered again from the cut on.

        Returns:
            ``(epoch, events)``: the new epoch and the cleared characters' playback events.
        """
        head = max(self.spec.frame_at(self.output.audio_head), self.output.video_head)
        cut_frame = min(self.chunker.next_frame, head)
        cut = self.spec.frame_start(cut_frame)
        cleared = self.lanes if character is None else [self.lanes[character]]
        events = [e for lane in cleared for e in lane.segments.clear(self.output.audio_head)]
        for lane in cleared:
            lane.truncate(cut)
        if self.ring.end > cut:
            self.ring.truncate(max(cut, self.ring.begin))
        self.chunker.rewind(cut_frame)
        self.output.cut(cut_frame, self.chunker.epoch)
        for lane in self.lanes:
            lane.audio.cut(cut_frame, self.chunker.epoch)
        self._mix()
        return self.chunker.epoch, events
