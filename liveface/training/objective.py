"""The flow-matching objective on engine chunks (one ``nn.Module``, so DDP can wrap it).

With ``x_sigma = (1 - sigma) x0 + sigma eps`` and the DiT predicting the velocity
``v = eps - x0`` at timestep ``1000 sigma`` (Wan's convention, the engine's samplers'), the loss is
the mean squared error of the predicted velocity over the chunk's new latent frames. Conditioning
is :class:`~liveface.training.conditioning.Conditioning`, i.e. the engine's.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from liveface.engines.diffusion.dit.audio_adapter import AudioAdapter
from liveface.engines.diffusion.streaming.motion import MotionLayout
from liveface.training.batch import Batch
from liveface.training.conditioning import Conditioning
from liveface.training.model import Models

NUM_TRAIN_TIMESTEPS = 1000


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast on CUDA when asked; nothing otherwise."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Denoiser(nn.Module):
    """The DiT (adapter attached, LoRA hooked in) with the engine's chunk conditioning.

    Args:
        models: the DiT, adapter and LoRA.
        layout: the engine's motion layout of the training grid.
        warmup: latent frames the adapter's projector warms up on before a chunk.
        bf16: autocast to bfloat16 on CUDA.
    """

    def __init__(self, models: Models, layout: MotionLayout, warmup: int, bf16: bool) -> None:
        super().__init__()
        self.dit = models.dit
        self.lora = models.lora
        self.conditioning = Conditioning(models.dit, layout)
        self.warmup = warmup
        self.bf16 = bf16
        # Gradients reach the prefix only through weights that train (LoRA, full fine-tuning).
        self.prefix_grad = models.lora is not None or any(
            p.requires_grad for k, p in models.dit.named_parameters() if not k.startswith("audio.")
        )

    def forward(
        self, batch: Batch, x: torch.Tensor, sigma: torch.Tensor, audio_keep: torch.Tensor
    ) -> torch.Tensor:
        """float32 velocity ``(B, C, K, h, w)`` for noisy latents ``x`` at levels ``sigma``
        ``(B,)``; ``audio_keep`` ``(B,)`` 0 gives the unconditional (zero) audio tokens."""
        c = self.conditioning
        adapter = self.dit.audio
        assert isinstance(adapter, AudioAdapter)
        with autocast(x.device, self.bf16):
            text = c.text(batch.text)
            grad = self.prefix_grad and torch.is_grad_enabled()
            prefix = c.prefix(batch.reference, batch.history, text, grad=grad)
            k = x.shape[2]
            audio = c.audio(adapter, batch.audio, audio_keep, self.warmup, k)
            out = self.dit(
                x,
                sigma * NUM_TRAIN_TIMESTEPS,
                text,
                positions=c.new_rope(k),
                audio=audio,
                prefix=prefix,
            )
        return out.float()


class FlowMatchingLoss(nn.Module):
    """Per-sample flow-matching loss of a batch of chunks (arguments as :class:`Denoiser`)."""

    def __init__(self, models: Models, layout: MotionLayout, warmup: int, bf16: bool) -> None:
        super().__init__()
        self.denoiser = Denoiser(models, layout, warmup, bf16)

    def forward(self, batch: Batch) -> torch.Tensor:
        """float32 ``(B,)`` losses."""
        x0, eps = batch.target, batch.noise
        s = batch.sigma.view(-1, 1, 1, 1, 1)
        x = (1 - s) * x0 + s * eps
        pred = self.denoiser(batch, x, batch.sigma, batch.audio_keep)
        return (pred - (eps - x0)).pow(2).mean(dim=(1, 2, 3, 4))
