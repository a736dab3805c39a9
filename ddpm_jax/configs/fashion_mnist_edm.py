"""EDM preconditioning and loss (Karras et al. 2022) on Fashion-MNIST 32×32 with the small
U-Net of fashion_mnist_ddpm; sampled with EDM's Heun on its σ grid (ρ = 7), 18 steps (36
network evaluations).

  python -m ddpm_jax.main --config configs/fashion_mnist_edm.py --workdir /tmp/fmnist_edm \
      --config.data.data_dir=../shared/tfds_array_record
"""

from ddpm_jax.configs import fashion_mnist_ddpm


def get_config():
  config = fashion_mnist_ddpm.get_config()
  config.training.objective = "edm"
  config.edm.sigma_data = 0.5  # pixels in [−1, 1]
  config.sampling.method = "edm"
  config.sampling.num_steps = 18
  return config
