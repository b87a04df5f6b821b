"""TensorRT engines for the exported steps (the optional ``gpu`` extra).

Flow: :mod:`.onnx_export` writes the step's graph (then :func:`~.onnx_checks.demote_float64`, since
TensorRT has no float64) -> :func:`build_engine` parses it, sets the precision flags and the
optimisation profile (:func:`dit_profile` / :func:`taehv_profile` derive the shapes from the
configs) and serialises the engine -> :class:`TrtRunner` loads it and runs it with I/O bound by
tensor name on a CUDA stream: the current PyTorch stream by default (so it composes with
:mod:`liveface.engines.diffusion.backends.stages`), or a cuda-python stream (:class:`CudaStream`).

``tensorrt`` and ``cuda-python`` are imported inside the functions that need them; without them
those functions raise :class:`~liveface.errors.ConfigError` naming the extra to install.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from liveface.engines.diffusion.backends.precision import fp8_support
from liveface.engines.diffusion.dit.config import DiTConfig
from liveface.engines.diffusion.vae.config import TAEHVConfig
from liveface.errors import ConfigError

log = logging.getLogger(__name__)

GPU_EXTRA = "pip install 'liveface[gpu]' (TensorRT wheels come from NVIDIA's index, see README)"
PRECISIONS = ("bfloat16", "float16", "float32")


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a :class:`ConfigError` saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise ConfigError(f"the TensorRT backend needs the gpu extra: {GPU_EXTRA}") from e
    return tensorrt


def import_cudart() -> ModuleType:
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError as e:
        raise ConfigError(f"CUDA streams for TensorRT need cuda-python: {GPU_EXTRA}") from e


@dataclass(frozen=True)
class ProfileShapes:
    """Smallest, typical and largest shape of one input in an optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        ranks = {len(self.min), len(self.opt), len(self.max)}
        ordered = all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=False))
        if len(ranks) != 1 or not ordered or min(self.min, default=1) <= 0:
            raise ConfigError(f"profile shapes need one rank and 0 < min <= opt <= max: {self}")

    @classmethod
    def fixed(cls, shape: tuple[int, ...]) -> ProfileShapes:
        return cls(shape, shape, shape)


def _batched(shape: tuple[int, ...], opt_batch: int, max_batch: int) -> ProfileShapes:
    return ProfileShapes((1, *shape), (opt_batch, *shape), (max_batch, *shape))


