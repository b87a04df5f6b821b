"""Weights from local paths: files and shards (:mod:`.files`), DiT layouts (:mod:`.dit`), the
engine's checkpoint directory (:mod:`.bundle`) and loading it into models (:mod:`.loading`)."""
