"""`--mode export --export_to=FORMAT:PATH`: the workdir's newest checkpoint (its EMA weights
unless sampling.use_ema is False) in a format other libraries read: a diffusers pipeline
folder (DDPMPipeline / UNet2DModel.from_pretrained; the DDPM U-Net) or an EDM state dict
(.npz; EDM's network.model.load_state_dict; SongUNet and DhariwalUNet).
"""

from __future__ import annotations

import jax

from ddpm_jax.config import weights
from ddpm_jax.infra import parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs
from ddpm_jax.training import checkpoint


def export_weights(config, workdir: str, overrides=None, *, target: str) -> str:
  """Writes the newest checkpoint's parameters to `target`; returns its path."""
  weights.check_export(config, target)  # before anything is read
  run, params, step = runs.load_run(config, workdir, "export", overrides, ("sampling.use_ema",))
  params = jax.tree.map(checkpoint.host_copy, params)
  path = weights.export(config, params, target, run.shape[-1]) if parallel.is_main_process() \
      else weights.parse_source(target, weights.EXPORTS)[1]
  log(f"Exported step {step} ({'EMA' if config.sampling.use_ema else 'raw'} weights) to {path}")
  return path
