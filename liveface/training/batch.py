"""Training samples: which chunk of which clip, in which order, and their tensors.

A *sample* is one engine chunk: ``K`` new latent frames of a clip starting at latent ``first``,
with everything the engine conditions that chunk on: the clip's reference latent, the motion
history (the ``H`` latent frames before ``first``; slots before the clip's start hold the
reference, as the engine's motion cache does after it is reset), the audio the adapter reads for
the chunk, and the prompt.

Order (:class:`SampleOrder`): every possible sample of the training clips, shuffled per epoch
from the run's seed; step ``s`` takes global samples ``[s B, (s + 1) B)`` and process ``r`` of
``n`` the ``r``-th ``B / n`` of them. Each sample's randomness (noise, noise level, dropout) comes
from a generator seeded by the run's seed and the sample's global index, so a result does not
depend on how many processes share a batch, and resuming needs only the step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from liveface.engines.diffusion.sampling.flow import shift_sigmas
from liveface.errors import ConfigError
from liveface.training.data.audio import AudioTimeline, timeline_slice
from liveface.training.data.shards import ShardDataset

#: Mixes the run seed and a sample's global index into the sample's seed.
_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class SampleRef:
    """Dataset ``dataset``, clip ``clip``, chunk of latent frames starting at ``first``."""

    dataset: int
    clip: int
    first: int


class SampleOrder:
    """The deterministic order of samples over epochs (see the module docstring)."""

    def __init__(self, datasets: list[ShardDataset], chunk_latents: int, seed: int) -> None:
        self.seed = seed
        self.refs: list[SampleRef] = []
        start = 0 if chunk_latents == 1 else 1  # the first chunk is one latent frame
        for d, ds in enumerate(datasets):
            for c in ds.training_clips():
                t = ds.clips[c].latents
                self.refs.extend(SampleRef(d, c, f) for f in range(start, t - chunk_latents + 1))
        if not self.refs:
            raise ConfigError(
                f"the dataset holds no training clip of at least {chunk_latents + start} latent "
                "frames (held-out clips are not trained on)"
            )
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.refs)

    def ref(self, index: int) -> SampleRef:
        """The sample at global position ``index``."""
        epoch, pos = divmod(index, len(self.refs))
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
            self._perms = {epoch: torch.randperm(len(self.refs), generator=g)}
        return self.refs[int(self._perms[epoch][pos])]

    def local_indices(self, step: int, batch: int, rank: int, world: int) -> list[int]:
        """Global indices of process ``rank``'s share of step ``step``."""
        per = batch // world
        return [step * batch + rank * per + i for i in range(per)]


@dataclass
class Batch:
    """Tensors of a batch of samples (``B`` samples, ``K`` new and ``H`` history latent frames).

    Attributes:
        target: float32 ``(B, C, K, h, w)`` clean latents of the new frames.
        history: ``(B, C, H, h, w)`` the motion history, oldest first.
        reference: ``(B, C, 1, h, w)``.
        audio: ``(B, layers, features, dim)`` speech states the adapter reads for the chunk.
        noise: float32 ``(B, C, K, h, w)``.
        sigma: float32 ``(B,)`` noise levels in (0, 1].
        u: float32 ``(B,)`` uniform draws (distillation picks its teacher step from them).
        audio_keep, text_keep: float32 ``(B,)``, 0 where the condition is dropped.
        text: ``(B, text_len, text_dim)`` zero-padded prompt embeddings (all zero when dropped).
        index: int64 ``(B,)`` global sample indices.
    """

    target: torch.Tensor
    history: torch.Tensor
    reference: torch.Tensor
    audio: torch.Tensor
    noise: torch.Tensor
    sigma: torch.Tensor
    u: torch.Tensor
    audio_keep: torch.Tensor
    text_keep: torch.Tensor
    text: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def size(self) -> int:
        return self.target.shape[0]