def dit_profile(
    config: DiTConfig,
    *,
    latent_frames: int,
    latent_height: int,
    latent_width: int,
    audio_frames: int = 0,
    audio_tokens_per_frame: int = 0,
    prefix_tokens: int = 0,
    per_frame_timesteps: bool = True,
    batch: int = 1,
) -> dict[str, ProfileShapes]:
    """Input shapes of the exported DiT step (:class:`~.onnx_export.DiTStep`); ``audio_frames =
    0`` for a DiT without audio, ``prefix_tokens = 0`` without cached conditioning tokens (the
    arguments of :func:`~.onnx_export.dit_step_inputs`). The DiT graph has fixed shapes, so the
    profile is fixed too (``min = opt = max``): one engine per batch size."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1 (got {batch})")
    pt, ph, pw = config.patch_size
    if latent_frames % pt or latent_height % ph or latent_width % pw:
        raise ConfigError(
            f"latent size {(latent_frames, latent_height, latent_width)} is not a multiple of "
            f"the patch {config.patch_size}"
        )
    c = config

    def kv(tokens: int) -> ProfileShapes:
        head, tail = (c.num_layers, 2), (c.num_heads, tokens, c.head_dim)
        return ProfileShapes.fixed((*head, batch, *tail))

    timesteps = (latent_frames // pt,) if per_frame_timesteps else ()
    out = {
        "latents": ProfileShapes.fixed((batch, c.in_dim, latent_frames, latent_height,
                                        latent_width)),
        "timesteps": ProfileShapes.fixed((batch, *timesteps)),
        "text_kv": kv(c.text_len),
    }  # fmt: skip
    if prefix_tokens:
        out["prefix_kv"] = kv(prefix_tokens)
    if audio_frames:
        out["audio_tokens"] = ProfileShapes.fixed(
            (batch, audio_frames, audio_tokens_per_frame, c.dim)
        )
    return out


def taehv_profile(
    config: TAEHVConfig,
    *,
    latent_frames: int,
    latent_height: int,
    latent_width: int,
    opt_batch: int = 1,
    max_batch: int = 1,
) -> dict[str, ProfileShapes]:
    """Input shapes of the exported TAEHV decode step (latents and one memory per MemBlock),
    batch 1 to ``max_batch`` (export with ``dynamic_batch=True`` for a range)."""
    if not 1 <= opt_batch <= max_batch:
        raise ConfigError(f"need 1 <= opt_batch ({opt_batch}) <= max_batch ({max_batch})")
    from liveface.engines.diffusion.vae.taehv import TAEHV

    with torch.device("meta"):
        layout = TAEHV(config).decoder_layout  # shapes only: no memory is allocated
    out = {
        "latents": _batched(
            (config.latent_channels, latent_frames, latent_height, latent_width),
            opt_batch,
            max_batch,
        )
    }
    for i, spec in enumerate(layout.specs):
        shape = spec.shape(1, latent_height, latent_width)[1:]
        out[f"memory.{i}"] = _batched(shape, opt_batch, max_batch)
    return out


@dataclass(frozen=True)
class TrtBuildConfig:
    """How to build an engine.

    Attributes:
        precision: kernels allowed besides float32: ``bfloat16`` (default), ``float16``,
            ``float32``.
        fp8: also allow FP8 kernels (needs compute capability >= 8.9, and Q/DQ nodes in the graph
            for TensorRT to use them); dropped with a warning where the GPU has none.
        workspace_gib: scratch memory the builder's tactics may use.
        optimization_level: builder optimisation level 0-5 (higher: slower build, faster engine).
        profile: per-input shapes; empty for a graph with fixed shapes.
    """

    precision: str = "bfloat16"
    fp8: bool = False
    workspace_gib: float = 8.0
    optimization_level: int = 3
    profile: tuple[tuple[str, ProfileShapes], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.workspace_gib <= 0:
            problems.append("workspace_gib must be positive")
        if not 0 <= self.optimization_level <= 5:
            problems.append("optimization_level must be 0..5")
        if problems:
            raise ConfigError("invalid TensorRT build config: " + "; ".join(problems))

    @classmethod
    def with_profile(cls, profile: Mapping[str, ProfileShapes], **kwargs: Any) -> TrtBuildConfig:
        return cls(profile=tuple(profile.items()), **kwargs)

    def flag_names(self) -> tuple[str, ...]:
        """Names of the ``tensorrt.BuilderFlag`` members to set."""
        flags = {"bfloat16": ("BF16",), "float16": ("FP16",), "float32": ()}[self.precision]
        return (*flags, "FP8") if self.fp8 else flags

    def to_json(self) -> str:
        data = asdict(self)
        data["profile"] = [[name, asdict(p)] for name, p in self.profile]
        return json.dumps(data, sort_keys=True)


def engine_cache_key(
    onnx_path: str | Path, build: TrtBuildConfig, *, device_name: str, trt_version: str
) -> str:
    """A name for the engine file: engines are tied to the graph, the build settings, the GPU
    model and the TensorRT version, so any change gives a new key (hex, 16 characters)."""
    digest = hashlib.sha256()
    with open(onnx_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(build.to_json().encode())
    digest.update(f"{device_name}|{trt_version}".encode())
    return digest.hexdigest()[:16]


def build_engine(onnx_path: str | Path, engine_path: str | Path, build: TrtBuildConfig) -> Path:
    """Parse ``onnx_path``, build with ``build`` and write the serialised engine.

    Raises:
        ConfigError: TensorRT missing, a graph TensorRT cannot parse, or a failed build.
    """
    trt = import_tensorrt()
    if build.fp8 and not fp8_support("cuda").matmul:
        log.warning("TensorRT FP8 off: %s", fp8_support("cuda").reason)
        build = replace(build, fp8=False)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(build.workspace_gib * 2**30))
    config.builder_optimization_level = build.optimization_level
    for name in build.flag_names():
        config.set_flag(getattr(trt.BuilderFlag, name))
    if build.profile:
        profile = builder.create_optimization_profile()
        for name, shapes in build.profile:
            profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(f"TensorRT failed to build an engine from {onnx_path} (see its log)")
    out = Path(engine_path)
    tmp = out.with_suffix(out.suffix + ".partial")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(out)  # a crash mid-write never leaves a truncated engine under the real name
    return out


def _check(cudart: ModuleType, result: tuple[Any, ...], what: str) -> Any:
    err = result[0]
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"{what} failed: {cudart.cudaGetErrorString(err)[1]!r}")
    return result[1] if len(result) > 1 else None


class CudaStream:
    """A non-blocking CUDA stream made with cuda-python (for TensorRT outside PyTorch's streams)."""

    def __init__(self) -> None:
        self._cudart = import_cudart()
        rt = self._cudart
        self.handle = _check(
            rt, rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate"
        )

    def wait(self, event: torch.cuda.Event) -> None:
        """Make this stream wait for a PyTorch event (e.g. inputs written on a torch stream)."""
        _check(
            self._cudart,
            self._cudart.cudaStreamWaitEvent(self.handle, event.cuda_event, 0),
            "cudaStreamWaitEvent",
        )

    def synchronize(self) -> None:
        _check(self._cudart, self._cudart.cudaStreamSynchronize(self.handle), "synchronize")

    def close(self) -> None:
        if self.handle is not None:
            _check(self._cudart, self._cudart.cudaStreamDestroy(self.handle), "destroy stream")
            self.handle = None


def _torch_dtypes(trt: ModuleType) -> dict[Any, torch.dtype]:
    names = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
        "INT8": torch.int8, "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool,
        "UINT8": torch.uint8, "FP8": getattr(torch, "float8_e4m3fn", None),
    }  # fmt: skip
    return {getattr(trt.DataType, n): d for n, d in names.items() if hasattr(trt.DataType, n) and d}


