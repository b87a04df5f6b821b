"""ONNX export of the tiny DiT denoising step and the tiny TAEHV decode step, checked against eager
PyTorch with onnxruntime (float32, CPU)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from liveface.engines.diffusion.backends.onnx_checks import check_parity, demote_float64
from liveface.engines.diffusion.backends.onnx_export import (
    DiTStep,
    TAEHVDecodeStep,
    dit_step_inputs,
    export_dit_step,
    export_step,
    export_taehv_decode_step,
    stack_kv,
    stack_text_kv,
    taehv_step_inputs,
    unstack_text_kv,
)
from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.dit.audio_config import AudioConfig
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.dit.model import WanDiT
from liveface.engines.diffusion.dit.rope import grid_positions
from liveface.engines.diffusion.vae import TAEHV, build_vae
from liveface.errors import ConfigError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

#: float32, same arithmetic in another order.
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def tiny_dit(audio: bool) -> WanDiT:
    torch.manual_seed(0)
    config = DiTConfig.preset("tiny")
    dit = WanDiT(config)
    dit.init_weights(zero_output=False)
    if audio:
        adapter = AudioAdapter(
            AudioConfig.for_dit(config, feature_dim=16, num_feature_layers=3, hidden_dim=16)
        )
        with torch.no_grad():
            for p in adapter.parameters():  # a fresh adapter adds zero; make it count
                p.normal_(0.0, 0.2)
        dit.attach_audio(adapter)
    return dit.eval()


def tiny_taehv() -> TAEHV:
    vae = build_vae("taew2_2-tiny")
    assert isinstance(vae, TAEHV)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in sorted(vae.state_dict().items()):
            noise = torch.randn(p.shape, generator=g)
            # Variance-preserving without the ReLU gain: activations stay O(1) through the
            # residual MemBlocks, as in a trained decoder, so float32 rounding stays small.
            p.copy_(0.1 * noise if p.ndim == 1 else noise * (1.0 / p[0].numel()) ** 0.5)
    return vae.eval()


def test_text_kv_stacking_round_trips_through_the_dit():
    dit = tiny_dit(audio=False)
    context = dit.prepare_context(torch.randn(1, 8, 32))
    text_kv = stack_text_kv(context)
    c = dit.config
    assert text_kv.shape == (c.num_layers, 2, 1, c.num_heads, c.text_len, c.head_dim)
    latents, t = torch.randn(1, 4, 2, 4, 4), torch.tensor([[0.0, 600.0]])
    with torch.no_grad():
        torch.testing.assert_close(
            dit(latents, t, unstack_text_kv(text_kv)), dit(latents, t, context)
        )
    with pytest.raises(ValueError, match="cached keys"):
        stack_text_kv(dit.prepare_context(torch.randn(1, 8, 32), cache_kv=False))


@pytest.mark.parametrize("audio", [True, False], ids=["audio", "no-audio"])
def test_dit_step_matches_eager_pytorch_in_onnxruntime(tmp_path, audio):
    dit = tiny_dit(audio)
    inputs = dit_step_inputs(dit, batch=2, latent_frames=3, latent_height=4, latent_width=4)
    assert ("audio_tokens" in inputs) == audio
    graph = export_dit_step(dit, tmp_path / "dit.onnx", inputs, audio_first_frame=1)
    assert graph.inputs == tuple(inputs)
    assert graph.outputs == ("velocity",)
    assert graph.shapes["latents"] == (2, 4, 3, 4, 4)
    onnx.checker.check_model(str(graph.path))
    report = check_parity(graph, DiTStep(dit, audio_first_frame=1), inputs)
    assert report.worst < TOLERANCE, report
    # The output must depend on every input, or the check proves little.
    with torch.no_grad():
        base = DiTStep(dit, audio_first_frame=1)(*inputs.values())
        for name in inputs:
            changed = dict(inputs)
            changed[name] = inputs[name] + 0.5
            moved = DiTStep(dit, audio_first_frame=1)(*changed.values())
            assert (moved - base).abs().max() > 1e-4, name


def test_streaming_step_with_a_key_value_prefix_matches_eager(tmp_path):
    """The streaming engine's denoiser: conditioning tokens as a cached prefix, one timestep per
    sample, audio on every new latent frame, rotary positions after the prefix's."""
    dit = tiny_dit(audio=True)
    c = dit.config
    history = dit.patch_grid(torch.randn(1, c.in_dim, 2, 4, 4)).flatten(2).transpose(1, 2)
    prompt = dit.prepare_context(torch.randn(1, 8, c.text_dim))
    prefix = dit.encode_prefix(history, grid_positions(2, 2, 2), prompt)
    positions = grid_positions(2, 2, 2, frame_offset=2)
    inputs = dit_step_inputs(
        dit, latent_frames=2, latent_height=4, latent_width=4, audio_first_frame=0,
        prefix_tokens=prefix.tokens, per_frame_timesteps=False,
    )  # fmt: skip
    assert inputs["timesteps"].shape == (1,)
    inputs["text_kv"] = stack_text_kv(prompt)
    inputs["prefix_kv"] = stack_kv(prefix.kv)
    step = DiTStep(dit, positions=positions, with_prefix=True)
    assert step.input_names == ("latents", "timesteps", "text_kv", "prefix_kv", "audio_tokens")
    with torch.no_grad():
        want = dit(
            inputs["latents"], inputs["timesteps"], prompt, positions=positions, prefix=prefix,
            audio=AudioTokens(inputs["audio_tokens"]),
        )  # fmt: skip
        torch.testing.assert_close(step(*inputs.values()), want)
    graph = export_dit_step(dit, tmp_path / "stream.onnx", inputs, positions=positions,
                            with_prefix=True)  # fmt: skip
    report = check_parity(graph, step, inputs)
    assert report.worst < TOLERANCE, report


