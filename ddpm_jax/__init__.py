"""ddpm_jax: DDPM, DDIM and score-based diffusion models in JAX/Flax."""

__version__ = "0.1.0"
