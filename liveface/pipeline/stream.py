"""One session's media path, transport- and model-free: input audio -> chunks; results -> output.

Time: the media clock counts samples at ``spec.sample_rate``. The clock is anchored to the wall
(monotonic seconds) at ``start``: sample ``s`` was captured at ``anchor + s / rate`` and is due for
playout ``delay`` (plus the live input's jitter allowance) later. Wall time is read only to decide
*when* to act (release chunks, fill silence, play); every timestamp that leaves the process derives
from sample indices.

Live input arrives with network jitter. The anchor follows the earliest arrivals (a block that
arrives earlier than the anchor predicts moves it back, and the playout with it), and each block's
lateness against it feeds a jitter allowance added to the playout delay: it rises at once with a
late block and decays slowly (``jitter_decay_ms`` per second), so frames are not late when the
path is jittery, and the delay falls back when it calms down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liveface.engines.base import AudioChunk, EngineSpec, VideoChunk
from liveface.errors import ConfigError
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker
from liveface.pipeline.output import OutputBuffer
from liveface.pipeline.segments import PlaybackEvent, SegmentTracker
from liveface.pipeline.vad import VoiceActivity


@dataclass(frozen=True)
class StreamConfig:
    """Per-transport pipeline settings (validated at start-up).

    Attributes:
        delay_ms: fixed output delay that absorbs engine and network jitter.
        lead_ms: how far ahead of the wall chunks may be released (bounds the output buffer when
            a client pushes audio faster than real time).
        live: the source is a live capture (a microphone): audio that arrives long after its time
            (after a stall) is dropped so latency stays bounded. False for pushed audio (ZeroMQ).
        gap_fill_ms: when no audio arrives for this long, silence is inserted so the avatar idles.
        live_slack_ms: live audio may run this far ahead of the wall clock (arrival jitter and
            clock drift) before its oldest samples are dropped as stale.
        max_pending_s: most not-yet-played audio a pushing client may queue.
        history_s: input audio kept for the engine's left context.
        vad_aggressiveness: webrtcvad mode 0..3.
        max_jitter_ms: the most jitter allowance live input may add to the delay.
        jitter_decay_ms: how fast (ms per second) the jitter allowance falls back.
    """

    delay_ms: int = 80
    lead_ms: int = 200
    live: bool = True
    gap_fill_ms: int = 250
    live_slack_ms: int = 60
    max_pending_s: float = 120.0
    history_s: float = 5.0
    vad_aggressiveness: int = 2
    max_jitter_ms: int = 300
    jitter_decay_ms: float = 20.0

    def __post_init__(self) -> None:
        if min(self.delay_ms, self.lead_ms, self.live_slack_ms) < 0 or self.gap_fill_ms <= 0:
            raise ConfigError(
                "stream delay_ms, lead_ms, live_slack_ms must be >= 0 and gap_fill_ms > 0"
            )
        if self.max_pending_s <= 0 or self.history_s <= 0:
            raise ConfigError("stream max_pending_s and history_s must be positive")


@dataclass
class StreamStats:
    input_samples: int = 0
    input_dropped_samples: int = 0  # live input that arrived too late, or over the pending limit
    jitter_ms: float = 0.0  # the live input's current jitter allowance
    silence_filled_samples: int = 0
    chunks_cut: int = 0


class StreamPipeline:
    """Ring + VAD + chunker + output buffer + segments for one session."""

    def __init__(self, spec: EngineSpec, config: StreamConfig) -> None:
        self.spec = spec
        self.config = config
        rate = spec.sample_rate
        # Live audio cannot run ahead of the wall clock, so it never queues more than the delays
        # allow; pushed audio may queue up to max_pending_s (a TTS faster than real time).
        live_queue_ms = config.delay_ms + config.lead_ms + config.max_jitter_ms + 1000
        pending = int((live_queue_ms / 1000 if config.live else config.max_pending_s) * rate)
        context = int(config.history_s * rate) + spec.left_context + spec.lookahead
        self.ring = AudioRing(pending + context)
        self.vad = VoiceActivity(rate, config.vad_aggressiveness)
        self.chunker = Chunker(spec, self.ring, self.vad.voiced)
        max_frames = max(4, (config.delay_ms + config.lead_ms) * spec.fps // 1000 * 2)
        self.output = OutputBuffer(spec, max_frames=max_frames + 2 * spec.chunk_frames)
        self.segments = SegmentTracker(rate)
        self.stats = StreamStats()
        self.anchor: float | None = None
        self.jitter_s = 0.0  # added to the playout delay (live input)
        self._observed: float | None = None  # wall time of the last lateness observation
        self._filled = False  # silence was filled since the last block arrived
        self._delay = config.delay_ms * rate // 1000
        self._lead = config.lead_ms * rate // 1000
        self._gap = config.gap_fill_ms * rate // 1000
        self._slack = config.live_slack_ms * rate // 1000
        self._pending_limit = pending

    # -- clock ---------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.anchor is not None

    def start(self, now: float, captured: int = 0) -> None:
        """Anchor the clock: ``captured`` samples (the first block) ended at wall time ``now``."""
        if self.anchor is None:
            self.anchor = now - captured / self.spec.sample_rate

    def wall_sample(self, now: float) -> int:
        """The media-clock sample being captured at wall time ``now``."""
        assert self.anchor is not None
        return int((now - self.anchor) * self.spec.sample_rate)

    def due(self, sample: int) -> float:
        """Wall time at which media-clock sample ``sample`` is due for playout."""
        assert self.anchor is not None
        return self.anchor + (sample + self._delay) / self.spec.sample_rate + self.jitter_s

    def play_sample(self, now: float) -> int:
        """The media-clock sample due for playout at wall time ``now``."""
        return self.wall_sample(now - self.jitter_s) - self._delay

    def _observe(self, now: float, end: int) -> None:
        """Live block ending at sample ``end`` came at ``now``: follow the anchor, track jitter."""
        assert self.anchor is not None
        cfg = self.config
        lateness = now - self.anchor - end / self.spec.sample_rate
        if lateness < 0:
            # Earlier than the anchor says: the first blocks came late (a burst at connection
            # time). The clock follows the faster path and the playout moves earlier with it;
            # charging the difference to the jitter allowance would keep a start-up burst as
            # latency for many seconds.
            self.anchor += lateness
            lateness = 0.0
        elapsed = 0.0 if self._observed is None else now - self._observed
        decayed = self.jitter_s - cfg.jitter_decay_ms / 1000.0 * elapsed
        self.jitter_s = min(cfg.max_jitter_ms / 1000.0, max(lateness, decayed, 0.0))
        self._observed = now
        self.stats.jitter_ms = self.jitter_s * 1000.0

    def frame_due(self, frame: int) -> float:
        return self.due(self.spec.frame_start(frame))

    # -- input ---------------------------------------------------------------------------------

    def push(self, audio: np.ndarray, now: float) -> int:
        """Append mono float32 audio at the engine's rate; returns samples accepted."""
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if x.shape[0] == 0:
            return 0
        x = self._admit(x, now, self.ring.end, observe=not self._filled)
        self._filled = False
        if x.shape[0]:
            self.segments.on_push(self.ring.end)
            self._append(x)
        return int(x.shape[0])

    def _admit(self, x: np.ndarray, now: float, end: int, observe: bool) -> np.ndarray:
        """The part of block ``x`` (arriving at ``now``, to be appended at sample ``end`` of its
        source) that is kept: anchors the clock, follows live jitter (when ``observe``: no silence
        was filled since the source's last block), drops stale or over-limit samples."""
        self.start(now, x.shape[0])
        self.stats.input_samples += x.shape[0]
        if self.config.live:
            if observe:
                self._observe(now, end + x.shape[0])
            # A live block ends "now": if the source already reaches past that (silence was filled
            # during a stall), the block's head is stale and is dropped to keep latency bounded.
            excess = end + x.shape[0] - self.wall_sample(now) - self._slack
            if excess > 0:
                drop = min(excess, x.shape[0])
                self.stats.input_dropped_samples += drop
                x = x[drop:]
        else:
            room = self._pending_limit - (end - self.output.audio_head)
            if room < x.shape[0]:
                self.stats.input_dropped_samples += x.shape[0] - max(room, 0)
                x = x[: max(room, 0)]
        return x

    def pending_samples(self) -> int:
        """Audio appended but not yet played (what a pushing client has queued)."""
        return max(0, self.ring.end - self.output.audio_head)

    def _append(self, x: np.ndarray) -> None:
        self.ring.append(x)
        self.vad.push(x)

    def end_segment(self) -> int | None:
        return self.segments.end_segment(self.ring.end)

    # -- chunks --------------------------------------------------------------------------------

    def tick(self, now: float) -> list[AudioChunk]:
        """Fill silence over stalls and cut every chunk that is ready and within the lead."""
        if self.anchor is None:
            return []
        wall = self.wall_sample(now)
        fill = self._silence_due(self.ring.end, wall, self.segments.open)
        if fill > 0:
            self._append(np.zeros(fill, dtype=np.float32))
            self.stats.silence_filled_samples += fill
            self._filled = True
        chunks = self.chunker.pop_ready(release_until=wall + self._delay + self._lead)
        self.stats.chunks_cut += len(chunks)
        return chunks

    def _silence_due(self, end: int, wall: int, speaking: bool = False) -> int:
        """Silence to append to a source whose audio ends at sample ``end`` (the wall is at
        sample ``wall``; ``speaking``: a pushed segment is open); 0 when none is due."""
        if self.config.live:
            # A live source stalled: keep the clock moving with silence so the avatar idles.
            target = wall
            behind = end < wall - self._gap
        elif speaking:
            # Speech is being pushed: more is on its way, so a pause is not inserted into it
            # unless the audio falls so far behind that its frames would be late.
            target = wall - self._delay // 2
            behind = end < target
        else:
            # Pushed audio, idle: keep silence queued slightly ahead so idle chunks are never
            # late; speech pushed later lands right after it.
            target = wall + self._delay // 2
            behind = end < target
        return max(target, self.chunker.needed_until()) - end if behind else 0

    # -- output --------------------------------------------------------------------------------

    def accept(self, chunk: VideoChunk) -> bool:
        """Store an engine result; False when it belonged to a cleared epoch."""
        return self.output.put(chunk)

    def skip(self, chunk: AudioChunk) -> None:
        """A chunk the engine will never render (dropped under load): its audio still plays."""
        if chunk.epoch >= self.chunker.epoch:
            self.output.put_audio_only(chunk.start, chunk.samples.copy())

    def playback_events(self) -> list[PlaybackEvent]:
        return self.segments.advance(self.output.audio_head)

    def clear(self) -> tuple[int, list[PlaybackEvent]]:
        """Barge-in: drop queued speech and pending output; the next chunk is idle.

        Returns:
            ``(epoch, events)``: the new epoch (older chunks are stale) and the playback events.
        """
        head = max(self.spec.frame_at(self.output.audio_head), self.output.video_head)
        cut_frame = min(self.chunker.next_frame, head)
        cut = self.spec.frame_start(cut_frame)
        events = self.segments.clear(self.output.audio_head)
        if self.ring.end > cut:
            self.ring.truncate(max(cut, self.ring.begin))
            # Relabel from the last whole VAD frame before the cut.
            self.vad.truncate(self.ring.end)
            self.vad.push(self.ring.read(self.vad.labelled_until, self.ring.end))
        self.chunker.rewind(cut_frame)
        self.output.cut(cut_frame, self.chunker.epoch)
        return self.chunker.epoch, events