def test_float64_demotion_for_tensorrt_keeps_parity(tmp_path):
    dit = tiny_dit(audio=True)
    inputs = dit_step_inputs(dit, latent_frames=2, latent_height=2, latent_width=4)
    graph = export_dit_step(dit, tmp_path / "dit.onnx", inputs, audio_first_frame=1)
    changed = demote_float64(graph.path, tmp_path / "dit32.onnx")
    assert changed > 0
    model = onnx.load(str(tmp_path / "dit32.onnx"))
    double = onnx.TensorProto.DOUBLE
    assert all(i.data_type != double for i in model.graph.initializer)
    casts = [a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute]
    assert double not in casts
    report = check_parity(tmp_path / "dit32.onnx", DiTStep(dit, audio_first_frame=1), inputs)
    assert report.worst < TOLERANCE, report


@pytest.mark.parametrize("first", [False, True], ids=["steady", "first-call"])
def test_taehv_decode_step_matches_eager_pytorch_in_onnxruntime(tmp_path, first):
    vae = tiny_taehv()
    inputs = taehv_step_inputs(vae, batch=1, latent_frames=1, latent_height=3, latent_width=4)
    graph = export_taehv_decode_step(vae, tmp_path / "taehv.onnx", inputs, first=first)
    step = TAEHVDecodeStep(vae, first=first)
    assert graph.outputs == step.output_names
    assert len(graph.inputs) == 1 + 3 * vae.config.blocks_per_stage
    report = check_parity(graph, step, inputs)
    assert report.worst < TOLERANCE, report
    frames = step(*inputs.values())[0]
    r = vae.spatial_ratio
    assert frames.shape == (1, 1 if first else vae.temporal_ratio, 3 * r, 4 * r, 3)


def test_taehv_step_outputs_continue_the_stream_like_the_eager_decoder(tmp_path):
    vae = tiny_taehv()
    g = torch.Generator().manual_seed(5)
    lat = torch.randn(1, vae.latent_channels, 3, 2, 2, generator=g)
    state = vae.init_state(1, 2, 2)
    want = [vae.decode_step(lat[:, :, i : i + 1], state) for i in range(3)]
    state0 = vae.init_state(1, 2, 2)
    first = TAEHVDecodeStep(vae, first=True)(lat[:, :, :1], *state0.buffers)
    inputs = {"latents": lat[:, :, 1:2], **{f"memory.{i}": m for i, m in enumerate(first[1:])}}
    graph = export_taehv_decode_step(vae, tmp_path / "steady.onnx", inputs)
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
    memories = [m.numpy() for m in first[1:]]
    got = [first[0]]
    for i in (1, 2):
        feeds = {"latents": lat[:, :, i : i + 1].numpy()}
        feeds.update({f"memory.{j}": m for j, m in enumerate(memories)})
        frames, *memories = session.run(None, feeds)
        got.append(torch.from_numpy(frames))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=TOLERANCE, rtol=0)


def test_taehv_step_with_a_free_batch_serves_any_number_of_sessions(tmp_path):
    vae = tiny_taehv()
    example = taehv_step_inputs(vae, batch=2, latent_height=3, latent_width=2)
    graph = export_taehv_decode_step(vae, tmp_path / "dyn.onnx", example, dynamic_batch=True)
    step = TAEHVDecodeStep(vae)
    for batch in (1, 3):
        inputs = taehv_step_inputs(vae, batch=batch, latent_height=3, latent_width=2, seed=batch)
        report = check_parity(graph.path, step, inputs)
        assert report.worst < TOLERANCE, (batch, report)


def test_uint8_frames_in_the_graph_differ_by_at_most_one_level(tmp_path):
    vae = tiny_taehv()
    inputs = taehv_step_inputs(vae, latent_height=2, latent_width=2)
    graph = export_taehv_decode_step(vae, tmp_path / "u8.onnx", inputs, uint8=True)
    report = check_parity(graph, TAEHVDecodeStep(vae, uint8=True), inputs)
    assert report.max_abs["frames"] <= 1.0


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is not None, reason="onnxscript is installed"
)
def test_the_dynamo_exporter_without_onnxscript_says_what_to_install(tmp_path):
    with pytest.raises(ConfigError, match="onnxscript"):
        export_step(torch.nn.Identity(), {"x": torch.zeros(1)}, ("y",), tmp_path / "x.onnx",
                    dynamo=True)  # fmt: skip
