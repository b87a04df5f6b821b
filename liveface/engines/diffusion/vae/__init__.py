"""Video VAEs of the diffusion engine.

* :class:`WanVAE` - the Wan2.1 / Wan2.2 causal 3D-conv VAEs (encode, decode, streaming decode);
* :class:`TAEHV` - the tiny TAEHV-style autoencoder (``taew2_1`` / ``taew2_2``), the fast decoder;
* configs (:class:`WanVAEConfig`, :class:`TAEHVConfig`), presets, JSON round-trip;
* :func:`build_vae`, :func:`load_vae`, :func:`save_vae` (local paths only);
* :class:`StreamState`, the fixed-size per-stream cache both decoders use.

Latents are normalised ``(B, C, T, h, w)``; videos are ``(B, T, H, W, 3)`` uint8 or float in
``[-1, 1]``. See :mod:`.interface`.
"""

from .config import (
    PRESETS,
    TAEHVConfig,
    VAEConfig,
    WanVAEConfig,
    config_from_dict,
    config_from_json,
    preset,
)
from .interface import StreamingDecoder, VideoEncoder, frames_to_uint8
from .loading import VAE, adapt_state_dict, build_vae, load_vae, save_vae
from .state import CacheLayout, CacheSpec, StreamState
from .taehv import TAEHV
from .wan import WanVAE

__all__ = [
    "PRESETS",
    "TAEHV",
    "VAE",
    "CacheLayout",
    "CacheSpec",
    "StreamState",
    "StreamingDecoder",
    "TAEHVConfig",
    "VAEConfig",
    "VideoEncoder",
    "WanVAE",
    "WanVAEConfig",
    "adapt_state_dict",
    "build_vae",
    "config_from_dict",
    "config_from_json",
    "frames_to_uint8",
    "load_vae",
    "preset",
    "save_vae",
]
