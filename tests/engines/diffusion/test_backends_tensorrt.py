"""The TensorRT backend without TensorRT: clear errors naming the extra, and the pure helpers
(profile shapes from the configs, build flags, engine cache keys)."""

from __future__ import annotations

import sys

import pytest
import torch

from liveface.engines.diffusion.backends import tensorrt as trt_backend
from liveface.engines.diffusion.backends.onnx_export import dit_step_inputs, taehv_step_inputs
from liveface.engines.diffusion.backends.tensorrt import (
    ProfileShapes,
    TrtBuildConfig,
    TrtRunner,
    build_engine,
    dit_profile,
    engine_cache_key,
    taehv_profile,
)
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.vae import TAEHV, build_vae, preset
from liveface.errors import ConfigError


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make ``import tensorrt`` and cuda-python fail, whatever is installed."""
    for name in ("tensorrt", "cuda", "cuda.bindings", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_tensorrt_names_the_gpu_extra(no_tensorrt, tmp_path):
    with pytest.raises(ConfigError, match=r"liveface\[gpu\]"):
        trt_backend.import_tensorrt()
    with pytest.raises(ConfigError, match="cuda-python"):
        trt_backend.import_cudart()
    with pytest.raises(ConfigError, match="gpu extra"):
        build_engine(tmp_path / "step.onnx", tmp_path / "step.plan", TrtBuildConfig())
    with pytest.raises(ConfigError, match="gpu extra"):
        TrtRunner(b"not an engine")
    with pytest.raises(ConfigError, match="cuda-python"):
        trt_backend.CudaStream()


def test_profile_shapes_are_validated():
    assert ProfileShapes.fixed((1, 2)).opt == (1, 2)
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ProfileShapes((2, 4), (1, 4), (4, 4))
    with pytest.raises(ConfigError, match="one rank"):
        ProfileShapes((1,), (1, 2), (1, 2))


def test_dit_profile_matches_the_exported_step_inputs():
    torch.manual_seed(0)
    config = DiTConfig.preset("tiny")
    dit = WanDiT(config)
    dit.attach_audio(AudioAdapter(AudioConfig.for_dit(config, feature_dim=8, num_feature_layers=2)))
    inputs = dit_step_inputs(dit, batch=2, latent_frames=3, latent_height=4, latent_width=6)
    profile = dit_profile(
        config, latent_frames=3, latent_height=4, latent_width=6, audio_frames=2,
        audio_tokens_per_frame=4, batch=2,
    )  # fmt: skip
    assert set(profile) == set(inputs)
    for name, shapes in profile.items():
        # The DiT graph is traced with fixed shapes: the profile is fixed as well.
        assert shapes == ProfileShapes.fixed(tuple(inputs[name].shape)), name
    with pytest.raises(ConfigError, match="patch"):
        dit_profile(config, latent_frames=3, latent_height=5, latent_width=6)
    with pytest.raises(ConfigError, match="batch"):
        dit_profile(config, latent_frames=3, latent_height=4, latent_width=6, batch=0)


def test_dit_profile_with_a_prefix_and_per_sample_timesteps():
    config = DiTConfig.preset("tiny")
    dit = WanDiT(config)
    inputs = dit_step_inputs(dit, batch=3, audio_first_frame=0, prefix_tokens=12,
                             per_frame_timesteps=False)  # fmt: skip
    profile = dit_profile(
        config, latent_frames=2, latent_height=4, latent_width=4, prefix_tokens=12,
        per_frame_timesteps=False, batch=3,
    )  # fmt: skip
    assert {k: p.opt for k, p in profile.items()} == {k: tuple(v.shape) for k, v in inputs.items()}
    assert profile["timesteps"].min == (3,)


def test_5b_profile_at_704x1280():
    profile = dit_profile(
        DiTConfig.preset("wan2.2-ti2v-5b"), latent_frames=4, latent_height=44, latent_width=80
    )
    assert profile["latents"].opt == (1, 48, 4, 44, 80)
    assert profile["text_kv"].opt == (30, 2, 1, 24, 512, 128)
    assert "audio_tokens" not in profile


def test_taehv_profile_matches_the_exported_step_inputs():
    vae = build_vae("taew2_2-tiny")
    assert isinstance(vae, TAEHV)
    inputs = taehv_step_inputs(vae, batch=1, latent_height=3, latent_width=5)
    profile = taehv_profile(
        preset("taew2_2-tiny"), latent_frames=1, latent_height=3, latent_width=5, max_batch=4
    )
    assert set(profile) == set(inputs)
    for name, shapes in profile.items():
        assert shapes.opt == tuple(inputs[name].shape), name
        assert (shapes.min[0], shapes.max[0]) == (1, 4)
    with pytest.raises(ConfigError, match="opt_batch"):
        taehv_profile(preset("taew2_2-tiny"), latent_frames=1, latent_height=3, latent_width=5,
                      opt_batch=2)  # fmt: skip


def test_build_flags_and_validation():
    assert TrtBuildConfig().flag_names() == ("BF16",)
    assert TrtBuildConfig(precision="float16", fp8=True).flag_names() == ("FP16", "FP8")
    assert TrtBuildConfig(precision="float32").flag_names() == ()
    with pytest.raises(ConfigError, match="precision"):
        TrtBuildConfig(precision="int8")
    with pytest.raises(ConfigError, match="optimization_level"):
        TrtBuildConfig(optimization_level=9)


def test_engine_cache_key_changes_with_graph_settings_gpu_and_version(tmp_path):
    graph = tmp_path / "step.onnx"
    graph.write_bytes(b"graph-1")
    base = TrtBuildConfig.with_profile({"x": ProfileShapes.fixed((1, 4))})
    key = engine_cache_key(graph, base, device_name="NVIDIA H100", trt_version="10.9")
    assert len(key) == 16
    assert key == engine_cache_key(graph, base, device_name="NVIDIA H100", trt_version="10.9")
    others = {
        engine_cache_key(graph, TrtBuildConfig(), device_name="NVIDIA H100", trt_version="10.9"),
        engine_cache_key(graph, base, device_name="NVIDIA H200", trt_version="10.9"),
        engine_cache_key(graph, base, device_name="NVIDIA H100", trt_version="10.10"),
    }
    graph.write_bytes(b"graph-2")
    others.add(engine_cache_key(graph, base, device_name="NVIDIA H100", trt_version="10.9"))
    assert key not in others
    assert len(others) == 4
