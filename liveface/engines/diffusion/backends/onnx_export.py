"""The fixed-shape steps as ONNX graphs: the DiT denoising step and the TAEHV decode step.

Each step is wrapped in a module whose forward takes and returns plain tensors with fixed shapes
(:class:`DiTStep`, :class:`TAEHVDecodeStep`), exported with ``torch.onnx.export`` and checked
against eager PyTorch with onnxruntime (:func:`check_parity`). The graphs feed TensorRT
(:mod:`.tensorrt`), which has no float64: :func:`demote_float64` rewrites the timestep embedding's
and rotary tables' float64 arithmetic to float32 first.

The TorchScript-based exporter (``dynamo=False``) is the default: the ``torch.export``-based one
needs the ``onnxscript`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liveface.engines.diffusion.backends.onnx_checks import (
    ParityReport,
    check_parity,
    demote_float64,
)
from liveface.engines.diffusion.dit.attention import KeyValue
from liveface.engines.diffusion.dit.audio_injection import AudioTokens
from liveface.engines.diffusion.dit.kv_cache import PrefixCache
from liveface.engines.diffusion.dit.model import TextContext, WanDiT
from liveface.engines.diffusion.dit.rope import RotaryTables
from liveface.engines.diffusion.vae.interface import frames_to_uint8
from liveface.engines.diffusion.vae.state import StreamState
from liveface.engines.diffusion.vae.taehv import TAEHV
from liveface.errors import ConfigError

log = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (LayerNormalization needs 17).
OPSET = 17


def stack_kv(kv: Sequence[KeyValue]) -> torch.Tensor:
    """Per-block keys/values as one tensor ``(layers, 2, batch, heads, tokens, head_dim)``
    (index 0 of the second axis holds keys, 1 values)."""
    return torch.stack([torch.stack([x.k, x.v]) for x in kv])


def unstack_kv(stacked: torch.Tensor) -> tuple[KeyValue, ...]:
    """Undo :func:`stack_kv`."""
    return tuple(KeyValue(k=layer[0], v=layer[1]) for layer in stacked.unbind(0))


def stack_text_kv(context: TextContext) -> torch.Tensor:
    """A prompt's cached keys/values ``(layers, 2, batch, heads, text_len, head_dim)``."""
    if context.kv is None:
        raise ValueError("the text context has no cached keys/values (prepare_context(cache_kv))")
    return stack_kv(context.kv)


def unstack_text_kv(text_kv: torch.Tensor) -> TextContext:
    """Undo :func:`stack_text_kv`; ``states`` only supplies the right batch (the DiT
    reads the keys/values when they are given)."""
    return TextContext(states=text_kv[0, 0].transpose(1, 2).flatten(2), kv=unstack_kv(text_kv))


class DiTStep(nn.Module):
    """One DiT forward as tensors in, tensor out.

    Inputs, in this order: ``latents`` ``(batch, in_dim, frames, height, width)``;
    ``timesteps`` ``(batch,)`` or ``(batch, token_frames)``; ``text_kv`` from
    :func:`stack_text_kv`; with ``with_prefix`` the conditioning tokens' cached keys/values
    ``prefix_kv`` ``(layers, 2, batch, heads, prefix_tokens, head_dim)`` (a
    :class:`~liveface.engines.diffusion.dit.kv_cache.PrefixCache` through :func:`stack_kv`); and,
    when the DiT has an audio module, ``audio_tokens`` ``(batch, audio_frames, tokens_per_frame,
    dim)`` for the latent frames from ``audio_first_frame`` on. Output: the velocity, float32
    like ``latents``.

    Args:
        dit: the model (weights are baked into the graph).
        audio_first_frame: latent frame the audio tokens start at (conditioning frames before it).
        positions: rotary positions ``(tokens, 3)`` or their tables; None uses the grid's own
            indices. Either way they are constants of the graph.
        with_prefix: take ``prefix_kv`` (the streaming engine's cached conditioning tokens).
    """

    def __init__(
        self,
        dit: WanDiT,
        *,
        audio_first_frame: int = 0,
        positions: torch.Tensor | RotaryTables | None = None,
        with_prefix: bool = False,
    ) -> None:
        super().__init__()
        self.dit = dit
        self.audio_first_frame = audio_first_frame
        self.with_prefix = with_prefix
        tables = positions if not isinstance(positions, torch.Tensor) else dit.rotary(positions)
        self.rope_cos: torch.Tensor | None
        self.rope_sin: torch.Tensor | None
        self.register_buffer("rope_cos", None if tables is None else tables.cos, persistent=False)
        self.register_buffer("rope_sin", None if tables is None else tables.sin, persistent=False)

    @property
    def has_audio(self) -> bool:
        return self.dit.audio is not None

    @property
    def input_names(self) -> tuple[str, ...]:
        prefix = ("prefix_kv",) if self.with_prefix else ()
        audio = ("audio_tokens",) if self.has_audio else ()
        return ("latents", "timesteps", "text_kv", *prefix, *audio)

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text_kv: torch.Tensor,
        *rest: torch.Tensor,
    ) -> torch.Tensor:
        extra = list(rest)
        prefix = PrefixCache(unstack_kv(extra.pop(0))) if self.with_prefix else None
        audio = None
        if self.has_audio and extra:
            audio = AudioTokens(tokens=extra.pop(0), first_frame=self.audio_first_frame)
        rope = None
        if self.rope_cos is not None and self.rope_sin is not None:
            rope = RotaryTables(cos=self.rope_cos, sin=self.rope_sin)
        return self.dit(
            latents, timesteps, unstack_text_kv(text_kv), positions=rope, audio=audio,
            prefix=prefix,
        )  # fmt: skip


