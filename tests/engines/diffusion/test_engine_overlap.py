"""The engine on the stage pipeline (:mod:`liveface.engines.diffusion.backends.stages`): groups of
a batch go through ``Overlap``, with the frames of the plain path; the optional compiled DiT
step."""

from __future__ import annotations

import numpy as np
import pytest

from liveface.engines.diffusion.backends.compiled import CompileConfig, CompiledStep
from liveface.engines.diffusion.backends.stages import Overlap, Stage, StageStreams
from liveface.engines.diffusion.engine import DiffusionEngine
from liveface.engines.diffusion.streaming.config import GenerationConfig
from liveface.errors import ConfigError
from tests.engines.diffusion.stream_helpers import chunk_of, sample_portrait, speech, tiny_engine


@pytest.fixture(scope="module")
def engine() -> DiffusionEngine:
    return tiny_engine()


@pytest.fixture
def spy(monkeypatch):
    """Counts ``Overlap.submit`` calls and records the stages entered, in order."""
    calls: dict[str, list] = {"submit": [], "stages": []}
    submit, run = Overlap.submit, StageStreams.run

    def counting_submit(self, *args, **kwargs):
        calls["submit"].append(args[2] if len(args) > 2 else kwargs.get("tag"))
        return submit(self, *args, **kwargs)

    def recording_run(self, stage):
        calls["stages"].append(stage)
        return run(self, stage)

    monkeypatch.setattr(Overlap, "submit", counting_submit)
    monkeypatch.setattr(StageStreams, "run", recording_run)
    return calls


def sessions(engine):
    a = engine.open(sample_portrait(), None, {"seed": 1})
    b = engine.open(sample_portrait(seed=5)[:, ::-1], "smiling", {"seed": 2})
    return a, b


def test_a_batch_in_two_groups_goes_through_the_overlap_with_the_frames_of_one_at_a_time(
    engine, spy
):
    """A steady chunk of A (2 latent frames) and B's first chunk (1) are two groups of one
    call; each gives exactly the frames it gives alone."""
    spec = engine.spec
    sig_a, sig_b = speech(2.0, seed=0), speech(2.0, seed=1)
    a, b = sessions(engine)
    (first_a,) = engine.generate([(a, chunk_of(spec, sig_a, 0, 0))])
    alone_a = engine.generate([(a, chunk_of(spec, sig_a, 1, 1))])[0]
    alone_b = engine.generate([(b, chunk_of(spec, sig_b, 0, 0))])[0]
    assert len(spy["submit"]) == 3  # one group per call

    a, b = sessions(engine)
    (again,) = engine.generate([(a, chunk_of(spec, sig_a, 0, 0))])
    np.testing.assert_array_equal(again.frames, first_a.frames)
    spy["submit"].clear()
    spy["stages"].clear()
    va, vb = engine.generate([(a, chunk_of(spec, sig_a, 1, 1)), (b, chunk_of(spec, sig_b, 0, 0))])
    assert len(spy["submit"]) == 2  # two groups, both through the pipeline
    assert [len(job.items) for job in spy["submit"]] == [1, 1]
    stages = spy["stages"]
    assert stages[:2] == [Stage.AUDIO, Stage.AUDIO]  # the second group's audio runs early
    assert stages.count(Stage.DENOISE) == 2
    assert stages.count(Stage.DECODE) == 2
    assert stages.index(Stage.DECODE) < len(stages) - 1 - stages[::-1].index(Stage.DENOISE)
    assert stages.count(Stage.COPY) >= 2  # frames (and codebook counts) into host buffers

    for got, want in ((va, alone_a), (vb, alone_b)):
        assert got.frames.dtype == np.uint8
        assert got.frames.shape == want.frames.shape
        np.testing.assert_array_equal(got.frames, want.frames)
        assert got.info.codebook_corrected == want.info.codebook_corrected
        assert got.first_frame == want.first_frame
    assert va.frames.shape[0] == spec.chunk_frames
    assert vb.frames.shape[0] == 1


def test_sessions_without_a_codebook_share_a_group_with_ones_that_have_one(engine, spy):
    spec = engine.spec
    sig = speech(1.0)
    a = engine.open(sample_portrait(), None, {"seed": 3})
    b = engine.open(sample_portrait(), None, {"seed": 3, "codebook": False})
    va, vb = engine.generate([(a, chunk_of(spec, sig, 0, 0)), (b, chunk_of(spec, sig, 0, 0))])
    assert len(spy["submit"]) == 1
    assert va.info.codebook_corrected == 64.0  # random weights: all 8x8 cells pulled back
    assert vb.info.codebook_corrected is None
    assert va.frames.shape == vb.frames.shape == (1, spec.height, spec.width, 3)


def test_compile_option_defaults_off_on_the_cpu_and_is_checked():
    stream = GenerationConfig()
    assert stream.compile == "auto"
    assert stream.compile_mode("cpu") == "off"
    assert stream.compile_mode("cuda:0") == "reduce-overhead"
    assert stream.replace(compile="max-autotune").compile_mode("cpu") == "max-autotune"
    assert GenerationConfig.from_dict({"compile": "off"}).compile == "off"
    assert GenerationConfig.from_dict(stream.to_dict()) == stream
    with pytest.raises(ConfigError, match="compile must be one of"):
        GenerationConfig(compile="fast")
    engine = tiny_engine()
    assert engine.generator.step is None
    assert engine.describe(engine.open(sample_portrait(), None, {}))["denoiser"] == "eager"


def two_chunks(engine, state, signal):
    return [engine.generate([(state, chunk_of(engine.spec, signal, i, f))])[0] for i, f in
            ((0, 0), (1, 1))]  # fmt: skip


def test_the_compiled_step_is_warmed_up_and_gives_the_eager_frames(engine):
    """A compiled step (a stand-in compiler on the CPU) is used for every DiT forward."""
    calls = []

    def compiler(fn, config):
        def compiled(*args, **kwargs):
            calls.append(1)
            return fn(*args, **kwargs)

        return compiled

    signal = speech(1.0)
    eager = engine.open(sample_portrait(), None, {"seed": 7})
    want = two_chunks(engine, eager, signal)
    fast = tiny_engine(compile="default")
    assert fast.generator.step is not None  # the configured mode wraps the DiT
    step = CompiledStep(
        fast.generator.dit, CompileConfig(mode="default"), device="cpu", name="dit",
        compiler=compiler,
    )  # fmt: skip
    fast.generator.step = step
    state = fast.open(sample_portrait(), None, {"seed": 7})
    got = two_chunks(fast, state, signal)
    assert step.compiled
    assert step.warmup_seconds is not None
    assert calls
    assert fast.describe(state)["denoiser"] == "compiled:inductor:default"
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.frames, w.frames)
