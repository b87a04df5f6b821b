"""``runtime.render``: a session's chunks go to the engine in order, every frame reaches the file,
and an engine that fails ends the render with its error."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from liveface.engines.warp import WarpConfig, WarpEngine
from liveface.errors import BadInputError, EngineError, OutputError
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


class _WholeClips(WarpEngine):
    """An engine with a whole-clip offline path (as S2V's): it takes no session options."""

    def __init__(self) -> None:
        super().__init__(WarpConfig(width=128, height=128))

    def render_clips(self, audio, portrait, prompt, progress=None):
        raise AssertionError("never reached: the options are refused first")


def test_session_options_reach_the_engine_and_whole_clip_engines_refuse_them(tmp_path: Path):
    tone = tone_file(tmp_path / "tone.wav", 22050, 1.0)
    with pytest.raises(BadInputError, match="unknown warp engine option"):
        render(_Recording(), tone, tmp_path / "a.mp4", options={"nonsense": 1})
    with pytest.raises(BadInputError, match="renders whole clips and takes no session options"):
        render(_WholeClips(), tone, tmp_path / "b.mp4", options={"seed": 1})
    assert render(_Recording(), tone, tmp_path / "c.mp4", options={"head_motion": False}) == 25


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_the_same_seed_renders_the_same_file_and_another_seed_another(tmp_path: Path):
    tone = tone_file(tmp_path / "tone.wav", 22050, 1.0)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        render(_Recording(), tone, tmp_path / f"{name}.mp4", options={"seed": seed})
    a, b, c = (_frames(tmp_path / f"{n}.mp4") for n in "abc")
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 10  # other sway phases, other blinks


def test_a_failed_render_leaves_no_file_and_keeps_an_old_one(tmp_path: Path):
    tone = tone_file(tmp_path / "tone.wav", 22050, 2.0)
    out = tmp_path / "out.mp4"
    with pytest.raises(EngineError):
        render(_Recording(fail_at=5), tone, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tone.wav"]  # no partial file either
    out.write_bytes(b"an earlier render")
    with pytest.raises(EngineError):
        render(_Recording(fail_at=5), tone, out)
    assert out.read_bytes() == b"an earlier render"
    assert render(_Recording(), tone, out) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "tone.wav"]


def test_outputs_that_cannot_be_written_are_refused_clearly(tmp_path: Path):
    tone = tone_file(tmp_path / "tone.wav", 22050, 1.0)
    with pytest.raises(BadInputError, match=r"must be an \.mp4, \.mov or \.mkv file"):
        render(_Recording(), tone, tmp_path / "out.xyz")
    with pytest.raises(BadInputError, match="does not exist"):
        render(_Recording(), tone, tmp_path / "missing" / "out.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(BadInputError, match="it is a folder"):
        render(_Recording(), tone, tmp_path / "dir.mp4")
    # A failure of the muxer itself (here: its file name is taken by a folder) is an OutputError.
    (tmp_path / ".out.partial.mp4").mkdir()
    with pytest.raises(OutputError, match="cannot write"):
        render(_Recording(), tone, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
