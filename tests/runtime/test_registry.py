"""Admission control and the process totals that outlive sessions."""

from __future__ import annotations

import numpy as np
import pytest

from liveface.errors import CapacityError
from liveface.pipeline.stream import StreamConfig
from liveface.runtime.events import CloseReason
from liveface.runtime.metrics import Metrics, SessionCounter
from liveface.runtime.registry import SessionRegistry
from liveface.runtime.session import Session, SessionOptions
from liveface.runtime.worker import EngineWorker
from tests.doubles import PatternEngine


async def test_reservations_count_against_the_limit_and_totals_survive_sessions():
    metrics = Metrics()
    worker = EngineWorker(PatternEngine(), metrics)
    registry = SessionRegistry(2, metrics)
    registry.reserve()
    registry.reserve()
    with pytest.raises(CapacityError) as e:
        registry.reserve()
    assert e.value.retryable
    assert metrics.sample("liveface_sessions_refused_total") == 1
    registry.unreserve()
    s = Session(worker, StreamConfig(live=False))
    await s.start(SessionOptions())
    registry.add(s)
    assert len(registry) == 1
    assert registry.get(s.id) is s
    assert metrics.sample("liveface_sessions") == 1
    s.start_clock()
    s.push(np.zeros(1600, np.float32))
    assert registry.totals()[SessionCounter.INPUT_SAMPLES] == 1600
    await s.aclose(CloseReason.CLIENT_CLOSED)
    registry.discard(s)
    registry.discard(s)  # twice is harmless
    assert len(registry) == 0
    assert registry.totals()[SessionCounter.INPUT_SAMPLES] == 1600  # kept after the end
    assert metrics.sample("liveface_input_samples_total") == 1600
    assert metrics.sample("liveface_sessions_opened_total") == 1
    registry.reserve()  # the freed slot and the released reservation are available again
    registry.reserve()
    with pytest.raises(CapacityError):
        registry.reserve()


async def test_session_ids_are_unguessable():
    worker = EngineWorker(PatternEngine(), Metrics())
    ids = {Session(worker, StreamConfig()).id for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) >= 17 for i in ids)
