"""Speech segments and the playback events the playhead produces."""

from liveface.pipeline.segments import PlaybackKind, SegmentTracker

RATE = 1000


def test_segments_start_and_finish_as_the_playhead_passes():
    t = SegmentTracker(RATE)
    t.on_push(100)
    t.on_push(150)  # same segment: it is still open
    assert t.end_segment(600) == 0
    assert t.end_segment(700) is None  # nothing open
    t.on_push(800)
    assert t.advance(100) == []  # the playhead must pass the start
    (started,) = t.advance(101)
    assert (started.kind, started.segment) == (PlaybackKind.STARTED, 0)
    assert t.advance(599) == []
    (done,) = t.advance(600)
    assert (done.kind, done.segment, done.position, done.interrupted) == (
        PlaybackKind.FINISHED, 0, 0.5, False,
    )  # fmt: skip
    (second,) = t.advance(900)
    assert (second.kind, second.segment) == (PlaybackKind.STARTED, 1)


def test_clear_interrupts_the_playing_segment_and_forgets_queued_ones():
    t = SegmentTracker(RATE)
    t.on_push(0)
    t.end_segment(1000)
    t.on_push(1000)
    t.advance(250)
    (fin,) = t.clear(250)
    assert fin.kind is PlaybackKind.FINISHED
    assert fin.interrupted
    assert fin.position == 0.25
    assert t.advance(5000) == []