class SampleLoader:
    """Reads samples from the datasets and draws their randomness.

    Args:
        datasets: the prepared datasets (same preparation settings).
        history: latent frames of motion history (the engine's ``MotionConfig.frames``).
        chunk_latents: ``K``.
        text_len: the DiT's prompt length (embeddings are zero-padded to it).
        config: ``shift``, ``audio_dropout``, ``text_dropout`` and ``seed`` are read from it.
    """

    def __init__(
        self,
        datasets: list[ShardDataset],
        history: int,
        chunk_latents: int,
        text_len: int,
        config: Any,
    ) -> None:
        self.datasets = datasets
        self.history = history
        self.k = chunk_latents
        self.text_len = text_len
        self.config = config
        first = datasets[0].config
        for ds in datasets[1:]:
            if ds.config != first:
                raise ConfigError(
                    f"{ds.root} was prepared with other settings than {datasets[0].root}"
                )
        self.timeline = AudioTimeline(**first["timeline"])
        prep = first["prepare"]
        self.exact = prep.get("audio", "exact") == "exact"
        if self.exact and prep["chunk_latents"] != chunk_latents:
            raise ConfigError(
                f"the dataset's audio windows are the engine's for chunks of "
                f"{prep['chunk_latents']} latent frame(s); train with chunk_latents = "
                f"{prep['chunk_latents']} or prepare again with chunk_latents = {chunk_latents}"
            )
        self.prompts = [ds.prompts() for ds in datasets]
        silence = datasets[0].silence()
        if chunk_latents not in silence:
            raise ConfigError(
                f"the dataset has silence states for chunks of up to {max(silence)} latent "
                f"frames; prepare it with max_chunk_latents >= {chunk_latents}"
            )
        self.silence = silence[chunk_latents].float()

    def sample_generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed * _SEED_STRIDE + index + 1)

    def load(self, ref: SampleRef) -> dict[str, torch.Tensor]:
        """One sample's data tensors (no randomness)."""
        ds, t, k, h = self.datasets[ref.dataset], self.timeline, self.k, self.history
        lo = max(0, ref.first - h)
        latents = ds.tensor(ref.clip, "latents", (slice(None), slice(lo, ref.first + k))).float()
        reference = ds.tensor(ref.clip, "reference").float()
        past = latents[:, : ref.first - lo]
        missing = h - past.shape[1]
        history = torch.cat([reference.expand(-1, missing, -1, -1), past], dim=1)
        frames = ds.clips[ref.clip].frames
        a, b = max(0, t.anchor(ref.first)), min(frames, t.anchor(ref.first + k))
        voiced = bool(ds.tensor(ref.clip, "voiced", (slice(a, b),)).any())
        if voiced and self.exact:
            audio = ds.tensor(ref.clip, "audio", (slice(ref.first, ref.first + 1),))[0].float()
        elif voiced:
            start, length = t.chunk_slice(ref.first, k)
            states = ds.tensor(ref.clip, "audio", (slice(None), slice(start, start + length)))
            audio = timeline_slice(states.float(), 0, length)
        else:  # the engine conditions unvoiced chunks on digital silence
            audio = self.silence
        emb = self.prompts[ref.dataset][ds.clips[ref.clip].prompt].float()
        text = torch.zeros(self.text_len, emb.shape[1])
        text[: min(emb.shape[0], self.text_len)] = emb[: self.text_len]
        return {
            "target": latents[:, ref.first - lo :],
            "history": history,
            "reference": reference,
            "audio": audio,
            "text": text,
        }

    def batch(self, order: SampleOrder, indices: list[int]) -> Batch:
        """The samples at global positions ``indices``, with their per-sample randomness."""
        c = self.config
        items = [self.load(order.ref(i)) for i in indices]
        noise, u, audio_keep, text_keep = [], [], [], []
        for i, item in zip(indices, items, strict=True):
            g = self.sample_generator(i)
            u.append(1.0 - torch.rand((), generator=g))  # (0, 1]
            noise.append(torch.randn(item["target"].shape, generator=g))
            audio_keep.append((torch.rand((), generator=g) >= c.audio_dropout).float())
            text_keep.append((torch.rand((), generator=g) >= c.text_dropout).float())
        stacked = {key: torch.stack([it[key] for it in items]) for key in items[0]}
        text_k = torch.stack(text_keep)
        u_t = torch.stack(u).float()
        return Batch(
            target=stacked["target"],
            history=stacked["history"],
            reference=stacked["reference"],
            audio=stacked["audio"],
            noise=torch.stack(noise),
            sigma=shift_sigmas(u_t, c.shift),  # the sampler's timestep shift
            u=u_t,
            audio_keep=torch.stack(audio_keep),
            text_keep=text_k,
            text=stacked["text"] * text_k[:, None, None],
            index=torch.tensor(indices, dtype=torch.int64),
        )
