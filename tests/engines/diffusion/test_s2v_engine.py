"""Wan-S2V from an official-layout folder: loading, damaged or wrong folders, the live engine
behind the contract, and ``render --engine diffusion --checkpoint DIR`` end to end (tiny model)."""

from __future__ import annotations

import json
import shutil
import wave as wavfile
from pathlib import Path

import av
import numpy as np
import pytest
from s2v_checkpoint import rewrite_config, write_s2v_checkpoint

from liveface.cli import main
from liveface.engines.diffusion.checkpoint.s2v import INDEX_NAME, select_model
from liveface.engines.diffusion.checkpoint.s2v_loading import load_s2v_bundle
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.engine_s2v import S2VEngine, S2VEngineConfig, quality_schedule
from liveface.engines.diffusion.streaming.s2v_clips import S2VSampling
from liveface.errors import CheckpointError, ConfigError
from liveface.pipeline.audio_ring import AudioRing
from liveface.pipeline.chunker import Chunker

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_s2v_checkpoint(tmp_path_factory.mktemp("Wan2.2-S2V-14B"))


@pytest.fixture(scope="module")
def bundle(folder):
    return load_s2v_bundle(folder)


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def shard(root: Path) -> Path:
    index = json.loads((root / INDEX_NAME).read_text())
    return root / sorted(set(index["weight_map"].values()))[0]


def test_the_folder_is_detected_and_loaded_with_every_official_key(folder, bundle) -> None:
    assert select_model(folder, None) == "s2v"
    assert select_model(folder, "s2v-14b") == "s2v"
    assert bundle.dit.s2v.motion_frames == 13
    assert bundle.text.model.config.d_model == bundle.dit.config.text_dim
    assert bundle.speech.num_hidden_states == 25


def test_damaged_shard_and_renamed_key_are_named(folder, tmp_path) -> None:
    root = copy(folder, tmp_path)
    data = shard(root).read_bytes()
    shard(root).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=shard(root).name):
        load_s2v_bundle(root)
    from safetensors.torch import load_file, save_file

    shard(root).write_bytes(data)
    state = load_file(str(shard(root)))
    state["audio_injector.injector.1.q.weights"] = state.pop("audio_injector.injector.1.q.weight")
    save_file(state, str(shard(root)))
    with pytest.raises(CheckpointError, match=r"audio_injector\.injector\.1\.q\.weight"):
        load_s2v_bundle(root)


def test_a_5b_dit_offered_as_s2v_and_missing_parts_are_refused_by_name(folder, tmp_path) -> None:
    root = copy(folder, tmp_path)
    ti2v = DiTConfig.preset("tiny").to_wan_dict()
    (root / "config.json").write_text(json.dumps(ti2v))
    with pytest.raises(ConfigError, match=r"Wan2\.2-TI2V-5B"):
        select_model(root, "s2v-14b")
    with pytest.raises(ConfigError, match=r"Wan2\.2-TI2V-5B"):
        load_s2v_bundle(root)
    # The reverse: the S2V folder handed to the liveface bundle engine.
    with pytest.raises(ConfigError, match=r"Wan2\.2-S2V-14B"):
        select_model(folder, "liveface")
    rewrite_config(root, **json.loads((folder / "config.json").read_text()))
    rewrite_config(root, enable_motioner=True)
    with pytest.raises(ConfigError, match="enable_motioner"):
        load_s2v_bundle(root)
    (root / "config.json").write_text((folder / "config.json").read_text())
    shutil.rmtree(root / "wav2vec2-large-xlsr-53-english")
    (root / "models_t5_umt5-xxl-enc-bf16.pth").unlink()
    with pytest.raises(ConfigError, match=r"wav2vec2-large-xlsr-53-english/.*speech encoder"):
        load_s2v_bundle(root)
    with pytest.raises(ConfigError, match=r"models_t5_umt5-xxl-enc-bf16\.pth"):
        load_s2v_bundle(root)


def chunks_of(engine: S2VEngine, audio: np.ndarray, count: int):
    spec = engine.spec
    ring = AudioRing(audio.shape[0] + 1)
    ring.append(audio)
    chunker = Chunker(spec, ring, lambda a, b: True)
    out = []
    for chunk in chunker.pop_ready():
        out.append(chunk)
        if len(out) == count:
            break
    return out


def test_live_engine_generates_clips_behind_the_contract(bundle) -> None:
    sampling = S2VSampling(infer_frames=8, steps=2, guidance=2.0)
    engine = S2VEngine(bundle, S2VEngineConfig(width=64, height=64, sampling=sampling))
    spec = engine.spec
    assert (spec.fps, spec.first_chunk_frames, spec.chunk_frames) == (16, 5, 8)
    assert engine.quality_levels() == ["2 steps, guidance 2", "2 steps"]
    audio = (np.random.default_rng(1).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    first, second, third = chunks_of(engine, audio, 3)
    state = engine.open(None, "a person talks", {"seed": 3})
    out = [engine.generate([(state, c)])[0] for c in (first, second)]
    assert [o.frames.shape for o in out] == [(5, 64, 64, 3), (8, 64, 64, 3)]
    assert [o.first_frame for o in out] == [0, 5]
    np.testing.assert_array_equal(out[1].audio, second.samples)
    assert state.clips.clips == 2
    assert state.clips.motion is not None
    engine.set_quality(1)
    engine.interrupt(state)
    again = engine.generate([(state, third)])[0]
    assert again.frames.shape == (8, 64, 64, 3)  # a fresh clip (no motion) keeps all its frames
    assert again.info.steps == 2
    engine.close(state)
    with pytest.raises(ConfigError, match="divisible by 64"):
        S2VEngine(bundle, S2VEngineConfig(width=96, height=64, sampling=sampling))


def test_quality_schedule_drops_guidance_then_halves_steps() -> None:
    assert quality_schedule(40, 4.5) == [
        (40, 4.5),
        (40, 1.0),
        (20, 1.0),
        (10, 1.0),
        (5, 1.0),
        (4, 1.0),
    ]


def write_wav(path: Path, seconds: float) -> None:
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(int(16000 * seconds)) * 3000).astype(np.int16)
    with wavfile.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())


def test_render_command_runs_the_official_pipeline(folder, tmp_path, capsys) -> None:
    wav, out = tmp_path / "speech.wav", tmp_path / "talk.mp4"
    write_wav(wav, 1.0)
    argv = ["render", "--engine", "diffusion", "--checkpoint", str(folder), "--audio", str(wav)]
    assert main([*argv, "--out", str(out), "--size", "64"]) == 0
    assert "16 frames at 16 fps" in capsys.readouterr().out
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (64, 64)
        assert sum(1 for _ in container.decode(video=0)) == 16


def test_bad_options_are_refused_and_closed_sessions_say_so(bundle) -> None:
    from liveface.errors import BadInputError, SessionClosedError

    sampling = S2VSampling(infer_frames=8, steps=1, guidance=1.0)
    engine = S2VEngine(bundle, S2VEngineConfig(width=64, height=64, sampling=sampling))
    with pytest.raises(BadInputError, match="unknown S2V option"):
        engine.open(None, None, {"sed": 1})
    with pytest.raises(BadInputError, match="seed"):
        engine.open(None, None, {"seed": -1})
    state = engine.open(None, None, {})
    engine.close(state)
    (chunk,) = chunks_of(engine, np.zeros(16000, np.float32), 1)
    with pytest.raises(SessionClosedError):
        engine.generate([(state, chunk)])
