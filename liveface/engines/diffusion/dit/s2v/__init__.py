"""Wan-S2V (speech-to-video) on the Wan DiT: config, plug-ins and the model.

* :mod:`.config` - :class:`~.config.S2VConfig` (official ``config.json`` dialect, presets);
* :mod:`.audio_encoder` - ``casual_audio_encoder``: layer mix + causal Conv1d stack;
* :mod:`.injector` - ``audio_injector``: per-frame audio attention with AdaLN after listed blocks;
* :mod:`.frame_packer` - ``frame_packer``: FramePack motion tokens and the S2V RoPE positions;
* :mod:`.model` - :class:`~.model.WanS2VDiT`, a :class:`~..model.WanDiT` with those parts.
"""