class TrtRunner:
    """A deserialised engine with one execution context; I/O bound by tensor name.

    Args:
        engine: the serialised engine (bytes) or its path.
        device: the CUDA device it runs on.
    """

    def __init__(self, engine: bytes | str | Path, device: torch.device | str = "cuda") -> None:
        trt = import_tensorrt()
        data = engine if isinstance(engine, bytes) else Path(engine).read_bytes()
        self.device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ConfigError("TensorRT could not load the engine (built by another version?)")
        self.context = self.engine.create_execution_context()
        dtypes = _torch_dtypes(trt)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = tuple(n for n in names if is_input[n])
        self.outputs = tuple(n for n in names if not is_input[n])
        self.dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}

    def run(
        self, inputs: Mapping[str, torch.Tensor], *, stream: CudaStream | int | None = None
    ) -> dict[str, torch.Tensor]:
        """Enqueue one execution; returns the outputs (written asynchronously on ``stream``).

        ``inputs`` are CUDA tensors of the engine's dtypes; ``stream`` None uses PyTorch's
        current stream (the outputs are then ordered with later PyTorch work on it).
        """
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise ValueError(f"TensorRT inputs missing: {sorted(missing)}")
        keep = []
        for name in self.inputs:
            t = inputs[name].to(self.device, self.dtypes[name]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if stream is None:
            handle = torch.cuda.current_stream(self.device).cuda_stream
        else:
            handle = stream.handle if isinstance(stream, CudaStream) else stream
            # The caching allocator must not reuse these tensors' memory before the foreign
            # stream is done with them.
            foreign = torch.cuda.ExternalStream(int(handle), device=self.device)
            for t in (*keep, *outputs.values()):
                t.record_stream(foreign)
        if not self.context.execute_async_v3(handle):
            raise RuntimeError("TensorRT execution failed (see its log)")
        return outputs
