"""Speech in: encoders loaded through ``transformers`` (:mod:`.encoder`) and the per-chunk
conditioner that turns a chunk's audio window into audio tokens (:mod:`.conditioner`)."""
