import numpy as np

from liveface.engines.base import AudioChunk
from liveface.runtime.metrics import DropReason
from liveface.runtime.scheduler import Pending, Scheduler


def pending(session, index, deadline, epoch=0):
    c = AudioChunk(
        index=index,
        first_frame=index,
        num_frames=1,
        start=0,
        end=640,
        window=np.zeros(640, np.float32),
        context=0,
        voiced=False,
        epoch=epoch,
    )
    return Pending(session, c, deadline)


def frame_time(p):
    return 0.04


def test_batches_across_sessions_one_chunk_each_earliest_first():
    s = Scheduler(max_batch=2, max_queued=4)
    for name in "abc":
        s.add_session(name)
    s.submit(pending("a", 0, 10.0))
    s.submit(pending("a", 1, 10.04))
    s.submit(pending("b", 0, 9.0))
    s.submit(pending("c", 0, 11.0))
    batch, dropped = s.schedule(0.0, frame_time)
    assert [(p.session, p.chunk.index) for p in batch] == [("b", 0), ("a", 0)]
    assert not dropped
    # a is running: its next chunk waits even though a slot is free
    batch2, _ = s.schedule(0.0, frame_time)
    assert [(p.session, p.chunk.index) for p in batch2] == [("c", 0)]
    s.done(batch)
    batch3, _ = s.schedule(0.0, frame_time)
    assert [(p.session, p.chunk.index) for p in batch3] == [("a", 1)]


def test_full_queue_drops_oldest_and_late_chunks_are_skipped():
    s = Scheduler(max_batch=4, max_queued=2)
    s.add_session("a")
    assert s.submit(pending("a", 0, 1.0)) == []
    assert s.submit(pending("a", 1, 1.04)) == []
    (d,) = s.submit(pending("a", 2, 1.08))
    assert d.reason is DropReason.FULL
    assert d.pending.chunk.index == 0
    batch, dropped = s.schedule(1.1, frame_time)  # chunk 1's frame ended at 1.08: late
    assert [p.reason for p in dropped] == [DropReason.LATE]
    assert [p.chunk.index for p in batch] == [2]


def test_new_epoch_drops_stale_chunks():
    s = Scheduler(max_batch=4, max_queued=8)
    s.add_session("a")
    s.submit(pending("a", 0, 5.0))
    s.submit(pending("a", 1, 5.0))
    stale = s.set_epoch("a", 1)
    assert len(stale) == 2
    assert all(d.reason is DropReason.STALE for d in stale)
    (d,) = s.submit(pending("a", 2, 5.0, epoch=0))
    assert d.reason is DropReason.STALE
    assert s.submit(pending("a", 3, 5.0, epoch=1)) == []


def test_chunks_that_cannot_be_ready_in_time_are_skipped():
    s = Scheduler(max_batch=4, max_queued=4)
    s.add_session("a")
    s.submit(pending("a", 0, 1.00))
    s.submit(pending("a", 1, 1.04))
    # At 1.0 with a 60 ms engine, chunk 0 (frames until 1.04) cannot make it; chunk 1 can.
    batch, dropped = s.schedule(1.0, frame_time, expected=0.06)
    assert [d.pending.chunk.index for d in dropped] == [0]
    assert [p.chunk.index for p in batch] == [1]
