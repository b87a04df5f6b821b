"""Training the diffusion engine's models: the Soul recipe on a Wan2.2 DiT.

One command line, ``python -m liveface.training`` (:mod:`.cli`), with five steps:

1. ``prepare`` (:mod:`.data`): a folder of talking videos -> clips cut at scene cuts and
   silences, face-cropped, resampled to the model's frame rate -> cached VAE latents, speech
   encoder hidden states (all layers) and text embeddings, in safetensors shards;
2. ``train`` (:mod:`.trainer`): the audio adapter (optionally LoRA on the DiT, or the whole DiT)
   on a frozen base with the flow-matching loss and the engine's own per-chunk conditioning
   (:mod:`.conditioning`), under ``torchrun`` + DDP, resumable, with TensorBoard logs and sample
   videos;
3. ``distill`` (:mod:`.distill`): consistency distillation of the guided many-step teacher into a
   4-step student without guidance;
4. ``codebook`` (:mod:`.codebook`): the offline k-means drift-correction codebook;
5. ``export`` (:mod:`.export`): a checkpoint directory the engine loads as it is.

This package imports the model code (``liveface.engines.diffusion``) and the media stages
(``liveface.pipeline``), never the runtime. Nothing here runs at import time.
"""
