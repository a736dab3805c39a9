"""NCSN on MNIST 32×32: 10 levels σ 1 → 0.01, annealed Langevin sampling.

  python -m ddpm_jax.main --config configs/mnist_ncsn.py --workdir /tmp/mnist_ncsn \
      --config.data.data_dir=~/tensorflow_datasets
"""

from configs import mnist_ddpm


def get_config():
  config = mnist_ddpm.get_config()
  config.training.objective = "ncsn"
  config.sde.sigma_max = 1.0
  config.sde.sigma_min = 0.01
  config.sde.num_scales = 10
  config.sde.reduce = "sum"
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 0
  config.sampling.method = "ald"
  config.sampling.n_steps_each = 100
  return config
