"""ddpm_jax against the PyTorch reference (HF diffusers `UNet2DModel`, the DDPM CIFAR-10
architecture), side by side in one process on identical shapes, as JSON lines.

  pip install torch diffusers     # optional; imported only here
  python benchmarks/compare_pytorch.py --train_batches 128,512 --forward_batch 1024 --steps 50

Timed for both frameworks after warm-up over `--steps` steady steps:
  - a training step: ε-loss at uniform t, global-norm clipping to 1, Adam (lr 2e-4), EMA 0.9999,
    bf16 compute with float32 master weights (ours: configs/cifar10_ddpm.py with
    model.dtype=bfloat16; the reference: autocast(bfloat16));
  - the network forward alone (a sampler step) at --forward_batch, without gradients.
The reference runs eager and `torch.compile`, float32 and bf16 autocast; every configuration
prints a line, then one "ratio" line per measurement divides ours by the reference's best.
The parameter counts must agree (checked first). On a CPU use small batches, e.g.
--train_batches 8 --forward_batch 16 --steps 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.configs import cifar10_ddpm  # noqa: E402
from ddpm_jax.config import build
from ddpm_jax.infra import parallel

SHAPE = (32, 32, 3)
REFERENCE_CONFIGS = ("eager_fp32", "eager_bf16", "compile_fp32", "compile_bf16")


def reference_unet():
  """diffusers' UNet2DModel as google/ddpm-cifar10-32 configures it (ch 128, mult 1,2,2,2,
  attention at 16×16, two ResNet blocks per level)."""
  from diffusers import UNet2DModel
  return UNet2DModel(
      sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
      block_out_channels=(128, 256, 256, 256),
      down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
      attention_head_dim=None, norm_eps=1e-6, norm_num_groups=32, downsample_padding=0,
      flip_sin_to_cos=False, freq_shift=1, dropout=0.1)


def _seconds_per_step(fn, steps: int, warmup: int, sync) -> float:
  for _ in range(warmup):
    out = fn()
  sync(out)
  start = time.perf_counter()
  for _ in range(steps):
    out = fn()
  sync(out)
  return (time.perf_counter() - start) / steps


# ----------------------------------------------------------------------------- ours

def _ours_config(dtype: str, batch: int):
  config = cifar10_ddpm.get_config()
  config.model.dtype = dtype
  config.training.batch_size = batch
  return config


def ours_params() -> int:
  config = _ours_config("float32", 1)
  model = build.model(config, SHAPE[-1])
  state = build.train_state(config, model, SHAPE, abstract=True)  # shapes only
  return sum(x.size for x in jax.tree.leaves(state.params))


def ours_train(batch: int, steps: int, warmup: int, dtype: str = "bfloat16") -> float:
  config = _ours_config(dtype, batch)
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = build.model(config, SHAPE[-1])
  state = parallel.replicate(build.train_state(config, model, SHAPE), mesh)
  step = build.train_step(config, model, mesh)
  rng = np.random.default_rng(0)
  data = parallel.shard_batch({"image": rng.uniform(-1, 1, (batch,) + SHAPE).astype(np.float32),
                               "label": np.zeros(batch, np.int32)}, mesh)

  def run():
    nonlocal state
    state, metrics = step(state, data)
    return metrics
  return batch / _seconds_per_step(run, steps, warmup, jax.block_until_ready)


def ours_forward(batch: int, steps: int, warmup: int, dtype: str = "bfloat16") -> float:
  config = _ours_config(dtype, batch)
  model = build.model(config, SHAPE[-1])
  params = build.train_state(config, model, SHAPE).params
  forward = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
  x = jax.random.normal(jax.random.key(0), (batch,) + SHAPE)
  t = jnp.full((batch,), 500.0)
  return batch / _seconds_per_step(lambda: forward(params, x, t), steps, warmup,
                                   jax.block_until_ready)


# ----------------------------------------------------------------------- reference

def _torch_setup(name: str):
  import torch
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = reference_unet().to(device)
  compiled = torch.compile(model) if name.startswith("compile") else model
  bf16 = name.endswith("bf16")
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
  sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
  return torch, device, model, compiled, autocast, sync


def reference_params() -> int:
  return sum(p.numel() for p in reference_unet().parameters())


def reference_train(name: str, batch: int, steps: int, warmup: int) -> float:
  torch, device, model, net, autocast, sync = _torch_setup(name)
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=2e-4)
  ema = [p.detach().clone() for p in model.parameters()]
  alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, device=device), 0)
  x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1

  def run():
    t = torch.randint(0, 1000, (batch,), device=device)
    eps = torch.randn_like(x0)
    a = alpha_bar[t].view(-1, 1, 1, 1)
    with autocast():
      pred = net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).sample
    loss = torch.nn.functional.mse_loss(pred.float(), eps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, list(model.parameters()), 1 - 0.9999)
    return loss
  return batch / _seconds_per_step(run, steps, warmup, sync)


def reference_forward(name: str, batch: int, steps: int, warmup: int) -> float:
  torch, device, model, net, autocast, sync = _torch_setup(name)
  model.eval()
  x = torch.randn(batch, 3, 32, 32, device=device)
  t = torch.full((batch,), 500, device=device)

  def run():
    with torch.inference_mode(), autocast():
      return net(x, t).sample
  return batch / _seconds_per_step(run, steps, warmup, sync)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--train_batches", default="128,512")
  p.add_argument("--forward_batch", type=int, default=1024)
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--reference", default=",".join(REFERENCE_CONFIGS))
  p.add_argument("--ours_dtype", default="bfloat16", choices=("bfloat16", "float32"),
                 help="float32 for a like-for-like CPU comparison (no bf16 fast path there)")
  args = p.parse_args()
  ours_n, theirs_n = ours_params(), reference_params()
  print(json.dumps({"what": "parameters", "ours": ours_n, "reference": theirs_n}), flush=True)
  if ours_n != theirs_n:
    raise SystemExit(f"Parameter counts differ ({ours_n} vs {theirs_n}): not the same network.")
  import torch
  info = {"device": jax.devices()[0].device_kind, "torch": torch.__version__,
          "torch_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
  jobs = [("train", b, ours_train, reference_train)
          for b in (int(v) for v in args.train_batches.split(","))]
  if args.forward_batch:
    jobs.append(("forward", args.forward_batch, ours_forward, reference_forward))
  for what, batch, ours_fn, reference_fn in jobs:
    ours = ours_fn(batch, args.steps, args.warmup, args.ours_dtype)
    config = "jit_" + ("bf16" if args.ours_dtype == "bfloat16" else "fp32")
    print(json.dumps({**info, "what": what, "framework": "ddpm_jax", "config": config,
                      "batch": batch, "img_per_sec": ours}), flush=True)
    best = (None, 0.0)
    for name in args.reference.split(","):
      rate = reference_fn(name, batch, args.steps, args.warmup)
      print(json.dumps({**info, "what": what, "framework": "pytorch", "config": name,
                        "batch": batch, "img_per_sec": rate}), flush=True)
      best = max(best, (name, rate), key=lambda b: b[1])
    print(json.dumps({**info, "what": "ratio", "of": what, "batch": batch, "ours": ours,
                      "reference_best": best[1], "reference_config": best[0],
                      "ratio": ours / best[1]}), flush=True)


if __name__ == "__main__":
  main()
