"""Graceful degradation: the policy alone, then the worker with an engine that is too slow at its
best quality and fast enough one level down."""

import asyncio
import itertools

from liveface.runtime.degrade import DegradeConfig, DegradePolicy
from liveface.runtime.events import CloseReason
from liveface.runtime.metrics import Metrics
from liveface.runtime.worker import EngineWorker
from tests.doubles import PatternEngine
from tests.runtime.test_worker import feed_realtime, open_sessions


def test_policy_steps_down_when_busy_and_up_when_idle_with_hold():
    p = DegradePolicy(3, DegradeConfig(high=0.9, low=0.5, window_s=1.0, hold_s=2.0, retry_s=3.0))
    t = 0.0
    changes = []
    for _ in range(45):  # 95 % busy
        t += 0.1
        r = p.observe_batch(t, 0.095)
        if r is not None:
            changes.append((round(t, 1), r))
    assert changes[0][1] == 1
    assert changes[0][0] >= 1.0
    assert all(b - a >= 2.0 for (a, _), (b, _) in itertools.pairwise(changes))
    assert p.level == 2  # the lowest level; it stays there while busy
    for _ in range(150):  # 20 % busy: back up once the retry backoff has passed
        t += 0.1
        p.observe_batch(t, 0.02)
    assert p.level == 0
    assert p.changes == 4


def test_a_level_found_too_slow_is_not_retried_at_once():
    p = DegradePolicy(2, DegradeConfig(high=0.9, low=0.5, window_s=1.0, hold_s=1.0, retry_s=10))
    t, levels = 0.0, []
    for _ in range(200):
        t += 0.1
        busy = 0.095 if p.level == 0 else 0.02  # level 0 overloads, level 1 idles
        p.observe_batch(t, busy)
        levels.append(p.level)
    # 20 s: down once, retried after 10 s, down again (now backing off 20 s).
    assert p.changes == 3
    assert levels[-1] == 1


def test_late_drops_step_down_even_at_moderate_load():
    p = DegradePolicy(2, DegradeConfig(window_s=1.0, hold_s=1.0))
    for k in range(1, 15):
        p.observe_batch(k * 0.1, 0.05)
    assert p.observe_late(1.5) == 1


class TwoSpeedEngine(PatternEngine):
    """Too slow for real time at level 0, comfortable at level 1."""

    def __init__(self):
        super().__init__(chunk_frames=2, max_batch=1)
        self.level = 0
        self.levels_seen = []

    def quality_levels(self):
        return ["slow", "fast"]

    def set_quality(self, level):
        self.level = level
        self.levels_seen.append(level)

    def generate(self, batch):
        self.delay_s = 0.1 if self.level == 0 else 0.01  # chunks are 80 ms long
        return super().generate(batch)


async def test_worker_degrades_instead_of_stalling():
    engine = TwoSpeedEngine()
    metrics = Metrics()
    worker = EngineWorker(engine, metrics, degrade=DegradeConfig(window_s=0.5, hold_s=0.5))
    worker.start()
    (s,) = await open_sessions(worker, 1)
    await feed_realtime([s], 2.5)
    late_before = metrics.sample("liveface_chunks_dropped_total", reason="late")
    assert engine.levels_seen[:1] == [1]
    rendered = metrics.sample("liveface_chunks_rendered_total")
    await feed_realtime([s], 1.0)
    # Once degraded, it keeps up: chunks are rendered, none dropped late any more.
    assert metrics.sample("liveface_chunks_rendered_total") - rendered >= 10
    assert metrics.sample("liveface_chunks_dropped_total", reason="late") == late_before
    assert metrics.sample("liveface_quality_level") == 1
    assert "liveface_quality_level 1.0" in metrics.render()
    await s.aclose(CloseReason.CLIENT_CLOSED)
    worker.stop()
    await asyncio.sleep(0)
