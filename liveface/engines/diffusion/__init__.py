"""The diffusion engine family (Soul / Wan-S2V / AnyAvatar).

DiT, audio conditioning, VAEs, sampler.
"""
