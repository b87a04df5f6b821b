"""Speech encoders loaded through ``transformers`` from a local path, returning ALL hidden states.

- ``wav2vec2`` (Wan-S2V): ``Wav2Vec2Model``; a ``Wav2Vec2ForCTC`` checkpoint also loads (its
  ``lm_head`` is ignored). 16 kHz waveform in, 50 features/s out.
- ``whisper`` (Soul): only the encoder of a ``WhisperModel`` / ``WhisperForConditionalGeneration``
  checkpoint is built and loaded (no decoder in memory). Log-mel input padded to the encoder's
  fixed window (``2 * max_source_positions`` mel frames, 30 s for the public models); the outputs
  for the real audio are kept, 50 features/s.

Both are bidirectional transformers: within one window, a feature may depend on later audio of the
same window. Strict causality of the engine comes from windowing (the chunker's ``lookahead``);
everything after the encoder (:mod:`..dit.audio_projector`) is causal.

Nothing is downloaded: the path must hold the model (``config.json`` + weights).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from liveface.engines.diffusion.quiet import quiet_transformers
from liveface.errors import CheckpointError

log = logging.getLogger(__name__)

#: Whisper's encoder halves the mel frame rate once (conv2 stride).
_WHISPER_MEL_PER_FEATURE = 2
_WAV2VEC2_NORM_EPS = 1e-7


def _loading_problems(info: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("missing_keys", "mismatched_keys"):
        names = sorted(str(k) for k in info.get(key) or ())
        if names:
            problems.append(f"{key.replace('_', ' ')}: {', '.join(names[:12])}")
    return problems


class SpeechEncoder(nn.Module):
    """A frozen speech encoder returning every layer's hidden states.

    Use :meth:`from_pretrained`; ``forward`` takes a 16 kHz waveform.
    """

    def __init__(self, kind: str, model: nn.Module, feature_extractor: Any) -> None:
        super().__init__()
        self.kind = kind
        self.model = model
        self.model_config: Any = cast(Any, model).config
        self.feature_extractor = feature_extractor
        self.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return int(
            self.model_config.d_model if self.kind == "whisper" else self.model_config.hidden_size
        )

    @property
    def num_hidden_states(self) -> int:
        """Hidden states per forward: the embedding output and one per layer."""
        cfg = self.model_config
        layers = cfg.encoder_layers if self.kind == "whisper" else cfg.num_hidden_layers
        return int(layers) + 1

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        kind: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> SpeechEncoder:
        """Load from a local directory holding a transformers checkpoint.

        Args:
            kind: ``wav2vec2`` or ``whisper``; None reads ``model_type`` from ``config.json``.

        Raises:
            CheckpointError: missing path, unknown model type, or weights missing from the file.
        """
        import transformers as tf

        p = Path(path).expanduser()
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p} holds no config.json of a speech encoder")
        config = tf.AutoConfig.from_pretrained(str(p), local_files_only=True)
        kind = kind or {"wav2vec2": "wav2vec2", "whisper": "whisper"}.get(config.model_type)
        if kind == "wav2vec2":
            model_cls: Any = tf.Wav2Vec2Model
            extra: dict[str, Any] = {}
        elif kind == "whisper":
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            model_cls = WhisperEncoder
            # Checkpoints store the encoder under "model.encoder." or "encoder.".
            extra = {"key_mapping": {r"^(model\.)?encoder\.": ""}}
        else:
            raise CheckpointError(
                f"{p}: model_type {config.model_type!r} is not a supported speech encoder "
                "(wav2vec2 or whisper)"
            )
        try:
            with quiet_transformers():
                model, info = model_cls.from_pretrained(
                    str(p), local_files_only=True, output_loading_info=True, dtype=dtype, **extra
                )
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the speech encoder from {p} ({e})") from e
        log.debug("speech encoder %s: loading info %s", p, info)
        problems = _loading_problems(info)
        if problems:
            raise CheckpointError(
                f"speech encoder {p} does not match its config; " + "; ".join(problems)
            )
        model = model.to(device).eval()
        extractor = cls._feature_extractor(p, kind, config)
        return cls(kind, model, extractor)

    @staticmethod
    def _feature_extractor(path: Path, kind: str, config: Any) -> Any:
        import transformers as tf

        if (path / "preprocessor_config.json").is_file():
            return tf.AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        if kind == "whisper":
            return tf.WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        return tf.Wav2Vec2FeatureExtractor()

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Encode a batch of 16 kHz mono waveforms.

        Args:
            waveform: float ``(batch, samples)``.

        Returns:
            ``(batch, num_hidden_states, features, hidden_size)``; about ``samples / 320`` features.
        """
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (batch, samples), got {tuple(waveform.shape)}")
        param = next(self.model.parameters())
        if self.kind == "whisper":
            feats, num = self._whisper_input(waveform)
            out = self.model(feats.to(param.device, param.dtype), output_hidden_states=True)
            states = [h[:, :num] for h in out.hidden_states]
        else:
            x = waveform.to(param.device, torch.float32)
            if getattr(self.feature_extractor, "do_normalize", True):
                # The models were trained on zero-mean, unit-variance input (per window).
                mean = x.mean(dim=1, keepdim=True)
                var = x.var(dim=1, keepdim=True, unbiased=False)
                x = (x - mean) / torch.sqrt(var + _WAV2VEC2_NORM_EPS)
            out = self.model(x.to(param.dtype), output_hidden_states=True)
            states = list(out.hidden_states)
        return torch.stack(states, dim=1)

    def _whisper_input(self, waveform: torch.Tensor) -> tuple[torch.Tensor, int]:
        fe = self.feature_extractor
        window = int(self.model_config.max_source_positions) * _WHISPER_MEL_PER_FEATURE
        max_samples = window * fe.hop_length
        if waveform.shape[1] > max_samples:
            raise ValueError(f"whisper encoder takes at most {max_samples} samples per window")
        feats = fe(
            [w.cpu().float().numpy() for w in waveform],
            sampling_rate=fe.sampling_rate,
            return_tensors="pt",
            padding="max_length",
            max_length=max_samples,
        ).input_features
        num = waveform.shape[1] // (fe.hop_length * _WHISPER_MEL_PER_FEATURE)
        return feats[..., :window], num
