"""Streaming generation, chunk by chunk, with state of constant size per session.

* :mod:`.config` - :class:`~.config.GenerationConfig` (chunk schedule, motion, codebook, sampler);
* :mod:`.state` - per-session state and the chunk plan;
* :mod:`.generation` - one batch step: audio tokens, conditioning prefix, denoise, decode;
* :mod:`.motion` - the FramePack-style motion-frame cache;
* :mod:`.codebook` - Soul's threshold-aware codebook drift correction.
"""
