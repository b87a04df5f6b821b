"""``torch.compile`` for the fixed-shape steps (DiT denoising step, decoder step), with CUDA graphs.

The streaming engine calls the same step with the same shapes thousands of times, which is where
compilation pays: ``mode="reduce-overhead"`` replays a CUDA graph (no per-kernel launch cost on
the host), ``mode="max-autotune"`` also searches matmul / attention kernels (slow to compile, so
it happens in :meth:`CompiledStep.warm_up`, at start-up, never in a session's hot path).

Whatever goes wrong (no triton, no C++ compiler, an unsupported op, a failing first run), the step
falls back to eager PyTorch with the reason logged and kept in :attr:`CompiledStep.fallback_reason`:
the server serves, slower, rather than not at all.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch

from liveface.engines.diffusion.backends.batching import flatten
from liveface.errors import ConfigError

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: Modes in which inductor captures CUDA graphs (outputs live in the graph's memory pool).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

Compiler = Callable[[Callable[..., Any], "CompileConfig"], Callable[..., Any]]


@dataclass(frozen=True)
class CompileConfig:
    """How to compile a step.

    Attributes:
        mode: a ``torch.compile`` mode (see :data:`COMPILE_MODES`).
        backend: the ``torch.compile`` backend (``inductor``; ``eager`` / ``aot_eager`` only trace).
        dynamic: False specialises on the exact shapes (the steps' shapes are fixed per
            resolution), which is what CUDA graphs need.
        fullgraph: fail instead of splitting the graph at an unsupported op.
        warmup_runs: calls made by :meth:`CompiledStep.warm_up` (the first one compiles).
        allow_new_shapes: compile for input shapes first seen after the warm-up; False runs them
            eagerly instead (compiling would stall every session on the device for seconds).
        clone_outputs: copy outputs out of the CUDA graph's memory pool, which the next replay
            overwrites; only turn off when every output is consumed before the next call.
    """

    mode: str = "max-autotune"
    backend: str = "inductor"
    dynamic: bool = False
    fullgraph: bool = False
    warmup_runs: int = 2
    allow_new_shapes: bool = False
    clone_outputs: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in COMPILE_MODES:
            problems.append(f"mode must be one of {', '.join(COMPILE_MODES)}")
        if self.warmup_runs < 1:
            problems.append("warmup_runs must be >= 1 (the first run compiles)")
        if problems:
            raise ConfigError("invalid compile config: " + "; ".join(problems))

    @property
    def cuda_graphs(self) -> bool:
        return self.backend == "inductor" and self.mode in CUDA_GRAPH_MODES


def compile_unavailable(device: torch.device | str, backend: str = "inductor") -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot work on ``device``, or None if it may."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python version"
    except ImportError as e:
        return f"torch._dynamo cannot be imported ({e})"
    if backend != "inductor":
        return None
    if torch.device(device).type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "inductor on CUDA needs triton (it ships with the CUDA wheels of torch)"
    elif not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "inductor on CPU needs a C++ compiler (g++ or clang++)"
    return None


def torch_compiler(fn: Callable[..., Any], config: CompileConfig) -> Callable[..., Any]:
    """The default :data:`Compiler`: ``torch.compile`` with the config's settings."""
    return torch.compile(
        fn,
        mode=None if config.backend != "inductor" else config.mode,
        backend=config.backend,
        dynamic=config.dynamic,
        fullgraph=config.fullgraph,
    )


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
    """Shapes, dtypes and structure of a call; None when it cannot be described."""
    try:
        leaves, spec = flatten((args, kwargs))
    except TypeError:
        return None
    return spec, tuple(tuple(t.shape) for t in leaves)


def _clone(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, (tuple, list)):
        return type(tree)(_clone(x) for x in tree)
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    return tree


class CompiledStep:
    """A step function compiled for fixed shapes, warmed up once, eager when that fails.

    Args:
        fn: the eager step, e.g. a :class:`~liveface.engines.diffusion.dit.model.WanDiT`.
        config: compile settings.
        device: where the step runs (decides which toolchain is needed).
        name: for the logs.
        compiler: how to compile (tests inject one); :func:`torch_compiler` by default.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        config: CompileConfig | None = None,
        *,
        device: torch.device | str = "cuda",
        name: str = "step",
        compiler: Compiler | None = None,
    ) -> None:
        self.fn = fn
        self.config = config or CompileConfig()
        self.device = torch.device(device)
        self.name = name
        self._compiler = compiler or torch_compiler
        self._compiled: Callable[..., Any] | None = None
        self._signatures: set[Hashable] = set()
        self._eager_signatures: set[Hashable] = set()
        self.fallback_reason: str | None = None
        #: Seconds the warm-up took (compilation included), None before it.
        self.warmup_seconds: float | None = None

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled function (False: eager)."""
        return self._compiled is not None

    @property
    def backend(self) -> str:
        """``"compiled:inductor:max-autotune"`` and the like, or ``"eager"``."""
        if self._compiled is None:
            return "eager"
        c = self.config
        mode = f":{c.mode}" if c.backend == "inductor" else ""
        return f"compiled:{c.backend}{mode}"

    def _fall_back(self, reason: str) -> None:
        self._compiled = None
        self.fallback_reason = reason
        log.warning("%s: running eager PyTorch (%s)", self.name, reason)

    def warm_up(self, *args: Any, **kwargs: Any) -> Any:
        """Compile for these inputs and run ``warmup_runs`` times; returns the last output.

        On any failure the step runs eagerly from now on (reason in :attr:`fallback_reason`).
        """
        start = time.perf_counter()
        reason = (
            compile_unavailable(self.device, self.config.backend)
            if self._compiler is torch_compiler
            else None
        )
        if reason is not None:
            self._fall_back(reason)
        elif self._compiled is None and self.fallback_reason is None:
            try:
                self._compiled = self._compiler(self.fn, self.config)
            except Exception as e:
                self._fall_back(f"compilation failed: {type(e).__name__}: {e}")
        out = None
        for _ in range(self.config.warmup_runs):
            out = self._run(args, kwargs, warming=True)
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize(self.device)
        self.warmup_seconds = time.perf_counter() - start
        log.info("%s: %s warm-up took %.1f s", self.name, self.backend, self.warmup_seconds)
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(args, kwargs, warming=False)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, warming: bool) -> Any:
        compiled = self._compiled
        if compiled is None:
            return self.fn(*args, **kwargs)
        sig = _signature(args, kwargs)
        if sig not in self._signatures:
            if not warming and self._signatures and not self.config.allow_new_shapes:
                if sig not in self._eager_signatures:
                    self._eager_signatures.add(sig)
                    log.warning("%s: inputs of new shapes run eagerly (not warmed up)", self.name)
                return self.fn(*args, **kwargs)
            self._signatures.add(sig)
        graphs = self.config.cuda_graphs and self.device.type == "cuda"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        try:
            out = compiled(*args, **kwargs)
        except Exception as e:
            # If eager fails too the inputs are at fault: that error propagates and the
            # compiled step stays; otherwise compilation was the problem.
            out = self.fn(*args, **kwargs)
            self._fall_back(f"compiled run failed: {type(e).__name__}: {e}")
            return out
        return _clone(out) if graphs and self.config.clone_outputs else out
