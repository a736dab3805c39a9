"""NCSN on CIFAR-10 (Song & Ermon 2019): L = 10 geometric levels σ 1 → 0.01, DSM with
λ(σ) = σ² summed over pixels, annealed Langevin sampling with ε = 2e-5 and 100 steps per
level. The network is the DDPM U-Net conditioned on log σ (Fourier features).

  python -m ddpm_jax.main --config configs/cifar10_ncsn.py --workdir /tmp/cifar10_ncsn \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpm


def get_config():
  return ncsn(cifar10_ddpm.get_config())


def ncsn(config):
  """The NCSN objective and sampler on top of any DDPM config."""
  config.training.objective = "ncsn"
  config.sde.sigma_max = 1.0
  config.sde.sigma_min = 0.01
  config.sde.num_scales = 10
  config.sde.reduce = "sum"
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 0
  config.training.ema_decay = 0.999
  config.sampling.method = "ald"
  config.sampling.step_lr = 2e-5
  config.sampling.n_steps_each = 100
  return config
