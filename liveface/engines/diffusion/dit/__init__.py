"""The Wan diffusion transformer and its plug-ins.

* :mod:`.model` - :class:`~.model.WanDiT`, key-compatible with the official Wan2.2 checkpoints;
  :mod:`.blocks`, :mod:`.attention`, :mod:`.rope` its parts, :mod:`.config` its frozen config;
* :mod:`.kv_cache` - per-block key/value prefixes of clean conditioning tokens;
* :mod:`.audio_injection` - the interface any audio conditioning implements;
* :mod:`.audio_adapter` (+ :mod:`.audio_projector`, :mod:`.audio_config`) - the Soul-style audio
  adapter: causal front end and per-block audio cross-attention;
* :mod:`.face_routing` - AnyAvatar's face-masked audio routing: several characters, each one's
  audio tokens reaching only the tokens inside its face mask;
* :mod:`.s2v` - Wan-S2V (Wan2.2-S2V-14B): the DiT with its causal audio encoder, audio injector,
  FramePack motioner, pose encoder and condition mask, key-compatible with the official checkpoint.
"""
