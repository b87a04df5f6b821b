"""``runtime.render``: a session's chunks go to the engine in order, every frame reaches the file,
and an engine that fails ends the render with its error."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from liveface.engines.warp import WarpConfig, WarpEngine
from liveface.errors import EngineError
from liveface.runtime.render import render
from tests.cli.test_render import tone_file


class _Recording(WarpEngine):
    """The warp engine, remembering the batches it was given (or failing at one)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(WarpConfig(width=128, height=128))
        self.batches: list[list[int]] = []
        self.fail_at = fail_at

    def generate(self, batch):
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise EngineError("engine failed on purpose")
        self.batches.append([c.first_frame for _, c in batch])
        return super().generate(batch)


def test_chunks_go_in_order_and_every_frame_is_encoded(tmp_path):
    engine = _Recording()
    out = tmp_path / "out.mp4"
    frames = render(engine, tone_file(tmp_path / "tone.wav", 22050, 2.0), out)
    assert frames == 50
    firsts = [f for batch in engine.batches for f in batch]
    assert firsts == list(range(frames))  # one frame a chunk, none skipped
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == frames


def test_an_engine_failure_ends_the_render_with_its_error(tmp_path: Path):
    engine = _Recording(fail_at=2)
    with pytest.raises(EngineError, match="on purpose"):
        render(engine, tone_file(tmp_path / "tone.wav", 22050, 2.0), tmp_path / "out.mp4")
    assert len(engine.batches) == 2  # nothing was asked of the engine after it failed
