"""The memory a run needs, estimated before anything is allocated and refused in one line
when it cannot fit: a lower bound (what must be held at once), so that only sizes beyond the
machine are refused, never a run that would have fit.

  - the schedule's host arrays: diffusion.num_timesteps (sde.num_scales) float64 values, kept
    in several arrays and a tuple of Python floats (~256 bytes per step);
  - an in-memory dataset resized once to data.image_size (N × S² × C bytes);
  - per device: the state it holds (the TrainState in training, the parameters otherwise)
    and one batch's input and first feature map at full resolution (kept for the backward
    pass in training);
  - on the host, what a mode gathers from every batch: the samples of --mode sample,
    N × S² × C bytes twice (the batches and their concatenation), and the
    2048 float32 Inception features of each of --mode eval's fid.num_samples.

The limit is config.max_memory GiB where set, else each device's memory (GPU, TPU), else
this host's memory shared by its CPU devices.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from ddpm_jax.evaluation import inception

GIB = 2**30
SCHEDULE_BYTES = 256  # per step: Python floats and float64 arrays (measured ~275 at T = 10^7)
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}  # per value of each compute dtype


def _gib(n: float) -> str:
  return f"{n / GIB:.3g} GiB"


def host_limit(config) -> tuple[float, str]:
  """(bytes, what they are) this host may use."""
  if config.max_memory > 0:
    return config.max_memory * GIB, f"max_memory={config.max_memory:g}"
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this host's memory"


def device_limit(config) -> tuple[float, str, int]:
  """(bytes per device, what they are, how many devices share them)."""
  if config.max_memory > 0:
    return config.max_memory * GIB, f"max_memory={config.max_memory:g}", 1
  stats = jax.local_devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return stats["bytes_limit"], f"the {jax.local_devices()[0].device_kind}'s memory", 1
  total, what = host_limit(config)
  return total, what, jax.local_device_count()  # CPU devices share the host's memory


def _refuse(need: float, limit: tuple, field: str, fix: str) -> None:
  have, what = limit[:2]
  if need > have:
    raise ValueError(f"{field} needs at least {_gib(need)} and {what} is {_gib(have)}; {fix} "
                     f"(or set --config.max_memory in GiB if the limit is wrong).")


def check_schedule(config) -> None:
  """The schedule's arrays (before any is built)."""
  steps = max(config.diffusion.num_timesteps, config.sde.num_scales)
  name = ("diffusion.num_timesteps" if config.diffusion.num_timesteps >= config.sde.num_scales
          else "sde.num_scales")
  _refuse(steps * SCHEDULE_BYTES, host_limit(config), f"{name}={steps}",
          "use fewer steps (the papers use 1000 to 4000)")


def check_dataset(config, num_images: int, channels: int) -> None:
  """An in-memory dataset resized to data.image_size (before it is resized)."""
  size = config.data.image_size
  _refuse(num_images * size * size * channels, host_limit(config),
          f"data.image_size={size} (the {num_images} images of data.dataset "
          f"{config.data.dataset!r} resized in memory)", "lower data.image_size")


def check_devices(config, mode: str, template, shape, batch_field: str | None,
                  batch: int | None) -> None:
  """What each device holds in `mode`: its state and one batch (`batch` examples of the
  global `batch_field`, split over the devices)."""
  leaves = jax.tree.leaves(template if mode == "train" else template.params)
  state = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
  per_device = 0
  if batch:
    b = -(-batch // jax.device_count())
    if mode == "train":
      b = -(-b // config.training.grad_accum_steps)
    size, channels = shape[0], shape[-1]
    width = BYTES[config.model.dtype]
    per_device = b * size * size * (channels * 4 + config.model.ch * width * (
        2 if mode == "train" else 1))
  have, what, sharing = device_limit(config)
  field = f"{batch_field}={batch}" if batch_field else "the network"
  _refuse((state + per_device) * sharing, (have, what),
          f"{field} with data.image_size={shape[0]} and model.ch={config.model.ch} "
          f"({_gib(state)} of state and {_gib(per_device)} of one batch per device, "
          f"{sharing} device(s))", "lower the batch size, the image size or the network")


FEATURE_BYTES = inception.FEATURES * 4  # one Inception pool3 feature vector (float32)


def check_gathered(config, mode: str, shape) -> None:
  """What `mode` gathers on the host from all its batches (before sampling starts)."""
  if mode == "sample":
    n = config.sampling.num_samples
    _refuse(2 * n * int(np.prod(shape)), host_limit(config),
            f"sampling.num_samples={n} of {shape[0]}×{shape[1]}×{shape[2]} images (gathered "
            f"into one .npz)", "sample fewer, in several runs with other sampling.seed values")
  elif mode == "eval":
    n = config.fid.num_samples
    _refuse(n * FEATURE_BYTES, host_limit(config),
            f"fid.num_samples={n} (2048 Inception features each)", "use fewer samples, e.g. "
            "50000 as the papers do")
