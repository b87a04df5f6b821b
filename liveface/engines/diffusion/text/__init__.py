"""Prompt embeddings: precomputed or umT5 (:mod:`.encoders`), looked up per session
(:mod:`.prompts`)."""
