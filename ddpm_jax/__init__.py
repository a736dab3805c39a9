"""ddpm_jax: DDPM, DDIM, score-based, EDM and flow-matching models in JAX/Flax.

The public Python API, the same product as the command line (`python -m ddpm_jax.main`):

  import ddpm_jax as dj
  config = dj.configs.get("demo")                    # dj.configs.names(): the shipped configs
  pipe = dj.Pipeline.from_config(config)             # init, train_step, sample, edit, save, …
  pipe = dj.Pipeline.load("runs/demo")               # a workdir, or diffusers:/edm:/score_sde:
  images, nfe = pipe.sample(16, jax.random.key(0), method="ddim", num_steps=50)
  d = dj.Denoiser.from_fn(my_net, dj.sde.VPSDE(), predicts="eps", noise_input="t")
  x, nfe = dj.sample("dpm_solver", d, jax.random.key(0), (64, 2), num_steps=20)
  v = dj.Denoiser.from_fn(my_velocity_net, dj.paths.LinearPath(), predicts="velocity")
  x, nfe = dj.sample("flow_euler", v, jax.random.key(0), (64, 2), num_steps=50)

The names are imported when first used, so that the command line starts (and installs its
signal handlers) before JAX is imported.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["configs", "sde", "paths", "Denoiser", "Pipeline", "sample"]
_WHERE = {"configs": ("ddpm_jax.configs", None), "sde": ("ddpm_jax.core.sde", None),
          "paths": ("ddpm_jax.core.paths", None),
          "Denoiser": ("ddpm_jax.core.denoiser", "Denoiser"),
          "Pipeline": ("ddpm_jax.pipeline", "Pipeline"), "sample": ("ddpm_jax.pipeline", "sample")}


def __getattr__(name: str):
  if name not in _WHERE:
    raise AttributeError(f"module 'ddpm_jax' has no attribute {name!r}; the API is {__all__}")
  module, attribute = _WHERE[name]
  value = importlib.import_module(module)
  return value if attribute is None else getattr(value, attribute)


def __dir__():
  return sorted([*globals(), *__all__])
