"""Continuous VP SDE on Fashion-MNIST 32×32 with the small U-Net of fashion_mnist_ddpm;
probability-flow ODE sampling (adaptive Tsit5).

  python -m ddpm_jax.main --config configs/fashion_mnist_vp.py --workdir /tmp/fmnist_vp \
      --config.data.data_dir=../shared/tfds_array_record
"""

from ddpm_jax.configs import fashion_mnist_ddpm


def get_config():
  config = fashion_mnist_ddpm.get_config()
  config.training.objective = "dsm"
  config.sde.name = "vp"
  config.sampling.method = "ode"
  return config