def dit_step_inputs(
    dit: WanDiT,
    *,
    batch: int = 1,
    latent_frames: int = 2,
    latent_height: int = 4,
    latent_width: int = 4,
    audio_first_frame: int = 1,
    prefix_tokens: int = 0,
    per_frame_timesteps: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Seeded example inputs of :class:`DiTStep` on the DiT's device and dtype.

    The first ``audio_first_frame`` latent frames are conditioning frames at timestep 0 (with
    ``per_frame_timesteps``; otherwise one timestep per sample, ``(batch,)``, as the streaming
    engine uses with a prefix); audio tokens (when the DiT has an audio module) cover the others;
    ``prefix_tokens > 0`` adds ``prefix_kv``.
    """
    c, weight = dit.config, dit.patch_embedding.weight
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, c.in_dim, latent_frames, latent_height, latent_width, generator=g)
    token_frames = latent_frames // c.patch_size[0]
    t = torch.rand(batch, 1, generator=g) * c.num_train_timesteps
    if per_frame_timesteps:
        timesteps = t.expand(batch, token_frames).clone()
        timesteps[:, : audio_first_frame // c.patch_size[0]] = 0.0
    else:
        timesteps = t[:, 0].clone()
    prompt = torch.randn(batch, c.text_len, c.text_dim, generator=g)
    with torch.no_grad():
        text_kv = stack_text_kv(dit.prepare_context(prompt.to(weight.device, weight.dtype)))
    out = {"latents": latents.to(weight.device), "timesteps": timesteps.to(weight.device),
           "text_kv": text_kv}  # fmt: skip
    if prefix_tokens:
        kv_shape = (c.num_layers, 2, batch, c.num_heads, prefix_tokens, c.head_dim)
        out["prefix_kv"] = torch.randn(kv_shape, generator=g).to(weight.device, weight.dtype)
    if dit.audio is not None:
        tokens_per_frame = getattr(getattr(dit.audio, "config", None), "tokens_per_frame", 4)
        audio_shape = (batch, latent_frames - audio_first_frame, tokens_per_frame, c.dim)
        out["audio_tokens"] = torch.randn(audio_shape, generator=g).to(weight.device, weight.dtype)
    return out


class TAEHVDecodeStep(nn.Module):
    """One streaming decode call of the TAEHV decoder as a pure function of tensors.

    Inputs: ``latents`` ``(batch, C, t, h, w)`` and ``memory.0`` ... (the stream state's buffers,
    ``(batch, C_i, H_i, W_i)`` each). Outputs: ``frames`` ``(batch, n, H, W, 3)`` float in
    ``[-1, 1]`` (uint8 with ``uint8=True``) and ``memory_out.0`` ... (the next state).

    Args:
        decoder: the model.
        first: export the stream's first call (which drops the warm-up frames) instead of a later
            one; the two are different graphs.
        uint8: convert the frames to uint8 inside the graph (a quarter of the bytes to copy).
    """

    def __init__(self, decoder: TAEHV, *, first: bool = False, uint8: bool = False) -> None:
        super().__init__()
        self.decoder = decoder
        self.first = first
        self.uint8 = uint8
        self.num_memories = len(decoder.decoder_layout.specs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("latents", *(f"memory.{i}" for i in range(self.num_memories)))

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("frames", *(f"memory_out.{i}" for i in range(self.num_memories)))

    def forward(self, latents: torch.Tensor, *memories: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = latents.shape[-2:]
        state = StreamState([m.clone() for m in memories], h, w, steps=0 if self.first else 1)
        frames = self.decoder.decode_step(latents, state)
        if self.uint8:
            frames = frames_to_uint8(frames)
        return (frames.contiguous(), *state.buffers)


def taehv_step_inputs(
    decoder: TAEHV, *, batch: int = 1, latent_frames: int = 1, latent_height: int = 4,
    latent_width: int = 4, seed: int = 0,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Seeded example inputs of :class:`TAEHVDecodeStep` (a state one call into its stream)."""
    p = next(decoder.decoder.parameters())
    g = torch.Generator().manual_seed(seed)
    state = decoder.init_state(batch, latent_height, latent_width)
    shape = (batch, decoder.latent_channels, latent_frames, latent_height, latent_width)
    out = {"latents": torch.randn(shape, generator=g).to(p.device, p.dtype)}
    for i, buf in enumerate(state.buffers):
        out[f"memory.{i}"] = torch.rand(buf.shape, generator=g).to(p.device, p.dtype)
    return out


@dataclass(frozen=True)
class ExportedGraph:
    """An exported step: where it is, its tensors' names and the input shapes it is fixed to."""

    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    seconds: float


def export_step(
    module: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str],
    path: str | Path,
    *,
    opset: int = OPSET,
    dynamo: bool = False,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> ExportedGraph:
    """Export ``module(*inputs.values())`` to ``path``, with fixed shapes unless ``dynamic_axes``
    names some (``{"latents": {0: "batch"}, ...}``, inputs and outputs).

    Raises:
        ConfigError: ``dynamo=True`` without the ``onnxscript`` package.
    """
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("the dynamo ONNX exporter needs onnxscript: pip install onnxscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(inputs)
    start = time.perf_counter()
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and tracer warnings about Python
        # values of shapes: the shapes are fixed on purpose.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=names,
            output_names=list(output_names),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=dynamo,
            dynamic_axes=None
            if dynamic_axes is None
            else {k: dict(v) for k, v in dynamic_axes.items()},
        )
    seconds = time.perf_counter() - start
    log.info("exported %s to %s in %.1f s", type(module).__name__, path, seconds)
    shapes = {k: tuple(v.shape) for k, v in inputs.items()}
    return ExportedGraph(path, tuple(names), tuple(output_names), shapes, seconds)


def export_dit_step(
    dit: WanDiT, path: str | Path, inputs: Mapping[str, torch.Tensor], **kwargs: Any
) -> ExportedGraph:
    """Export :class:`DiTStep` for ``inputs`` (from :func:`dit_step_inputs`); output
    ``velocity``. ``kwargs`` go to :class:`DiTStep` (``audio_first_frame``, ``positions``,
    ``with_prefix``). The graph's shapes are fixed, batch included: the DiT's reshapes are traced
    with the example's sizes, so each batch size needs its own graph."""
    step = DiTStep(dit, **kwargs)
    missing = set(step.input_names) - set(inputs)
    if missing:
        raise ValueError(f"DiT step inputs lack {sorted(missing)}")
    ordered = {k: inputs[k] for k in step.input_names}
    return export_step(step, ordered, ("velocity",), path)


def export_taehv_decode_step(
    decoder: TAEHV,
    path: str | Path,
    inputs: Mapping[str, torch.Tensor],
    *,
    dynamic_batch: bool = False,
    **kwargs: Any,
) -> ExportedGraph:
    """Export :class:`TAEHVDecodeStep` for ``inputs`` (from :func:`taehv_step_inputs`);
    ``dynamic_batch`` leaves the batch free (one graph, and one TensorRT engine with a batch
    profile, for any number of sessions). ``kwargs`` go to :class:`TAEHVDecodeStep`."""
    step = TAEHVDecodeStep(decoder, **kwargs)
    ordered = {k: inputs[k] for k in step.input_names}
    names = (*step.input_names, *step.output_names)
    axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
    return export_step(step, ordered, step.output_names, path, dynamic_axes=axes)


__all__ = [
    "DiTStep",
    "ExportedGraph",
    "ParityReport",
    "TAEHVDecodeStep",
    "check_parity",
    "demote_float64",
    "export_dit_step",
    "export_taehv_decode_step",
]
