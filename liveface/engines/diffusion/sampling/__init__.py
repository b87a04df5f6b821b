"""Flow-matching schedules and samplers. Nothing here imports a model.

* :mod:`.flow` - schedules (:class:`~.flow.SamplerConfig`), the update rule, the batch sampler;
* :mod:`.seeded` - the same rule with one noise generator per sample (streaming sessions).
"""
