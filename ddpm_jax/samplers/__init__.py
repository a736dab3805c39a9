"""Samplers: samplers/table.py lists them, each a loop builder over a process (an SDE or a
discrete chain) run on a Denoiser (core/denoiser.py): table.sample(method, denoiser, key,
shape, **options) -> (samples, info)."""
