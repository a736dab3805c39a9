"""File formats only: published checkpoints (diffusers, score_sde, EDM, guided-diffusion,
NCSNv2; PyTorch's files read as data) ↔ this library's
parameter trees, by name, with plain arguments; no code from a file ever runs. The side that
reads a ConfigDict (which network a config builds) is config/weights.py; from Python, use
`ddpm_jax.Pipeline.load` and `Pipeline.save`."""

from ddpm_jax.interop.tensors import FormatError  # noqa: F401
